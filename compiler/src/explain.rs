//! One request, decided and explained: the request a user describes on the
//! command line (or a case describes), the decision of the one evaluator, and
//! the words and JSON that say why.

use meshfence_ruleset::eval::{Cause, Decision, RuleRef, Workload};
use meshfence_ruleset::ir::Ruleset;
use meshfence_ruleset::request::{parse_ip, HeaderList, Request};
use serde_json::{json, Value as Json};

/// A request as a user writes it (all strings, defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// The client's URI SAN; `None` for a plaintext request.
    pub from: Option<String>,
    pub method: String,
    pub path: String,
    pub host: String,
    pub port: u16,
    pub headers: Vec<(String, String)>,
    pub source_ip: Option<String>,
    pub remote_ip: Option<String>,
    pub destination_ip: Option<String>,
    pub sni: Option<String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            from: None,
            method: "GET".into(),
            path: "/".into(),
            host: "example.com".into(),
            port: 8080,
            headers: Vec::new(),
            source_ip: Some("127.0.0.1".into()),
            remote_ip: None,
            destination_ip: Some("127.0.0.1".into()),
            sni: None,
        }
    }
}

/// A workload: namespace and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadSpec {
    pub namespace: String,
    pub labels: Vec<(String, String)>,
}

impl WorkloadSpec {
    /// Parses `NS[,key=value...]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let namespace = parts.next().unwrap_or_default().trim().to_string();
        if namespace.is_empty() {
            return Err(format!("--workload `{s}`: the namespace is missing"));
        }
        let mut labels = Vec::new();
        for p in parts {
            match p.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    labels.push((k.trim().to_string(), v.trim().to_string()))
                }
                _ => return Err(format!("--workload `{s}`: `{p}` is not key=value")),
            }
        }
        Ok(WorkloadSpec { namespace, labels })
    }
}

/// An IP address option, checked.
pub fn check_ip(what: &str, ip: &Option<String>) -> Result<(), String> {
    match ip {
        Some(s) if parse_ip(s).is_none() => Err(format!("{what} `{s}` is not an IP address")),
        _ => Ok(()),
    }
}

