//! What an encoded ruleset holds: its layout (header, sections, sizes) from
//! the format's own reader, and its policies and rules in readable form.

use meshfence_ruleset::format::{self, Layout};
use meshfence_ruleset::ir::{
    Action, Attribute, Cidr, Clause, IdentityValue, PathPolicy, PatternPiece, Policy, Rule,
    Ruleset, SpoofPolicy, StrMatch, StrMatchKind, ValueMatch,
};
use serde_json::{json, Value as Json};

/// Reads a ruleset from raw bytes or from base64 text.
pub fn read_ruleset_bytes(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.starts_with(&format::LABEL) {
        return Some(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()?;
    decoded.starts_with(&format::LABEL).then_some(decoded)
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
    }
}

fn attribute_name(a: &Attribute) -> String {
    match a {
        Attribute::PeerUri => "peer-uri".into(),
        Attribute::SourceIp => "source-ip".into(),
        Attribute::RemoteIp => "remote-ip".into(),
        Attribute::DestinationIp => "destination-ip".into(),
        Attribute::DestinationPort => "destination-port".into(),
        Attribute::Sni => "sni".into(),
        Attribute::Host => "host".into(),
        Attribute::Method => "method".into(),
        Attribute::Path => "path".into(),
        Attribute::Header(h) => format!("header[{h}]"),
        Attribute::RequestAuth(k) => format!("request-auth[{k}]"),
    }
}

fn pattern_text(pieces: &[PatternPiece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            PatternPiece::Literal(l) => l.clone(),
            PatternPiece::AnyRun => "{.*}".into(),
            PatternPiece::AnyNonEmptyRun => "{.+}".into(),
            PatternPiece::SegmentRun => "{[^/]*}".into(),
        })
        .collect()
}

fn str_match_text(m: &StrMatch) -> String {
    let s = match &m.kind {
        StrMatchKind::Exact(s) => format!("exact {s:?}"),
        StrMatchKind::Prefix(s) => format!("prefix {s:?}"),
        StrMatchKind::Suffix(s) => format!("suffix {s:?}"),
        StrMatchKind::Contains(s) => format!("contains {s:?}"),
        StrMatchKind::Present => "present".into(),
        StrMatchKind::Pattern(p) => format!("pattern {:?}", pattern_text(p)),
    };
    if m.ignore_case {
        format!("{s} (any case)")
    } else {
        s
    }
}

fn cidr_text(c: &Cidr) -> String {
    let v6 = std::net::Ipv6Addr::from(c.address);
    match v6.to_ipv4_mapped() {
        Some(v4) if c.prefix_len >= 96 => format!("{v4}/{}", c.prefix_len - 96),
        _ => format!("{v6}/{}", c.prefix_len),
    }
}

/// One value, readable.
pub fn value_text(v: &ValueMatch) -> String {
    match v {
        ValueMatch::Str(m) => str_match_text(m),
        ValueMatch::ServiceAccount { namespace, name } => {
            format!("service-account {namespace}/{name}")
        }
        ValueMatch::Cidr(c) => format!("cidr {}", cidr_text(c)),
        ValueMatch::Port(p) => format!("port {p}"),
        ValueMatch::PathTemplate(t) => format!("template {t:?}"),
    }
}

/// One clause, readable: `peer-uri in [exact "spiffe://a"]`.
pub fn clause_text(c: &Clause) -> String {
    let values: Vec<String> = c.values.iter().map(value_text).collect();
    format!(
        "{}{} {} [{}]",
        if c.negated { "not " } else { "" },
        attribute_name(&c.attribute),
        "in",
        values.join(", ")
    )
}

fn conj_text(c: &[Clause]) -> String {
    if c.is_empty() {
        "any".into()
    } else {
        c.iter().map(clause_text).collect::<Vec<_>>().join(" and ")
    }
}

fn rule_lines(rule: &Rule) -> Vec<String> {
    let mut out = Vec::new();
    if rule.from.is_empty() && rule.to.is_empty() && rule.when.is_empty() {
        out.push("always matches".into());
    }
    for f in &rule.from {
        out.push(format!("from: {}", conj_text(f)));
    }
    for t in &rule.to {
        out.push(format!("to:   {}", conj_text(t)));
    }
    if !rule.when.is_empty() {
        out.push(format!("when: {}", conj_text(&rule.when)));
    }
    out
}

