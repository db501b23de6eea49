//! Random SAN bytes, headers and paths through the real `.wasm`: it never
//! traps, and it decides exactly as the native evaluator does for the same
//! input (and rewrites the identity header as the decision says).

mod host_support;

use std::cell::RefCell;

use host_support::*;
use meshfence_ruleset::{
    Attribute, Clause, HeaderList, IdentityValue, PathPolicy, Request, Ruleset, SpoofPolicy,
    ValueMatch, Workload,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use wasm_test_harness::host::{Host, RequestSpec};

/// The shared ruleset plus rules on a header, on the destination port and a
/// negated principal, so that every kind of input the filter reads matters.
fn rich_ruleset() -> Ruleset {
    let mut rs = ruleset();
    rs.policies[0].rules.push(rule(
        vec![],
        vec![vec![Clause::new(
            Attribute::DestinationPort,
            vec![ValueMatch::Port(8080)],
        )]],
        vec![header("x-env", "prod")],
    ));
    rs.policies.push(policy(
        WORKLOAD_NS,
        "deny-beta-writes",
        meshfence_ruleset::Action::Deny,
        vec![rule(
            vec![vec![Clause::not(
                Attribute::PeerUri,
                vec![ValueMatch::Str(meshfence_ruleset::StrMatch::prefix(
                    "spiffe://cluster.local/ns/tenant-alpha/",
                ))],
            )]],
            vec![vec![method("POST"), path_prefix("/api/")]],
            vec![],
        )],
    ));
    rs
}

fn variants() -> Vec<Ruleset> {
    let base = rich_ruleset();
    let mut istio = base.clone();
    istio.mesh.path_policy = PathPolicy::Istio;
    istio.mesh.identity_header.value = IdentityValue::Principal;
    let mut spoof_deny = base.clone();
    spoof_deny.mesh.spoofed_identity = SpoofPolicy::Deny;
    let mut off = base.clone();
    off.mesh.identity_header.value = IdentityValue::Off;
    vec![base, istio, spoof_deny, off]
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Deny(u32),
    /// Allowed; the identity header values the upstream gets.
    Allow(Vec<String>),
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// What the native evaluator says about the request the host will present.
fn expected(rs: &Ruleset, spec: &RequestSpec) -> Expect {
    let labels = WORKLOAD_LABELS;
    let wp = rs.for_workload(&Workload {
        namespace: WORKLOAD_NS,
        labels,
    });
    let mesh = &rs.mesh;
    let refuse = Expect::Deny(u32::from(mesh.deny_status));
    let peer_uri = match &spec.san {
        None => None,
        Some(b) => match text(b) {
            Some(s) => Some(s),
            None => return refuse,
        },
    };
    let (Some(method), Some(path), Some(host)) =
        (text(&spec.method), text(&spec.path), text(&spec.authority))
    else {
        return refuse;
    };
    let map = spec.header_map();
    let identity = (mesh.identity_header.value != IdentityValue::Off)
        .then_some(mesh.identity_header.name.as_str());
    let needed: Vec<&str> = wp.header_names().iter().copied().chain(identity).collect();
    let bad = map
        .iter()
        .any(|(n, v)| needed.iter().any(|want| n.eq_ignore_ascii_case(want)) && text(v).is_none());
    if bad {
        return refuse;
    }
    let pairs: Vec<(&str, &str)> = map
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), text(v)?)))
        .collect();
    let headers = HeaderList(&pairs);
    let req = Request {
        peer_uri,
        method,
        path,
        host,
        destination_port: spec.destination_port.unwrap_or(0),
        source_ip: None,
        remote_ip: None,
        destination_ip: None,
        sni: None,
        headers: &headers,
    };
    let d = wp.decide(&req);
    if !d.allowed {
        return Expect::Deny(u32::from(d.deny_status(mesh)));
    }
    let name = mesh.identity_header.name.as_str();
    let values = if d.identity.rewrite.changes_headers() {
        d.identity
            .rewrite
            .set
            .map(String::from)
            .into_iter()
            .collect()
    } else {
        pairs
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
            .collect()
    };
    Expect::Allow(values)
}

