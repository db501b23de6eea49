//! Istio `AuthorizationPolicy` (security.istio.io/v1 and v1beta1) → IR.
//!
//! Validation follows what Istio refuses (the CRD's schema and CEL rules and
//! istiod's webhook checks), plus what meshfence refuses on purpose: JWT fields,
//! CUSTOM policies and condition keys it cannot evaluate (fail closed).
//! Lowering follows istiod's RBAC generator field by field (see the golden
//! `*-out.yaml` files in Istio's builder testdata): each field becomes one
//! [`Clause`], each `notX` field a negated one, and principals go through
//! trust-domain alias expansion exactly as istiod's bundle does it.

use meshfence_ruleset::ir::{
    Action, Attribute, Cidr, Clause, Conjunction, MeshSettings, PatternPiece, Policy, Rule,
    StrMatch, ValueMatch,
};

use crate::diagnostics::{Location, Note};
use crate::mesh::RequestAuthentication;
use crate::source::{index, join, Fields, Node, Reader, Value};

/// How the compiler treats policies it will not enforce.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip CUSTOM (ext_authz) policies with a note instead of refusing them.
    pub skip_custom: bool,
    /// What JWT fields mean (mesh setting `requestAuthentication`).
    pub request_authentication: RequestAuthentication,
}

/// The API groups/versions we read.
pub const API_VERSIONS: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];

/// Where the policy under construction came from, for messages.
struct Ctx<'a> {
    mesh: &'a MeshSettings,
    request_authentication: RequestAuthentication,
    /// `namespace/name`.
    id: String,
    namespace: String,
}

