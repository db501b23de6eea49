//! Shared by the `host_*` tests: the real filter `.wasm`, rulesets built from
//! the IR, and the two configuration forms.
#![allow(dead_code)]

use std::sync::OnceLock;

use base64::Engine as _;
use meshfence_ruleset::format::to_bytes;
use meshfence_ruleset::{
    Action, Attribute, Clause, MeshSettings, PatternPiece, Policy, Rule, Ruleset, StrMatch,
    ValueMatch,
};
use wasm_test_harness::host::{filter_wasm, Host};

pub const ALPHA: &str = "spiffe://cluster.local/ns/tenant-alpha/sa/curl";
pub const BETA: &str = "spiffe://cluster.local/ns/tenant-beta/sa/curl";
pub const GATEWAY: &str = "spiffe://cluster.local/ns/shared-services/sa/gateway";
pub const IDENTITY: &str = "x-tenant-identity";

/// The module bytes, built once per test binary.
pub fn wasm() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = filter_wasm().unwrap_or_else(|e| panic!("the filter .wasm: {e}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

fn str_clause(attribute: Attribute, m: StrMatch) -> Clause {
    Clause::new(attribute, vec![ValueMatch::Str(m)])
}

/// `source.namespaces: [ns]` as istiod lowers it: a regex on the URI SAN.
pub fn from_namespace(ns: &str) -> Clause {
    str_clause(
        Attribute::PeerUri,
        StrMatch::pattern(vec![
            PatternPiece::AnyRun,
            PatternPiece::Literal(format!("/ns/{ns}/")),
            PatternPiece::AnyRun,
        ]),
    )
}

pub fn from_uri(uri: &str) -> Clause {
    str_clause(Attribute::PeerUri, StrMatch::exact(uri))
}

pub fn path_prefix(p: &str) -> Clause {
    str_clause(Attribute::Path, StrMatch::prefix(p))
}

pub fn path_exact(p: &str) -> Clause {
    str_clause(Attribute::Path, StrMatch::exact(p))
}

pub fn method(m: &str) -> Clause {
    str_clause(Attribute::Method, StrMatch::exact(m))
}

pub fn header(name: &str, value: &str) -> Clause {
    str_clause(Attribute::Header(name.into()), StrMatch::exact(value))
}

pub fn policy(ns: &str, name: &str, action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        namespace: ns.into(),
        action,
        dry_run: false,
        selector: vec![("app".into(), "api".into())],
        rules,
    }
}

pub fn rule(from: Vec<Vec<Clause>>, to: Vec<Vec<Clause>>, when: Vec<Clause>) -> Rule {
    Rule { from, to, when }
}

pub fn mesh() -> MeshSettings {
    MeshSettings {
        trusted_forwarders: vec!["shared-services".into()],
        ..MeshSettings::default()
    }
}

/// The workload `tenant-alpha`, `app=api`, with:
/// - ALLOW `allow-api`: rule 0 tenant-alpha GET `/api/*`; rule 1 the
///   shared-services namespace when the identity header names tenant-alpha's
///   curl; rule 2 anyone on `/health`.
/// - DENY `deny-admin`: `/api/admin*`.
/// - AUDIT `audit-audit`: `/api/audit*`.
/// - dry-run DENY `shadow`: `/api/shadow*`.
/// - a policy of another workload (`app=other`) that would deny everything.
pub fn ruleset() -> Ruleset {
    let ns = "tenant-alpha";
    let mut shadow = policy(
        ns,
        "shadow",
        Action::Deny,
        vec![rule(vec![], vec![vec![path_prefix("/api/shadow")]], vec![])],
    );
    shadow.dry_run = true;
    let mut other = policy(ns, "other-workload", Action::Deny, vec![Rule::default()]);
    other.selector = vec![("app".into(), "other".into())];
    Ruleset {
        mesh: mesh(),
        policies: vec![
            policy(
                ns,
                "allow-api",
                Action::Allow,
                vec![
                    rule(
                        vec![vec![from_namespace("tenant-alpha")]],
                        vec![vec![method("GET"), path_prefix("/api/")]],
                        vec![],
                    ),
                    rule(
                        vec![vec![from_namespace("shared-services")]],
                        vec![],
                        vec![header(IDENTITY, ALPHA)],
                    ),
                    rule(vec![], vec![vec![path_exact("/health")]], vec![]),
                ],
            ),
            policy(
                ns,
                "deny-admin",
                Action::Deny,
                vec![rule(vec![], vec![vec![path_prefix("/api/admin")]], vec![])],
            ),
            policy(
                ns,
                "audit-audit",
                Action::Audit,
                vec![rule(vec![], vec![vec![path_prefix("/api/audit")]], vec![])],
            ),
            shadow,
            other,
        ],
    }
}

pub const WORKLOAD_NS: &str = "tenant-alpha";
pub const WORKLOAD_LABELS: &[(&str, &str)] = &[("app", "api"), ("version", "v1")];

/// The configuration forms the filter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Raw bytes (Envoy `BytesValue`); the workload from node metadata.
    Raw,
    /// JSON with the ruleset in base64 and the workload named.
    Json,
}

pub const FORMS: [Form; 2] = [Form::Raw, Form::Json];

pub fn json_config(bytes: &[u8], ns: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k:?}: {v:?}"))
        .collect();
    format!(
        r#"{{"ruleset": "{b64}", "workload": {{"namespace": "{ns}", "labels": {{{}}}}}}}"#,
        labels.join(", ")
    )
    .into_bytes()
}

/// A host running the filter configured with `rs` in the given form.
pub fn host_with(rs: &Ruleset, form: Form) -> Host {
    let mut host = Host::from_bytes(wasm()).expect("load");
    let bytes = to_bytes(rs);
    let config = match form {
        Form::Raw => {
            host.set_node_workload(WORKLOAD_NS, WORKLOAD_LABELS);
            bytes
        }
        Form::Json => json_config(&bytes, WORKLOAD_NS, WORKLOAD_LABELS),
    };
    let ok = host.configure(&config).expect("configure must not trap");
    assert!(ok, "configure refused: {:?}", host.logs());
    host
}

pub fn host(form: Form) -> Host {
    host_with(&ruleset(), form)
}