fn bytes_of(s: &'static str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn san() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        6 => prop::sample::select(vec![
            ALPHA,
            BETA,
            GATEWAY,
            "spiffe://evil.example/ns/tenant-alpha/sa/curl",
            "spiffe://cluster.local/ns/tenant-alpha/sa/curl/x",
            "https://x/ns/tenant-alpha/sa/y",
            "",
        ])
        .prop_map(|s| Some(bytes_of(s))),
        2 => "spiffe://[a-z.]{0,12}/ns/[a-z-]{0,14}/sa/[a-z]{0,5}(/[a-z]{0,3})?"
            .prop_map(|s| Some(s.into_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Some),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "/", "/health", "/api/items", "/api/admin", "/api/admin/x", "/api//admin",
            "/api/audit/1", "/api/shadow", "/ingest/tenant-alpha", "/api/items?x=1#f",
            "/api/%2e%2e/admin", "api", "",
        ])
        .prop_map(bytes_of),
        2 => "/[a-z/%.;?#\\\\2FfEe-]{0,24}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn method_() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::sample::select(vec!["GET", "POST", "DELETE", "get", ""]).prop_map(bytes_of),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop::sample::select(vec![
        "x-tenant-identity",
        "X-Tenant-Identity",
        "X-TENANT-IDENTITY",
        "x-env",
        "X-Env",
        "x-other",
    ]);
    let value = prop_oneof![
        6 => prop::sample::select(vec![
            ALPHA,
            BETA,
            GATEWAY,
            "cluster.local/ns/tenant-alpha/sa/curl",
            "prod",
            "evil",
            "",
            "tenant-alpha",
        ])
        .prop_map(bytes_of),
        2 => ".{0,20}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    prop::collection::vec((name.prop_map(String::from), value), 0..6)
}

fn spec() -> impl Strategy<Value = RequestSpec> {
    (
        san(),
        path(),
        method_(),
        headers(),
        prop_oneof![Just(8080u16), Just(9090u16)],
    )
        .prop_map(|(san, path, method, headers, port)| RequestSpec {
            san,
            path,
            method,
            headers,
            destination_port: Some(port),
            ..RequestSpec::default()
        })
}

#[test]
fn the_wasm_decides_as_the_native_evaluator() {
    let rulesets = variants();
    let hosts: Vec<RefCell<Host>> = rulesets
        .iter()
        .map(|rs| RefCell::new(host_with(rs, Form::Json)))
        .collect();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // (allowed, denied, identity rewritten), to show the inputs reach every branch.
    let seen = RefCell::new((0u32, 0u32, 0u32));
    runner
        .run(&spec(), |spec| {
            for (rs, host) in rulesets.iter().zip(&hosts) {
                let want = expected(rs, &spec);
                let out = host
                    .borrow_mut()
                    .request(&spec)
                    .map_err(|e| TestCaseError::fail(format!("trap: {e}")))?;
                let got = if out.allowed() {
                    Expect::Allow(out.header_values(&rs.mesh.identity_header.name))
                } else {
                    Expect::Deny(out.status().unwrap_or(0))
                };
                prop_assert_eq!(&got, &want, "mesh {:?}: {:?}", rs.mesh, out);
                let mut seen = seen.borrow_mut();
                match got {
                    Expect::Allow(_) => seen.0 += 1,
                    Expect::Deny(_) => seen.1 += 1,
                }
                if !out.mutations.is_empty() {
                    seen.2 += 1;
                }
            }
            Ok(())
        })
        .unwrap();
    for h in &hosts {
        assert!(!h.borrow().trapped());
    }
    let (allowed, denied, rewritten) = seen.into_inner();
    println!("allowed {allowed}, denied {denied}, identity rewritten {rewritten}");
    assert!(allowed > 0 && denied > 0 && rewritten > 0);
}