/// Lowers one `AuthorizationPolicy` document. Errors go to `r`; a policy that
/// does not apply to sidecars (or a skipped CUSTOM one) yields a note instead.
pub fn lower(
    root: &Node,
    mesh: &MeshSettings,
    opts: Options,
    r: &mut Reader,
    notes: &mut Vec<Note>,
) -> Option<Policy> {
    let top = r.fields(
        root,
        "",
        &["apiVersion", "kind", "metadata", "spec", "status"],
    )?;
    let (name, namespace, dry_run) = metadata(r, &top)?;
    let ctx = Ctx {
        mesh,
        request_authentication: opts.request_authentication,
        id: format!("{namespace}/{name}"),
        namespace: namespace.clone(),
    };
    let empty = Node {
        value: Value::Null,
        at: root.at.clone(),
    };
    let spec_node = top.get("spec").unwrap_or(&empty);
    let spec = r.fields(
        spec_node,
        "spec",
        &[
            "selector",
            "targetRef",
            "targetRefs",
            "action",
            "provider",
            "rules",
        ],
    )?;

    let action_node = spec.get("action");
    let action = match action_node {
        None => Some(ActionName::Allow),
        Some(n) if n.is_null() => Some(ActionName::Allow),
        Some(n) => match r.string(n, "spec.action").as_deref() {
            Some("ALLOW") => Some(ActionName::Allow),
            Some("DENY") => Some(ActionName::Deny),
            Some("AUDIT") => Some(ActionName::Audit),
            Some("CUSTOM") => Some(ActionName::Custom),
            Some(other) => {
                r.error(
                    &n.at,
                    "spec.action",
                    format!("`{other}` is not one of ALLOW, DENY, AUDIT, CUSTOM"),
                );
                None
            }
            None => None,
        },
    };

    let has_selector = spec.has("selector");
    let has_target = spec.has("targetRef") || spec.has("targetRefs");
    if [
        spec.has("selector"),
        spec.has("targetRef"),
        spec.has("targetRefs"),
    ]
    .iter()
    .filter(|b| **b)
    .count()
        > 1
    {
        r.error(
            &spec.node.at,
            "spec",
            "only one of targetRefs or selector can be set",
        );
        return None;
    }

    if has_target {
        // Validate nothing more: the policy is for a gateway or waypoint.
        let at = spec
            .get("targetRefs")
            .or(spec.get("targetRef"))
            .map(|n| n.at.clone())
            .unwrap_or(root.at.clone());
        notes.push(Note {
            location: at,
            message: format!(
                "skipping policy {}: policies with targetRef/targetRefs do not apply to sidecars",
                ctx.id
            ),
        });
        return None;
    }
    if action == Some(ActionName::Custom) {
        let at = action_node.map(|n| n.at.clone()).unwrap_or(root.at.clone());
        if opts.skip_custom {
            notes.push(Note {
                location: at,
                message: format!(
                    "skipping CUSTOM policy {} (ext_authz is not enforced by meshfence; --skip-custom)",
                    ctx.id
                ),
            });
        } else {
            r.error(
                &at,
                "spec.action",
                format!(
                    "policy {}: CUSTOM (ext_authz) policies are not supported; \
                     pass --skip-custom to skip them explicitly",
                    ctx.id
                ),
            );
        }
        return None;
    }
    if let Some(p) = spec.get("provider") {
        if !p.is_null() {
            r.error(
                &p.at,
                "spec.provider",
                "`provider` must not be set with a non-CUSTOM action",
            );
        }
    }

    let selector = if has_selector {
        selector(r, spec.get("selector")?)
    } else {
        Vec::new()
    };

    let mut rules = Vec::new();
    let mut rules_given = false;
    if let Some(n) = spec.get("rules") {
        if let Some(items) = r.list(n, "spec.rules") {
            rules_given = !items.is_empty();
            if items.len() > 512 {
                r.error(&n.at, "spec.rules", "at most 512 rules are allowed");
            }
            for (i, item) in items.iter().enumerate() {
                if let Some(rule) = lower_rule(r, &ctx, item, &index("spec.rules", i)) {
                    rules.push(rule);
                }
            }
        }
    }
    let action = match action? {
        ActionName::Allow => Action::Allow,
        ActionName::Deny => Action::Deny,
        ActionName::Audit => Action::Audit,
        ActionName::Custom => return None,
    };
    if action != Action::Allow && !rules_given {
        let at = action_node
            .map(|n| n.at.clone())
            .unwrap_or(spec.node.at.clone());
        let name = if action == Action::Deny {
            "a DENY"
        } else {
            "an AUDIT"
        };
        r.error(
            &at,
            "spec.rules",
            format!("{name} policy must have at least one rule"),
        );
    }
    Some(Policy {
        name,
        namespace,
        action,
        dry_run,
        selector,
        rules,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionName {
    Allow,
    Deny,
    Audit,
    Custom,
}

fn metadata(r: &mut Reader, top: &Fields<'_>) -> Option<(String, String, bool)> {
    let Some(meta) = top.get("metadata").filter(|n| !n.is_null()) else {
        r.error(&top.node.at, "metadata", "`metadata` is required");
        return None;
    };
    if !matches!(meta.value, Value::Map(_)) {
        r.error(
            &meta.at,
            "metadata",
            format!("expected a mapping, found {}", meta.value.kind()),
        );
        return None;
    }
    let name = match meta.get("name") {
        Some(n) => r.string(n, "metadata.name")?,
        None => {
            r.error(&meta.at, "metadata.name", "`metadata.name` is required");
            return None;
        }
    };
    if name.is_empty() {
        r.error(&meta.at, "metadata.name", "must not be empty");
    }
    let namespace = match meta.get("namespace") {
        Some(n) if !n.is_null() => r.string(n, "metadata.namespace")?,
        // What `kubectl apply` does without a namespace in context.
        _ => String::from("default"),
    };
    let mut dry_run = false;
    if let Some(ann) = meta.get("annotations").filter(|n| !n.is_null()) {
        if let Some(n) = ann.get("istio.io/dry-run") {
            let p = "metadata.annotations.istio.io/dry-run";
            match &n.value {
                // Istio reads it with Go's strconv.ParseBool.
                Value::Str(s) => match s.as_str() {
                    "1" | "t" | "T" | "true" | "TRUE" | "True" => dry_run = true,
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => dry_run = false,
                    _ => r.error(&n.at, p, format!("`{s}` is not \"true\" or \"false\"")),
                },
                other => r.error(
                    &n.at,
                    p,
                    format!(
                        "expected a string (\"true\" or \"false\"), found {}",
                        other.kind()
                    ),
                ),
            }
        }
    }
    Some((name, namespace, dry_run))
}

fn selector(r: &mut Reader, node: &Node) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(f) = r.fields(node, "spec.selector", &["matchLabels"]) else {
        return out;
    };
    let Some(labels) = f.get("matchLabels") else {
        return out;
    };
    let Some(fields) = labels_map(r, labels) else {
        return out;
    };
    for (k, v) in fields {
        let p = join("spec.selector.matchLabels", &k.0);
        if k.0.is_empty() {
            r.error(&k.1, &p, "key must not be empty");
        } else if k.0.contains('*') {
            r.error(&k.1, &p, "wildcard not allowed in label key match");
        } else if !is_label_key(&k.0) {
            r.error(&k.1, &p, format!("`{}` is not a valid label key", k.0));
        }
        if let Some(val) = r.string(v, &p) {
            if val.contains('*') {
                r.error(&v.at, &p, "wildcard not allowed in label value match");
            } else if !val.is_empty() && !is_label_name(&val) {
                r.error(
                    &v.at,
                    &p,
                    format!("`{val}` is not a valid label value (at most 63 letters, digits, `-`, `_`, `.`, starting and ending alphanumeric)"),
                );
            }
            out.push((k.0, val));
        }
    }
    out
}

/// A Kubernetes label name (also the form of a label value): at most 63
/// characters, alphanumerics, `-`, `_`, `.`, beginning and ending with an
/// alphanumeric.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain.
fn is_label_key(s: &str) -> bool {
    match s.rsplit_once('/') {
        None => is_label_name(s),
        Some((prefix, name)) => {
            is_label_name(name)
                && !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
    }
}

type LabelEntries<'n> = Vec<((String, Location), &'n Node)>;

fn labels_map<'n>(r: &mut Reader, node: &'n Node) -> Option<LabelEntries<'n>> {
    match &node.value {
        Value::Null => Some(Vec::new()),
        Value::Map(entries) => {
            let mut out = Vec::new();
            for (k, v) in entries {
                match k.as_str() {
                    Some(s) => out.push(((s.to_string(), k.at.clone()), v)),
                    None => r.error(
                        &k.at,
                        "spec.selector.matchLabels",
                        format!("expected a string key, found {}", k.value.kind()),
                    ),
                }
            }
            Some(out)
        }
        other => {
            r.error(
                &node.at,
                "spec.selector.matchLabels",
                format!("expected a mapping, found {}", other.kind()),
            );
            None
        }
    }
}