/// Decides `spec` for `workload` and hands the decision (and the request it
/// read) to `f`.
pub fn decide_with<T>(
    ruleset: &Ruleset,
    workload: &WorkloadSpec,
    spec: &RequestSpec,
    f: impl FnOnce(&Decision<'_>) -> T,
) -> T {
    let labels: Vec<(&str, &str)> = workload
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let wl = Workload {
        namespace: &workload.namespace,
        labels: &labels,
    };
    let wp = ruleset.for_workload(&wl);
    let headers: Vec<(&str, &str)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let list = HeaderList(&headers);
    let req = Request {
        peer_uri: spec.from.as_deref(),
        method: &spec.method,
        path: &spec.path,
        host: &spec.host,
        destination_port: spec.port,
        source_ip: spec.source_ip.as_deref().and_then(parse_ip),
        remote_ip: spec.remote_ip.as_deref().and_then(parse_ip),
        destination_ip: spec.destination_ip.as_deref().and_then(parse_ip),
        sni: spec.sni.as_deref(),
        headers: &list,
    };
    let d = wp.decide(&req);
    f(&d)
}

/// `namespace/name` of a rule's policy.
pub fn policy_id(ruleset: &Ruleset, at: RuleRef) -> String {
    ruleset
        .policies
        .get(at.policy as usize)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .unwrap_or_else(|| format!("#{}", at.policy))
}

/// `policy ns/name rule N`.
pub fn describe_rule(ruleset: &Ruleset, at: RuleRef) -> String {
    format!("policy {} rule {}", policy_id(ruleset, at), at.rule)
}

/// Why: the deciding rule or the reason there is none.
pub fn describe_cause(ruleset: &Ruleset, cause: &Cause) -> String {
    match cause {
        Cause::DeniedBy(at) | Cause::AllowedBy(at) => describe_rule(ruleset, *at),
        Cause::NoAllowPolicy => "no ALLOW policy applies".into(),
        Cause::NoAllowMatched => "no ALLOW rule matched".into(),
        Cause::PathRefused(p) => format!("path refused: {}", p.as_str()),
        Cause::SpoofedIdentity => "spoofed identity header".into(),
    }
}

fn rule_json(ruleset: &Ruleset, at: Option<RuleRef>) -> Json {
    match at {
        Some(at) => json!({"policy": policy_id(ruleset, at), "rule": at.rule}),
        None => Json::Null,
    }
}

/// The explanation as JSON (the `-o json` of `meshfence explain`).
pub fn to_json(ruleset: &Ruleset, d: &Decision<'_>) -> Json {
    let deciding = match d.cause {
        Cause::DeniedBy(at) | Cause::AllowedBy(at) => Some(at),
        _ => None,
    };
    let mesh = &ruleset.mesh;
    json!({
        "decision": if d.allowed { "allow" } else { "deny" },
        "allowed": d.allowed,
        "status": if d.allowed { Json::Null } else { json!(d.deny_status(mesh)) },
        "cause": describe_cause(ruleset, &d.cause),
        "policy": deciding.map(|at| policy_id(ruleset, at)),
        "rule": deciding.map(|at| at.rule),
        "audit": rule_json(ruleset, d.audit),
        "dryRun": {
            "wouldDeny": d.dry_run.would_deny(),
            "deny": rule_json(ruleset, d.dry_run.deny),
            "allow": match d.dry_run.allow {
                None => Json::Null,
                Some(m) => json!({"matched": rule_json(ruleset, m)}),
            },
        },
        "identity": {
            "header": mesh.identity_header.name,
            "stripIncoming": d.identity.rewrite.strip,
            "set": d.identity.rewrite.set,
            "value": d.identity.value,
            "strippedIncoming": d.identity.stripped_incoming,
        },
    })
}

/// The explanation as text (the default of `meshfence explain`).
pub fn to_text(ruleset: &Ruleset, d: &Decision<'_>) -> String {
    let mesh = &ruleset.mesh;
    let mut s = String::new();
    if d.allowed {
        s.push_str("decision: allow\n");
    } else {
        s.push_str(&format!("decision: deny ({})\n", d.deny_status(mesh)));
    }
    s.push_str(&format!("by: {}\n", describe_cause(ruleset, &d.cause)));
    match d.audit {
        Some(at) => s.push_str(&format!("audit: yes ({})\n", describe_rule(ruleset, at))),
        None => s.push_str("audit: no\n"),
    }
    if d.dry_run.deny.is_some() || d.dry_run.allow.is_some() {
        let why = match (d.dry_run.deny, d.dry_run.allow) {
            (Some(at), _) => format!("dry-run DENY matched: {}", describe_rule(ruleset, at)),
            (None, Some(Some(at))) => {
                format!("dry-run ALLOW matched: {}", describe_rule(ruleset, at))
            }
            (None, Some(None)) => "no dry-run ALLOW rule matched".into(),
            (None, None) => String::new(),
        };
        let verdict = if d.dry_run.would_deny() {
            "would deny"
        } else {
            "would allow"
        };
        s.push_str(&format!("dry-run: {verdict} ({why})\n"));
    } else {
        s.push_str("dry-run: none\n");
    }
    let h = &mesh.identity_header.name;
    let rw = d.identity.rewrite;
    let action = match (rw.strip, rw.set) {
        (false, None) => "unchanged".to_string(),
        (true, None) => "strip incoming copies".to_string(),
        (false, Some(v)) => format!("set to {v}"),
        (true, Some(v)) => format!("strip incoming copies, set to {v}"),
    };
    s.push_str(&format!("identity header {h}: {action}\n"));
    s
}
