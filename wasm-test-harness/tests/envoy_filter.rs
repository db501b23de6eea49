//! The built filter inside a real Envoy: decisions by the verified URI SAN,
//! the identity header, counters, and path tricks against both the shipped
//! (strict) normalization and Istio's default. One Envoy per configuration,
//! shared by the tests of this file.
#![cfg(feature = "envoy")]

mod envoy_common;

use std::sync::OnceLock;

use envoy_common::*;
use wasm_test_harness::envoy::{
    Envoy, Identity, Listener, Normalization, PluginConfigFormat, Probe, Workload,
};

const DENY_BODY: &str = "RBAC: access denied";
/// Allowed by the rules, but not a well-formed SPIFFE ID (no `/sa/`): it may
/// pass, but may never become the identity header (DESIGN §4).
const MALFORMED: &str = "spiffe://cluster.local/ns/tenant-a";

fn envoy(normalization: Normalization) -> &'static Envoy {
    static STRICT: OnceLock<Envoy> = OnceLock::new();
    static ISTIO: OnceLock<Envoy> = OnceLock::new();
    let cell = match normalization {
        Normalization::Strict => &STRICT,
        Normalization::IstioDefault => &ISTIO,
    };
    cell.get_or_init(|| {
        let mut c = config(&[ALICE, ALICE_2, SHARED, MALFORMED]);
        c.normalization = normalization;
        Envoy::start(c).unwrap_or_else(|e| panic!("start Envoy: {e}"))
    })
}

fn strict() -> &'static Envoy {
    envoy(Normalization::Strict)
}

fn from(envoy: &Envoy, who: &str) -> Probe {
    Probe::get("/data").from(envoy.caller(who).unwrap())
}

#[test]
fn an_allowed_san_reaches_the_upstream_with_its_verified_identity() {
    let envoy = strict();
    let seen = envoy.send(&from(envoy, ALICE)).unwrap();
    assert!(seen.allowed(), "{seen:?}\n{}", envoy.logs());
    let up = seen.upstream_saw.unwrap();
    assert_eq!(up.header_values("x-tenant-identity"), vec![ALICE]);
}

#[test]
fn another_tenants_san_is_denied_like_envoy_rbac() {
    let envoy = strict();
    let seen = envoy.send(&from(envoy, BOB)).unwrap();
    assert_eq!(seen.status, 403, "{seen:?}");
    assert_eq!(seen.body, DENY_BODY);
    assert!(seen.denied());
}

#[test]
fn a_deny_rule_wins_over_the_allow() {
    let envoy = strict();
    let seen = envoy
        .send(&Probe::get("/api/admin/users").from(envoy.caller(ALICE).unwrap()))
        .unwrap();
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (403, DENY_BODY),
        "{seen:?}"
    );
    assert!(seen.upstream_saw.is_none());
}

#[test]
fn a_spoofed_identity_header_is_replaced_by_the_verified_one() {
    let envoy = strict();
    let before = envoy
        .counter("meshfence.identity_stripped")
        .unwrap()
        .unwrap_or(0);
    let probe = from(envoy, ALICE)
        .header("x-tenant-identity", BOB)
        .header("X-Tenant-Identity", SHARED)
        .header("X-TENANT-IDENTITY", "tenant-b");
    let seen = envoy.send(&probe).unwrap();
    assert!(seen.allowed(), "{seen:?}");
    assert_eq!(
        seen.upstream_saw
            .unwrap()
            .header_values("x-tenant-identity"),
        vec![ALICE]
    );
    let after = envoy.counter("meshfence.identity_stripped").unwrap();
    assert!(
        after.unwrap_or(0) > before,
        "identity_stripped {before} -> {after:?}"
    );
}

#[test]
fn a_spoofed_identity_cannot_satisfy_a_rule() {
    // Bob claims to be Alice in the header: the rules see only his SAN.
    let envoy = strict();
    let seen = envoy
        .send(&from(envoy, BOB).header("x-tenant-identity", ALICE))
        .unwrap();
    assert_eq!(seen.status, 403, "{seen:?}");
    assert!(seen.upstream_saw.is_none());
}

#[test]
fn many_copies_of_the_identity_header_all_go() {
    let envoy = strict();
    // 90 copies: Envoy itself answers 431 past 100 request headers.
    let mut probe = from(envoy, ALICE);
    for i in 0..90 {
        let name = if i % 2 == 0 {
            "x-tenant-identity"
        } else {
            "X-Tenant-IDENTITY"
        };
        probe = probe.header(
            name,
            &format!("spiffe://cluster.local/ns/tenant-{i}/sa/app"),
        );
    }
    let seen = envoy.send(&probe).unwrap();
    assert!(seen.allowed(), "{seen:?}");
    assert_eq!(
        seen.upstream_saw
            .unwrap()
            .header_values("x-tenant-identity"),
        vec![ALICE]
    );
}