fn lower_rule(r: &mut Reader, ctx: &Ctx<'_>, node: &Node, path: &str) -> Option<Rule> {
    let f = r.fields(node, path, &["from", "to", "when"])?;
    let before = r.errors.len();
    let mut rule = Rule::default();
    if let Some(n) = f.get("from").filter(|n| !n.is_null()) {
        let p = join(path, "from");
        if let Some(items) = r.list(n, &p) {
            if items.is_empty() {
                r.error(&n.at, &p, "`from` must not be empty");
            }
            if items.len() > 512 {
                r.error(&n.at, &p, "at most 512 sources are allowed");
            }
            for (i, item) in items.iter().enumerate() {
                let ip = index(&p, i);
                if let Some(src) = r.fields(item, &ip, &["source"]) {
                    match src.get("source").filter(|n| !n.is_null()) {
                        Some(s) => {
                            if let Some(c) = lower_source(r, ctx, s, &join(&ip, "source")) {
                                rule.from.push(c);
                            }
                        }
                        None => r.error(&item.at, &join(&ip, "source"), "`source` must be set"),
                    }
                }
            }
        }
    }
    if let Some(n) = f.get("to").filter(|n| !n.is_null()) {
        let p = join(path, "to");
        if let Some(items) = r.list(n, &p) {
            if items.is_empty() {
                r.error(&n.at, &p, "`to` must not be empty");
            }
            for (i, item) in items.iter().enumerate() {
                let ip = index(&p, i);
                if let Some(op) = r.fields(item, &ip, &["operation"]) {
                    match op.get("operation").filter(|n| !n.is_null()) {
                        Some(o) => {
                            if let Some(c) = lower_operation(r, o, &join(&ip, "operation")) {
                                rule.to.push(c);
                            }
                        }
                        None => {
                            r.error(&item.at, &join(&ip, "operation"), "`operation` must be set")
                        }
                    }
                }
            }
        }
    }
    if let Some(n) = f.get("when").filter(|n| !n.is_null()) {
        let p = join(path, "when");
        if let Some(items) = r.list(n, &p) {
            for (i, item) in items.iter().enumerate() {
                lower_condition(r, ctx, item, &index(&p, i), &mut rule.when);
            }
        }
    }
    (r.errors.len() == before).then_some(rule)
}

const SOURCE_FIELDS: &[&str] = &[
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
];

/// Reads a list-of-strings field, refusing empty strings. `None` when the
/// field is absent, null or an empty list (Istio treats those as unset).
fn values(
    r: &mut Reader,
    f: &Fields<'_>,
    key: &str,
    path: &str,
) -> Option<Vec<(String, Location, String)>> {
    let node = f.get(key)?;
    let p = join(path, key);
    let items = r.strings(node, &p);
    let mut out = Vec::new();
    for (s, n, ip) in items {
        if s.is_empty() {
            r.error(&n.at, &ip, "empty value is not allowed");
            continue;
        }
        if s.chars().any(char::is_control) {
            r.error(
                &n.at,
                &ip,
                "control characters (newline, tab, ...) are not allowed",
            );
            continue;
        }
        out.push((s, n.at.clone(), ip));
    }
    (!out.is_empty()).then_some(out)
}

fn jwt_error(r: &mut Reader, ctx: &Ctx<'_>, at: &Location, path: &str, what: &str) {
    r.error(
        at,
        path,
        format!(
            "policy {}: {what} needs JWT request authentication, which meshfence does not support",
            ctx.id
        ),
    );
}

/// Whether `key` is a JWT condition key Istio knows: `request.auth.principal`,
/// `.audiences`, `.presenter`, `.claims[<name>]` (nested: `[a][b]`).
fn is_jwt_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("request.auth.") else {
        return false;
    };
    if matches!(rest, "principal" | "audiences" | "presenter") {
        return true;
    }
    let Some(mut claims) = rest.strip_prefix("claims") else {
        return false;
    };
    if claims.is_empty() {
        return false;
    }
    while !claims.is_empty() {
        let Some(inner) = claims.strip_prefix('[') else {
            return false;
        };
        let Some(close) = inner.find(']') else {
            return false;
        };
        let name = &inner[..close];
        if name.is_empty() || name.contains('[') {
            return false;
        }
        claims = &inner[close + 1..];
    }
    true
}

