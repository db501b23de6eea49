//! The identity header trust model (DESIGN §4) through the real `.wasm`.

mod host_support;

use host_support::*;
use meshfence_ruleset::SpoofPolicy;
use wasm_test_harness::host::{Mutation, RequestSpec};

#[test]
fn no_certificate_is_unauthenticated_and_loses_any_identity_header() {
    let mut h = host(Form::Json);
    let out = h
        .request(&RequestSpec::get("/health").header(IDENTITY, ALPHA))
        .unwrap();
    assert!(out.allowed(), "{out:?}");
    assert!(out.header_values(IDENTITY).is_empty(), "{out:?}");
    assert_eq!(out.mutations, [Mutation::Remove(IDENTITY.into())]);
    // The mTLS-only rule 0 never matches a plaintext request.
    let out = h.request(&RequestSpec::get("/api/x")).unwrap();
    assert_eq!(out.status(), Some(403));
    assert_eq!(h.metric("meshfence.unauthenticated"), Some(2));
    assert_eq!(h.metric("meshfence.identity_stripped"), Some(1));
}

#[test]
fn non_spiffe_san_gets_no_identity_header() {
    let mut h = host(Form::Json);
    let out = h
        .request(
            &RequestSpec::get("/health")
                .from("https://tenant-alpha.example/ns/tenant-alpha/sa/curl")
                .header(IDENTITY, ALPHA),
        )
        .unwrap();
    assert!(out.allowed());
    assert!(out.header_values(IDENTITY).is_empty(), "{out:?}");
    // Not unauthenticated: it has a certificate with a URI SAN.
    assert_eq!(h.metric("meshfence.unauthenticated"), Some(0));
    // A SAN that merely contains /ns/tenant-alpha/ still matches istiod's
    // namespace regex, exactly as under Istio.
    let out = h
        .request(&RequestSpec::get("/api/x").from("https://x/ns/tenant-alpha/sa/y"))
        .unwrap();
    assert!(out.allowed());
    assert!(out.header_values(IDENTITY).is_empty());
}

#[test]
fn foreign_trust_domain_is_not_the_tenant() {
    let mut h = host(Form::Json);
    let foreign = "spiffe://evil.example/ns/tenant-beta/sa/curl";
    let out = h
        .request(&RequestSpec::get("/api/x").from(foreign))
        .unwrap();
    assert_eq!(out.status(), Some(403), "{out:?}");
    // Its verified identity (the trust bundle vouched for it) is what the
    // upstream would see on a path open to anyone.
    let out = h
        .request(&RequestSpec::get("/health").from(foreign))
        .unwrap();
    assert!(out.allowed());
    assert_eq!(out.header_values(IDENTITY), [foreign]);
}

#[test]
fn spoofed_copies_in_any_letter_case_are_all_replaced() {
    let mut h = host(Form::Raw);
    let out = h
        .request(
            &RequestSpec::get("/api/x")
                .from(ALPHA)
                .header("X-Tenant-Identity", BETA)
                .header("x-TENANT-identity", GATEWAY)
                .header("x-tenant-identity", "forged"),
        )
        .unwrap();
    assert!(out.allowed(), "{out:?}");
    assert_eq!(out.header_values(IDENTITY), [ALPHA]);
    assert_eq!(h.metric("meshfence.identity_stripped"), Some(1));
}

#[test]
fn a_first_copy_equal_to_the_truth_does_not_smuggle_a_second() {
    let mut h = host(Form::Raw);
    let out = h
        .request(
            &RequestSpec::get("/api/x")
                .from(ALPHA)
                .header(IDENTITY, ALPHA)
                .header("X-Tenant-Identity", BETA),
        )
        .unwrap();
    assert!(out.allowed());
    assert_eq!(out.header_values(IDENTITY), [ALPHA], "{out:?}");
}

#[test]
fn a_single_correct_copy_is_left_alone() {
    let mut h = host(Form::Raw);
    let out = h
        .request(
            &RequestSpec::get("/api/x")
                .from(ALPHA)
                .header(IDENTITY, ALPHA),
        )
        .unwrap();
    assert!(out.allowed());
    assert!(out.mutations.is_empty(), "{out:?}");
    assert_eq!(h.metric("meshfence.identity_stripped"), Some(0));
}