#[test]
fn a_malformed_spiffe_id_never_becomes_the_identity_header() {
    let envoy = strict();
    let seen = envoy
        .send(&from(envoy, MALFORMED).header("x-tenant-identity", ALICE))
        .unwrap();
    assert!(seen.allowed(), "{seen:?}");
    let up = seen.upstream_saw.unwrap();
    assert!(up.header_values("x-tenant-identity").is_empty(), "{up:?}");
}

#[test]
fn a_trusted_forwarder_passes_a_well_formed_identity_through() {
    let envoy = strict();
    let seen = envoy
        .send(&from(envoy, SHARED).header("x-tenant-identity", ALICE))
        .unwrap();
    assert!(seen.allowed(), "{seen:?}");
    assert_eq!(
        seen.upstream_saw
            .unwrap()
            .header_values("x-tenant-identity"),
        vec![ALICE]
    );
}

#[test]
fn without_a_certificate_the_request_is_unauthenticated_and_denied() {
    let envoy = strict();
    let before = envoy
        .counter("meshfence.unauthenticated")
        .unwrap()
        .unwrap_or(0);
    let seen = envoy
        .send(
            &Probe::get("/data")
                .on(Listener::Permissive)
                .header("x-tenant-identity", ALICE),
        )
        .unwrap();
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (403, DENY_BODY),
        "{seen:?}"
    );
    assert!(seen.upstream_saw.is_none());
    let after = envoy
        .counter("meshfence.unauthenticated")
        .unwrap()
        .unwrap_or(0);
    assert!(after > before, "unauthenticated {before} -> {after}");
}

#[test]
fn a_forwarder_cannot_pass_a_malformed_identity() {
    let envoy = strict();
    let seen = envoy
        .send(&from(envoy, SHARED).header("x-tenant-identity", "tenant-a"))
        .unwrap();
    // Either refused, or the header is replaced by the forwarder's own
    // verified identity; never passed through as is.
    if seen.allowed() {
        let up = seen.upstream_saw.unwrap();
        assert!(
            !up.header_values("x-tenant-identity").contains(&"tenant-a"),
            "{up:?}"
        );
    } else {
        assert!(seen.denied(), "{seen:?}");
    }
}

#[test]
fn odd_certificates_never_pass_as_an_allowed_caller() {
    let envoy = strict();
    // A non-SPIFFE URI that ends like Alice's, and a certificate without URI SAN.
    for identity in [
        Identity::Uri("https://cluster.local/ns/tenant-a/sa/app".into()),
        Identity::NoUriSan,
    ] {
        let cert = envoy.caller(identity.clone()).unwrap();
        let seen = envoy
            .send(
                &Probe::get("/data")
                    .from(cert)
                    .header("x-tenant-identity", ALICE),
            )
            .unwrap();
        assert_eq!(seen.status, 403, "{identity:?}: {seen:?}");
        assert!(seen.upstream_saw.is_none());
    }
    // Alice's ID second behind another URI: Envoy reports the first only.
    let cert = envoy
        .caller(Identity::Uris(vec![BOB.into(), ALICE.into()]))
        .unwrap();
    let seen = envoy.send(&Probe::get("/data").from(cert)).unwrap();
    assert_eq!(seen.status, 403, "{seen:?}");
}