fn lower_source(r: &mut Reader, ctx: &Ctx<'_>, node: &Node, path: &str) -> Option<Conjunction> {
    let f = r.fields(node, path, SOURCE_FIELDS)?;
    let before = r.errors.len();
    if !f.keys().any(|k| f.get(k).is_some_and(non_empty_list)) {
        r.error(&node.at, path, "`source` must not be empty");
        return None;
    }
    let mut clauses = Vec::new();
    for (key, negated) in [("requestPrincipals", false), ("notRequestPrincipals", true)] {
        let Some(n) = f.get(key) else { continue };
        if ctx.request_authentication == RequestAuthentication::Refuse {
            jwt_error(r, ctx, &n.at, &join(path, key), &format!("`{key}`"));
        } else if let Some(vals) = values(r, &f, key, path) {
            let v = vals
                .iter()
                .map(|(s, _, _)| ValueMatch::Str(header_like(s)))
                .collect();
            clauses.push(clause(
                Attribute::RequestAuth("request.auth.principal".into()),
                negated,
                v,
            ));
        }
    }
    let has = |k: &str| f.get(k).is_some_and(non_empty_list);
    if (has("serviceAccounts") || has("notServiceAccounts"))
        && (has("principals") || has("notPrincipals") || has("namespaces") || has("notNamespaces"))
    {
        r.error(
            &node.at,
            path,
            "Cannot set serviceAccounts with namespaces or principals",
        );
    }
    for (key, negated) in [("principals", false), ("notPrincipals", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            let v = vals
                .iter()
                .flat_map(|(s, _, _)| principal_values(ctx.mesh, s))
                .collect();
            clauses.push(clause(Attribute::PeerUri, negated, v));
        }
    }
    for (key, negated) in [("namespaces", false), ("notNamespaces", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            let v = vals.iter().map(|(s, _, _)| namespace_value(s)).collect();
            clauses.push(clause(Attribute::PeerUri, negated, v));
        }
    }
    for (key, negated) in [("serviceAccounts", false), ("notServiceAccounts", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            if vals.len() > 16 {
                r.error(
                    &vals[16].1,
                    &vals[16].2,
                    "at most 16 service accounts are allowed",
                );
            }
            let mut v = Vec::new();
            for (s, at, p) in &vals {
                if s.len() > 320 {
                    r.error(at, p, "longer than 320 characters");
                }
                match service_account(s, &ctx.namespace) {
                    Ok(sa) => v.push(sa),
                    Err(m) => r.error(at, p, m),
                }
            }
            clauses.push(clause(Attribute::PeerUri, negated, v));
        }
    }
    for (key, negated) in [("trustDomains", false), ("notTrustDomains", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            let v = vals.iter().map(|(s, _, _)| trust_domain_value(s)).collect();
            clauses.push(clause(Attribute::PeerUri, negated, v));
        }
    }
    for (key, attr, negated) in [
        ("ipBlocks", Attribute::SourceIp, false),
        ("notIpBlocks", Attribute::SourceIp, true),
        ("remoteIpBlocks", Attribute::RemoteIp, false),
        ("notRemoteIpBlocks", Attribute::RemoteIp, true),
    ] {
        if let Some(vals) = values(r, &f, key, path) {
            let v = cidrs(r, &vals);
            clauses.push(clause(attr, negated, v));
        }
    }
    (r.errors.len() == before).then_some(clauses)
}

fn non_empty_list(n: &Node) -> bool {
    matches!(&n.value, Value::Seq(items) if !items.is_empty())
}

fn clause(attribute: Attribute, negated: bool, values: Vec<ValueMatch>) -> Clause {
    Clause {
        attribute,
        negated,
        values,
    }
}

fn cidrs(r: &mut Reader, vals: &[(String, Location, String)]) -> Vec<ValueMatch> {
    let mut out = Vec::new();
    for (s, at, p) in vals {
        match parse_cidr(s) {
            Ok(c) => out.push(ValueMatch::Cidr(c)),
            Err(m) => r.error(at, p, m),
        }
    }
    out
}

const OPERATION_FIELDS: &[&str] = &[
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
];