#[test]
fn a_verified_caller_without_the_header_gets_it_set() {
    let mut h = host(Form::Raw);
    let out = h.request(&RequestSpec::get("/api/x").from(ALPHA)).unwrap();
    assert!(out.allowed());
    assert_eq!(
        out.mutations,
        [Mutation::Add(IDENTITY.into(), ALPHA.into())]
    );
}

#[test]
fn trusted_forwarder_passes_a_well_formed_value_through() {
    let mut h = host(Form::Json);
    let out = h
        .request(
            &RequestSpec::get("/ingest")
                .method("POST")
                .from(GATEWAY)
                .header(IDENTITY, ALPHA),
        )
        .unwrap();
    assert!(out.allowed(), "{out:?}");
    assert!(out.mutations.is_empty());
    assert_eq!(out.header_values(IDENTITY), [ALPHA]);
}

#[test]
fn forwarder_with_a_malformed_or_doubled_value_is_replaced_by_its_own_identity() {
    let mut h = host(Form::Json);
    for headers in [
        vec![(IDENTITY, "tenant-alpha")],
        vec![(
            IDENTITY,
            "spiffe://cluster.local/ns/tenant-alpha/sa/curl/extra",
        )],
        vec![(IDENTITY, ALPHA), ("X-Tenant-Identity", ALPHA)],
    ] {
        let mut spec = RequestSpec::get("/ingest").method("POST").from(GATEWAY);
        for (n, v) in &headers {
            spec = spec.header(n, v);
        }
        // Rule 1 needs the header to name tenant-alpha: after the rewrite it
        // names the gateway, so the request is denied.
        let out = h.request(&spec).unwrap();
        assert_eq!(out.status(), Some(403), "{headers:?}: {out:?}");
        // On a path open to all, it goes on with the forwarder's identity.
        let mut spec = RequestSpec::get("/health").from(GATEWAY);
        for (n, v) in &headers {
            spec = spec.header(n, v);
        }
        let out = h.request(&spec).unwrap();
        assert!(out.allowed());
        assert_eq!(out.header_values(IDENTITY), [GATEWAY], "{headers:?}");
    }
}

#[test]
fn spoofing_is_denied_when_the_mesh_says_so() {
    let mut rs = ruleset();
    rs.mesh.spoofed_identity = SpoofPolicy::Deny;
    let mut h = host_with(&rs, Form::Raw);
    let out = h
        .request(
            &RequestSpec::get("/api/x")
                .from(ALPHA)
                .header(IDENTITY, BETA),
        )
        .unwrap();
    assert_eq!(out.status(), Some(403));
    assert!(
        out.logs.iter().any(|l| l.message.contains("spoofed")),
        "{:?}",
        out.logs
    );
    let out = h.request(&RequestSpec::get("/api/x").from(ALPHA)).unwrap();
    assert!(out.allowed());
}

#[test]
fn non_utf8_san_fails_closed() {
    let mut h = host(Form::Json);
    let mut spec = RequestSpec::get("/health");
    spec.san = Some(b"spiffe://cluster.local/ns/tenant-alpha/sa/\xff".to_vec());
    let out = h.request(&spec).unwrap();
    assert_eq!(out.status(), Some(403));
    assert!(!h.trapped());
}

/// DESIGN §4: only a trusted forwarder of this mesh may pass the header on.
/// The evaluator (`identity::sanitize`) compares the forwarder's namespace
/// only, so under a federated trust bundle a workload of another trust domain
/// in a namespace named like a forwarder could pass any tenant's identity.
#[test]
fn a_forwarder_of_another_trust_domain_is_not_trusted() {
    let mut h = host(Form::Json);
    let foreign_gateway = "spiffe://evil.example/ns/shared-services/sa/gateway";
    let out = h
        .request(
            &RequestSpec::get("/health")
                .from(foreign_gateway)
                .header(IDENTITY, ALPHA),
        )
        .unwrap();
    assert_eq!(out.header_values(IDENTITY), [foreign_gateway], "{out:?}");
}