#[test]
fn an_audited_path_is_counted_and_allowed() {
    let envoy = strict();
    let before = envoy.counter("meshfence.audited").unwrap().unwrap_or(0);
    let seen = envoy
        .send(&Probe::get("/audited/x").from(envoy.caller(ALICE).unwrap()))
        .unwrap();
    assert!(seen.allowed(), "{seen:?}");
    let after = envoy.counter("meshfence.audited").unwrap();
    assert_eq!(
        after,
        Some(before + 1),
        "stats: {:?}",
        envoy
            .stats()
            .unwrap()
            .iter()
            .filter(|(n, _)| n.contains("meshfence"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_dry_run_deny_is_counted_and_not_enforced() {
    let envoy = strict();
    let before = envoy
        .counter("meshfence.dry_run_would_deny")
        .unwrap()
        .unwrap_or(0);
    let seen = envoy
        .send(&Probe::get("/shadow/x").from(envoy.caller(ALICE).unwrap()))
        .unwrap();
    assert!(seen.allowed(), "{seen:?}");
    let after = envoy.counter("meshfence.dry_run_would_deny").unwrap();
    assert!(
        after.unwrap_or(0) > before,
        "dry_run_would_deny {before} -> {after:?}"
    );
}

/// Path tricks around DENY `/api/admin` (DESIGN §8). Each must be denied and
/// never reach the upstream, whoever normalizes it.
const ADMIN_TRICKS: &[&str] = &[
    "/api//admin",
    "/api/admin;x=1",
    "/api/admin%2Fusers",
    "/api%2Fadmin",
    "/api%2fadmin",
    "/api/x/../admin",
    "/api/./admin",
    "/api/%2e%2e/api/admin",
    "/api%5Cadmin",
    "/api\\admin",
    "/api/admin#frag",
    "/api/admin?x=/public",
    "//api/admin",
];

fn assert_tricks_denied(normalization: Normalization) {
    let envoy = envoy(normalization);
    let alice = envoy.caller(ALICE).unwrap();
    let mut failures = Vec::new();
    for path in ADMIN_TRICKS {
        let seen = envoy.send(&Probe::get(path).from(alice.clone())).unwrap();
        if !seen.denied() {
            failures.push(format!(
                "{path}: {} upstream saw {:?}",
                seen.status,
                seen.upstream_saw.map(|s| s.path)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{normalization:?} let through:\n{}",
        failures.join("\n")
    );
}

#[test]
fn path_tricks_are_denied_under_the_shipped_normalization() {
    assert_tricks_denied(Normalization::Strict);
}

#[test]
fn path_tricks_are_denied_under_istio_default_normalization() {
    assert_tricks_denied(Normalization::IstioDefault);
}

#[test]
fn letter_case_is_not_normalized_by_anyone() {
    // Istio paths are case-sensitive and so is the filter: `/API/admin` is not
    // `/api/admin`, and Envoy forwards it as sent. An upstream that reads
    // paths case-insensitively needs a policy that says so (a known gap,
    // shown here so nobody mistakes it for protection).
    for normalization in [Normalization::Strict, Normalization::IstioDefault] {
        let envoy = envoy(normalization);
        let seen = envoy
            .send(&Probe::get("/API/admin/../admin").from(envoy.caller(ALICE).unwrap()))
            .unwrap();
        assert!(seen.allowed(), "{normalization:?}: {seen:?}");
        assert_eq!(seen.upstream_saw.unwrap().path, "/API/admin");
    }
}

#[test]
fn the_filter_refuses_what_istio_default_normalization_leaves() {
    // These reach the filter unchanged under BASE normalization; the strict
    // path policy answers them itself with a 400-class status (not the
    // upstream, not a 2xx), even for an allowed caller on an allowed path.
    let envoy = envoy(Normalization::IstioDefault);
    let alice = envoy.caller(ALICE).unwrap();
    for path in ["/data//x", "/data%2Fx", "/data%5Cx", "/data;x=1"] {
        let seen = envoy.send(&Probe::get(path).from(alice.clone())).unwrap();
        assert!((400..500).contains(&seen.status), "{path}: {seen:?}");
        assert!(seen.upstream_saw.is_none(), "{path}");
    }
    // ...and a clean path still goes through.
    assert!(envoy
        .send(&Probe::get("/data/x").from(alice))
        .unwrap()
        .allowed());
}

#[test]
fn a_raw_bytes_configuration_takes_the_workload_from_node_metadata() {
    // Istio's way: the ruleset alone in the configuration, the workload in
    // node metadata (NAMESPACE, LABELS).
    let envoy = Envoy::start(config_bytes(&[ALICE])).unwrap_or_else(|e| panic!("{e}"));
    assert!(envoy.send(&from(&envoy, ALICE)).unwrap().allowed());
    assert_eq!(envoy.send(&from(&envoy, BOB)).unwrap().status, 403);
}

#[test]
fn json_plugin_configuration_with_the_workload_in_it_works_too() {
    // Node metadata names another namespace; the JSON configuration's
    // workload overrides it, as DESIGN §6 says for plain Envoy.
    let mut c = config(&[ALICE]);
    c.plugin_config = PluginConfigFormat::Json;
    c.node_workload = Some(Workload {
        namespace: "elsewhere".into(),
        labels: vec![("app".into(), "other".into())],
    });
    let envoy = Envoy::start(c).unwrap_or_else(|e| panic!("{e}"));
    assert!(envoy.send(&from(&envoy, ALICE)).unwrap().allowed());
    assert_eq!(envoy.send(&from(&envoy, BOB)).unwrap().status, 403);
}