fn lower_operation(r: &mut Reader, node: &Node, path: &str) -> Option<Conjunction> {
    let f = r.fields(node, path, OPERATION_FIELDS)?;
    let before = r.errors.len();
    if !f.keys().any(|k| f.get(k).is_some_and(non_empty_list)) {
        r.error(&node.at, path, "`operation` must not be empty");
        return None;
    }
    let mut clauses = Vec::new();
    for (key, negated) in [("hosts", false), ("notHosts", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            let v = vals
                .iter()
                .map(|(s, _, _)| ValueMatch::Str(header_like(s).ignoring_case()))
                .collect();
            clauses.push(clause(Attribute::Host, negated, v));
        }
    }
    for (key, negated) in [("methods", false), ("notMethods", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            let v = vals
                .iter()
                .map(|(s, _, _)| ValueMatch::Str(header_like(s)))
                .collect();
            clauses.push(clause(Attribute::Method, negated, v));
        }
    }
    for (key, negated) in [("paths", false), ("notPaths", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            let mut v = Vec::new();
            for (s, at, p) in &vals {
                match path_value(s) {
                    Ok(m) => v.push(m),
                    Err(m) => r.error(at, p, m),
                }
            }
            clauses.push(clause(Attribute::Path, negated, v));
        }
    }
    for (key, negated) in [("ports", false), ("notPorts", true)] {
        if let Some(vals) = values(r, &f, key, path) {
            let mut v = Vec::new();
            for (s, at, p) in &vals {
                match parse_port(s) {
                    Ok(port) => v.push(ValueMatch::Port(port)),
                    Err(m) => r.error(at, p, m),
                }
            }
            clauses.push(clause(Attribute::DestinationPort, negated, v));
        }
    }
    (r.errors.len() == before).then_some(clauses)
}

/// The `when` keys meshfence evaluates, besides `request.headers[...]`.
pub const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.trustDomain",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

fn lower_condition(r: &mut Reader, ctx: &Ctx<'_>, node: &Node, path: &str, out: &mut Conjunction) {
    let Some(f) = r.fields(node, path, &["key", "values", "notValues"]) else {
        return;
    };
    let kp = join(path, "key");
    let Some(key_node) = f.get("key").filter(|n| !n.is_null()) else {
        r.error(&node.at, &kp, "`key` is required");
        return;
    };
    let Some(key) = r.string(key_node, &kp) else {
        return;
    };
    if key.is_empty() {
        r.error(&key_node.at, &kp, "`key` must not be empty");
        return;
    }
    let vals = values(r, &f, "values", path);
    let not_vals = values(r, &f, "notValues", path);
    let given = |k: &str| f.get(k).is_some_and(non_empty_list);
    if !given("values") && !given("notValues") {
        r.error(
            &node.at,
            path,
            format!("at least one of `values` or `notValues` must be set for key `{key}`"),
        );
        return;
    }
    if key.starts_with("request.auth.") {
        if !is_jwt_key(&key) {
            r.error(
                &key_node.at,
                &kp,
                format!(
                    "unknown condition key `{key}` (JWT keys: request.auth.principal, \
                     request.auth.audiences, request.auth.presenter, request.auth.claims[<name>])"
                ),
            );
            return;
        }
        if ctx.request_authentication == RequestAuthentication::Refuse {
            jwt_error(r, ctx, &key_node.at, &kp, &format!("condition key `{key}`"));
            return;
        }
    }
    let attribute = if key.starts_with("request.auth.") {
        Attribute::RequestAuth(key.clone())
    } else if let Some(rest) = key.strip_prefix("request.headers") {
        match rest.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            Some(name)
                if !name.is_empty()
                    && !name.contains(['[', ']'])
                    && !name.chars().any(char::is_control) =>
            {
                Attribute::Header(name.to_ascii_lowercase())
            }
            _ => {
                r.error(
                    &key_node.at,
                    &kp,
                    format!("`{key}` is not of the form request.headers[<name>]"),
                );
                return;
            }
        }
    } else if key.starts_with("experimental.") {
        r.error(
            &key_node.at,
            &kp,
            format!(
                "policy {}: condition key `{key}` is not supported by meshfence \
                 (Istio would skip the rule; meshfence refuses to compile it)",
                ctx.id
            ),
        );
        return;
    } else {
        match key.as_str() {
            "source.ip" => Attribute::SourceIp,
            "remote.ip" => Attribute::RemoteIp,
            "destination.ip" => Attribute::DestinationIp,
            "destination.port" => Attribute::DestinationPort,
            "connection.sni" => Attribute::Sni,
            "source.namespace" | "source.principal" | "source.trustDomain" => Attribute::PeerUri,
            _ => {
                r.error(
                    &key_node.at,
                    &kp,
                    format!(
                        "unknown condition key `{key}` (known: request.headers[<name>], {})",
                        CONDITION_KEYS.join(", ")
                    ),
                );
                return;
            }
        }
    };
    for (vals, negated) in [(vals, false), (not_vals, true)] {
        let Some(vals) = vals else { continue };
        let mut v = Vec::new();
        for (s, at, p) in &vals {
            let lowered: Result<Vec<ValueMatch>, String> = match key.as_str() {
                "source.ip" | "remote.ip" | "destination.ip" => {
                    parse_cidr(s).map(|c| vec![ValueMatch::Cidr(c)])
                }
                "destination.port" => parse_port(s).map(|p| vec![ValueMatch::Port(p)]),
                "connection.sni" => Ok(vec![ValueMatch::Str(regex_star(s))]),
                "source.namespace" => Ok(vec![namespace_value(s)]),
                "source.principal" => Ok(principal_values(ctx.mesh, s)),
                "source.trustDomain" => Ok(vec![trust_domain_value(s)]),
                _ => Ok(vec![ValueMatch::Str(header_like(s))]),
            };
            match lowered {
                Ok(m) => v.extend(m),
                Err(m) => r.error(at, p, m),
            }
        }
        out.push(clause(attribute.clone(), negated, v));
    }
}