fn policy_header(p: &Policy) -> String {
    let sel = if p.selector.is_empty() {
        "all workloads".to_string()
    } else {
        p.selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "policy {}/{} {}{} selector: {} ({} rule{})",
        p.namespace,
        p.name,
        action_name(p.action),
        if p.dry_run { " dry-run" } else { "" },
        sel,
        p.rules.len(),
        if p.rules.len() == 1 { "" } else { "s" }
    )
}

/// The policies and rules of a ruleset as text.
pub fn policies_text(rs: &Ruleset) -> String {
    let mut s = String::new();
    for p in &rs.policies {
        s.push_str(&policy_header(p));
        s.push('\n');
        if p.rules.is_empty() && p.action == Action::Allow {
            s.push_str("  (no rules: matches nothing)\n");
        }
        for (i, r) in p.rules.iter().enumerate() {
            s.push_str(&format!("  rule {i}:\n"));
            for l in rule_lines(r) {
                s.push_str(&format!("    {l}\n"));
            }
        }
    }
    s
}

fn mesh_json(rs: &Ruleset) -> Json {
    let m = &rs.mesh;
    json!({
        "trustDomain": m.trust_domain,
        "trustDomainAliases": m.trust_domain_aliases,
        "rootNamespace": m.root_namespace,
        "identityHeader": {"name": m.identity_header.name, "value": match m.identity_header.value {
            IdentityValue::Spiffe => "spiffe", IdentityValue::Principal => "principal", IdentityValue::Off => "off" }},
        "trustedForwarders": m.trusted_forwarders,
        "spoofedIdentity": match m.spoofed_identity { SpoofPolicy::Strip => "strip", SpoofPolicy::Deny => "deny" },
        "pathPolicy": match m.path_policy { PathPolicy::Strict => "strict", PathPolicy::Istio => "istio" },
        "denyStatus": m.deny_status,
        "denyBody": m.deny_body,
    })
}

/// `meshfence inspect -o json`.
pub fn to_json(layout: &Layout, rs: &Ruleset) -> Json {
    json!({
        "version": layout.version,
        "totalBytes": layout.total_len,
        "checksum": format!("{:08x}", layout.checksum),
        "headerBytes": layout.header_len,
        "paddingBytes": layout.padding(),
        "sections": layout.sections.iter().map(|s| json!({
            "name": s.name(), "offset": s.offset, "bytes": s.len, "records": s.records,
        })).collect::<Vec<_>>(),
        "mesh": mesh_json(rs),
        "policies": rs.policies.iter().map(|p| json!({
            "namespace": p.namespace,
            "name": p.name,
            "action": action_name(p.action),
            "dryRun": p.dry_run,
            "selector": p.selector.iter().map(|(k, v)| (k.clone(), Json::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "rules": p.rules.iter().map(|r| Json::from(rule_lines(r))).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// `meshfence inspect` (text).
pub fn to_text(layout: &Layout, rs: &Ruleset) -> String {
    let mut s = format!(
        "ruleset v{}: {} bytes (header {}, padding {}), checksum {:08x}\n",
        layout.version,
        layout.total_len,
        layout.header_len,
        layout.padding(),
        layout.checksum
    );
    s.push_str("sections:\n");
    for sec in &layout.sections {
        s.push_str(&format!(
            "  {:<13} offset {:>7}  {:>8} bytes  {:>6} records\n",
            sec.name(),
            sec.offset,
            sec.len,
            sec.records
        ));
    }
    let m = &rs.mesh;
    s.push_str(&format!(
        "mesh: trust domain {} (aliases: {}), root namespace {}, identity header {} ({}), path policy {}\n",
        m.trust_domain,
        if m.trust_domain_aliases.is_empty() { "none".to_string() } else { m.trust_domain_aliases.join(", ") },
        m.root_namespace,
        m.identity_header.name,
        mesh_json(rs)["identityHeader"]["value"].as_str().unwrap_or_default(),
        mesh_json(rs)["pathPolicy"].as_str().unwrap_or_default(),
    ));
    s.push_str(&format!("{} policies\n", rs.policies.len()));
    s.push_str(&policies_text(rs));
    s
}