// ---- value lowering, as istiod's matcher helpers do it ----

/// Headers, hosts, methods: `*` is presence, `*v` suffix, `v*` prefix.
fn header_like(v: &str) -> StrMatch {
    if v == "*" {
        StrMatch::present()
    } else if let Some(rest) = v.strip_prefix('*') {
        StrMatch::suffix(rest)
    } else if let Some(rest) = v.strip_suffix('*') {
        StrMatch::prefix(rest)
    } else {
        StrMatch::exact(v)
    }
}

/// SNI and plain paths: like [`header_like`] but `*` is the regex `.+`.
fn regex_star(v: &str) -> StrMatch {
    if v == "*" {
        StrMatch::pattern(vec![PatternPiece::AnyNonEmptyRun])
    } else {
        header_like(v)
    }
}

/// A principal (`spiffe://` prepended): `*` is `.+` on the whole URI, `*v` the
/// pattern `spiffe://.*v`, `v*` the prefix `spiffe://v`; a middle `*` is literal.
pub fn principal_value(v: &str) -> ValueMatch {
    const P: &str = "spiffe://";
    let m = if v == "*" {
        StrMatch::pattern(vec![PatternPiece::AnyNonEmptyRun])
    } else if let Some(rest) = v.strip_prefix('*') {
        StrMatch::pattern(vec![
            PatternPiece::Literal(P.to_string()),
            PatternPiece::AnyRun,
            PatternPiece::Literal(rest.to_string()),
        ])
    } else if let Some(rest) = v.strip_suffix('*') {
        StrMatch::prefix(format!("{P}{rest}"))
    } else {
        StrMatch::exact(format!("{P}{v}"))
    };
    ValueMatch::Str(m)
}

/// A principal after trust-domain alias expansion.
fn principal_values(mesh: &MeshSettings, v: &str) -> Vec<ValueMatch> {
    expand_trust_domain_aliases(mesh, v)
        .iter()
        .map(|p| principal_value(p))
        .collect()
}

/// istiod's trust-domain bundle: a principal `<td>/ns/<ns>/sa/<sa>` (exactly
/// five `/`-separated parts, trust domain not `*`) whose trust domain is the
/// mesh's, one of its aliases, `cluster.local`, or a `*suffix` matching one of
/// them, is rewritten once per trust domain of the bundle (the mesh's first,
/// then each alias); a `*suffix` trust domain is kept as written for the trust
/// domains it matches. Duplicates are dropped. Anything else is kept as is.
pub fn expand_trust_domain_aliases(mesh: &MeshSettings, principal: &str) -> Vec<String> {
    let parts: Vec<&str> = principal.split('/').collect();
    if parts.len() != 5 || parts[0] == "*" {
        return vec![principal.to_string()];
    }
    let td = parts[0];
    let bundle: Vec<&str> = std::iter::once(mesh.trust_domain.as_str())
        .chain(mesh.trust_domain_aliases.iter().map(String::as_str))
        .collect();
    let known = bundle.iter().any(|b| *b == td || suffix_match(b, td)) || td == "cluster.local";
    if !known {
        return vec![principal.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    for b in &bundle {
        let candidate = if suffix_match(b, td) {
            principal.to_string()
        } else {
            let mut p = parts.clone();
            p[0] = b;
            p.join("/")
        };
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

/// Whether `pattern` is `*suffix` (or `*`) and `td` ends with the suffix.
fn suffix_match(td: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => td.ends_with(suffix),
        None => false,
    }
}

/// Pattern pieces with adjacent literals merged and runs of `*` collapsed.
#[derive(Default)]
struct Pieces(Vec<PatternPiece>);

impl Pieces {
    fn lit(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(PatternPiece::Literal(l)) = self.0.last_mut() {
            l.push_str(s);
        } else {
            self.0.push(PatternPiece::Literal(s.to_string()));
        }
    }
    fn wild(&mut self, w: PatternPiece) {
        match (self.0.last(), &w) {
            (Some(PatternPiece::AnyRun), PatternPiece::AnyRun) => {}
            (Some(PatternPiece::SegmentRun), PatternPiece::SegmentRun) => {}
            _ => self.0.push(w),
        }
    }
}

/// `namespaces`: the regex `.*/ns/<v>/.*` on the URI SAN, every `*` of `v`
/// read as `.*`.
pub fn namespace_value(v: &str) -> ValueMatch {
    let mut p = Pieces::default();
    p.wild(PatternPiece::AnyRun);
    p.lit("/ns/");
    let mut first = true;
    for part in v.split('*') {
        if !first {
            p.wild(PatternPiece::AnyRun);
        }
        first = false;
        p.lit(part);
    }
    // `.*` then `/` then `.*`: when `v` ends in `*` the `.*` before the slash stays.
    p.lit("/");
    p.wild(PatternPiece::AnyRun);
    ValueMatch::Str(StrMatch::pattern(p.0))
}

/// `trustDomains`: `td` is the prefix `spiffe://td/`; with wildcards, the
/// pattern `spiffe://<td with * as [^/]*>/.*`.
pub fn trust_domain_value(v: &str) -> ValueMatch {
    if !v.contains('*') {
        return ValueMatch::Str(StrMatch::prefix(format!("spiffe://{v}/")));
    }
    let mut p = Pieces::default();
    p.lit("spiffe://");
    let mut first = true;
    for part in v.split('*') {
        if !first {
            p.wild(PatternPiece::SegmentRun);
        }
        first = false;
        p.lit(part);
    }
    p.lit("/");
    p.wild(PatternPiece::AnyRun);
    ValueMatch::Str(StrMatch::pattern(p.0))
}

/// `serviceAccounts`: `ns/sa`, or `sa` in the policy's namespace.
pub fn service_account(v: &str, policy_namespace: &str) -> Result<ValueMatch, String> {
    let (ns, name) = match v.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (policy_namespace, v),
    };
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        return Err(format!(
            "`{v}` is not a service account (`<namespace>/<name>` or `<name>`)"
        ));
    }
    Ok(ValueMatch::ServiceAccount {
        namespace: ns.to_string(),
        name: name.to_string(),
    })
}

/// `paths`: exact, `v*` prefix, `*v` suffix, `*` non-empty; `{*}`/`{**}`
/// templates become Envoy URI templates. Refuses what Istio's
/// `CheckValidPathTemplate` refuses.
pub fn path_value(v: &str) -> Result<ValueMatch, String> {
    let is_template = v.contains("{*}") || v.contains("{**}");
    let mut seen_any = false;
    for glob in v.trim_matches('/').split('/') {
        if glob == "{*}" && !seen_any {
            continue;
        }
        if glob == "{**}" && !seen_any {
            seen_any = true;
            continue;
        }
        if glob == "{*}" || glob == "{**}" {
            return Err(format!(
                "invalid path template `{v}`: {{**}} must be the last operator"
            ));
        }
        if glob.contains(['{', '}']) {
            return Err(format!(
                "invalid path template `{v}`: `{{` or `}}` outside a supported operator ({{*}} or {{**}})"
            ));
        }
        if is_template && glob.contains('*') {
            return Err(format!(
                "invalid path template `{v}`: `*` outside a supported operator ({{*}} or {{**}})"
            ));
        }
    }
    if is_template {
        let operators = v.matches("{*}").count() + v.matches("{**}").count();
        if operators > 5 {
            return Err(format!(
                "invalid path template `{v}`: Envoy allows at most 5 operators"
            ));
        }
        return Ok(ValueMatch::PathTemplate(
            v.replace("{**}", "**").replace("{*}", "*"),
        ));
    }
    Ok(ValueMatch::Str(regex_star(v)))
}

/// An IP address (a single-address range) or a CIDR range.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let bad = || format!("`{s}` is not an IP address or CIDR range");
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => {
            if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                return Err(bad());
            }
            (a, Some(l.parse::<u8>().map_err(|_| bad())?))
        }
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let (address, prefix_len) = match ip {
        std::net::IpAddr::V4(v4) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return Err(format!("`{s}`: an IPv4 prefix length is at most 32"));
            }
            (v4.to_ipv6_mapped().octets(), 96 + len)
        }
        std::net::IpAddr::V6(v6) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return Err(format!("`{s}`: an IPv6 prefix length is at most 128"));
            }
            (v6.octets(), len)
        }
    };
    Ok(Cidr {
        address,
        prefix_len,
    })
}

/// A port number 1–65535, written as a decimal string.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p as u16),
        _ => Err(format!("`{s}` is not a valid port (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_lower_like_istiod() {
        let exact = principal_value("principal");
        assert_eq!(
            exact,
            ValueMatch::Str(StrMatch::exact("spiffe://principal"))
        );
        assert_eq!(
            principal_value("principal-prefix-*"),
            ValueMatch::Str(StrMatch::prefix("spiffe://principal-prefix-"))
        );
        assert_eq!(
            principal_value("a*b"),
            ValueMatch::Str(StrMatch::exact("spiffe://a*b"))
        );
    }

    fn lit(s: &str) -> PatternPiece {
        PatternPiece::Literal(s.to_string())
    }

    fn pattern(v: &ValueMatch) -> &[PatternPiece] {
        match v {
            ValueMatch::Str(StrMatch {
                kind: meshfence_ruleset::ir::StrMatchKind::Pattern(p),
                ignore_case: false,
            }) => p,
            other => panic!("not a pattern: {other:?}"),
        }
    }

    #[test]
    fn regex_shapes_match_the_golden_output() {
        use PatternPiece::*;
        // spiffe://.*-suffix-principal
        assert_eq!(
            pattern(&principal_value("*-suffix-principal")),
            [lit("spiffe://"), AnyRun, lit("-suffix-principal")]
        );
        // .+
        assert_eq!(pattern(&principal_value("*")), [AnyNonEmptyRun]);
        // .*/ns/ns-prefix-.*/.*
        assert_eq!(
            pattern(&namespace_value("ns-prefix-*")),
            [AnyRun, lit("/ns/ns-prefix-"), AnyRun, lit("/"), AnyRun]
        );
        // .*/ns/.*-ns-suffix/.*
        assert_eq!(
            pattern(&namespace_value("*-ns-suffix")),
            [AnyRun, lit("/ns/"), AnyRun, lit("-ns-suffix/"), AnyRun]
        );
        // .*/ns/.*/.*
        assert_eq!(
            pattern(&namespace_value("*")),
            [AnyRun, lit("/ns/"), AnyRun, lit("/"), AnyRun]
        );
        // spiffe://bad[^/]*/.*
        assert_eq!(
            pattern(&trust_domain_value("bad*")),
            [lit("spiffe://bad"), SegmentRun, lit("/"), AnyRun]
        );
        assert_eq!(
            trust_domain_value("untrusted"),
            ValueMatch::Str(StrMatch::prefix("spiffe://untrusted/"))
        );
        // Paths: `*` is `.+`, `*/suffix` a suffix.
        assert_eq!(pattern(&path_value("*").unwrap()), [AnyNonEmptyRun]);
        assert_eq!(
            path_value("*/suffix").unwrap(),
            ValueMatch::Str(StrMatch::suffix("/suffix"))
        );
        // Hosts are case-insensitive; `*` is presence.
        assert_eq!(header_like("*"), StrMatch::present());
        assert_eq!(
            service_account("sa-only", "foo").unwrap(),
            ValueMatch::ServiceAccount {
                namespace: "foo".into(),
                name: "sa-only".into()
            }
        );
        assert!(service_account("a/b/c", "foo").is_err());
    }

    #[test]
    fn aliases_expand_like_the_bundle() {
        let mesh = MeshSettings {
            trust_domain: "new-td".into(),
            trust_domain_aliases: vec!["old-td".into(), "some-trustdomain".into()],
            ..MeshSettings::default()
        };
        assert_eq!(
            expand_trust_domain_aliases(&mesh, "*-td/ns/foo/sa/prefix-td"),
            [
                "*-td/ns/foo/sa/prefix-td",
                "some-trustdomain/ns/foo/sa/prefix-td"
            ]
        );
        assert_eq!(
            expand_trust_domain_aliases(&mesh, "*/ns/foo/sa/x"),
            ["*/ns/foo/sa/x"]
        );
        assert_eq!(
            expand_trust_domain_aliases(&mesh, "other/ns/foo/sa/x"),
            ["other/ns/foo/sa/x"]
        );
        assert_eq!(
            expand_trust_domain_aliases(&mesh, "cluster.local/ns/a/sa/b"),
            [
                "new-td/ns/a/sa/b",
                "old-td/ns/a/sa/b",
                "some-trustdomain/ns/a/sa/b"
            ]
        );
    }

    #[test]
    fn path_templates() {
        assert_eq!(
            path_value("/{**}/path/template"),
            Ok(ValueMatch::PathTemplate("/**/path/template".into()))
        );
        assert!(path_value("/{**}/a/{*}").is_err());
        assert!(path_value("/a/{x}").is_err());
        assert!(path_value("/a/{*}/b*").is_err());
        assert!(path_value("/a/b*").is_ok());
        assert!(path_value("/{*}/{*}/{*}/{*}/{*}").is_ok());
        assert!(path_value("/{*}/{*}/{*}/{*}/{*}/{*}").is_err());
    }

    #[test]
    fn label_syntax() {
        for ok in ["app", "app.kubernetes.io/name", "a_b-c.d", "x/y"] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in ["-app", "app-", "a b", "Ex.com/x", "/x", "x/"] {
            assert!(!is_label_key(bad), "{bad}");
        }
        assert!(is_label_name("v1"));
        assert!(!is_label_name(&"a".repeat(64)));
    }

    #[test]
    fn cidrs_and_ports() {
        assert_eq!(parse_cidr("5.6.0.0/16").unwrap().prefix_len, 112);
        assert_eq!(parse_cidr("::1").unwrap().prefix_len, 128);
        assert!(parse_cidr("1.2.3.4/33").is_err());
        assert!(parse_cidr("1.2.3").is_err());
        assert_eq!(parse_port("80"), Ok(80));
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(parse_port("-1").is_err());
    }
}
