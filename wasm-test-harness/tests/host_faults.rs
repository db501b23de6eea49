//! A host call that fails (any status the ABI allows) never traps the filter
//! and never lets a request through unchecked.

mod host_support;

use host_support::*;
use wasm_test_harness::host::{status, Action, Host, RequestSpec};

#[test]
fn failing_reads_deny() {
    for call in ["proxy_get_property", "proxy_get_header_map_pairs"] {
        for code in [
            status::NOT_FOUND,
            status::BAD_ARGUMENT,
            status::INTERNAL_FAILURE,
            status::UNIMPLEMENTED,
            77,
        ] {
            let mut h = host(Form::Json);
            h.fail_call(call, code);
            let out = h.request(&RequestSpec::get("/health").from(ALPHA)).unwrap();
            // A missing SAN property (NotFound) is a plaintext request, which
            // /health allows; every other failure denies.
            if call == "proxy_get_property" && code == status::NOT_FOUND {
                assert!(out.allowed(), "{call} {code}: {out:?}");
            } else {
                assert_eq!(out.action, Action::Pause, "{call} {code}");
                assert!(!out.allowed(), "{call} {code}: {out:?}");
            }
            assert!(!h.trapped());
        }
    }
}

#[test]
fn a_failed_identity_rewrite_refuses_the_request() {
    for call in [
        "proxy_add_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_remove_header_map_value",
    ] {
        let mut h = host(Form::Raw);
        h.fail_call(call, status::BAD_ARGUMENT);
        let spec = match call {
            "proxy_add_header_map_value" => RequestSpec::get("/api/x").from(ALPHA),
            "proxy_replace_header_map_value" => RequestSpec::get("/api/x")
                .from(ALPHA)
                .header(IDENTITY, BETA),
            _ => RequestSpec::get("/health").header(IDENTITY, BETA),
        };
        let out = h.request(&spec).unwrap();
        assert_eq!(out.status(), Some(403), "{call}: {out:?}");
    }
}

#[test]
fn a_refused_local_reply_still_stops_the_request() {
    let mut h = host(Form::Json);
    h.fail_call("proxy_send_local_response", status::BAD_ARGUMENT);
    let out = h
        .request(&RequestSpec::get("/api/items").from(BETA))
        .unwrap();
    assert_eq!(out.action, Action::Pause);
    assert!(out.local_reply.is_none());
    assert!(!h.trapped());
}

#[test]
fn failing_logs_and_metrics_change_nothing() {
    let mut h = Host::from_bytes(wasm()).unwrap();
    h.fail_call("proxy_define_metric", status::INTERNAL_FAILURE);
    h.fail_call("proxy_log", status::INTERNAL_FAILURE);
    h.set_node_workload(WORKLOAD_NS, WORKLOAD_LABELS);
    assert!(h
        .configure(&meshfence_ruleset::format::to_bytes(&ruleset()))
        .unwrap());
    assert!(h
        .request(&RequestSpec::get("/api/items").from(ALPHA))
        .unwrap()
        .allowed());
    assert_eq!(
        h.request(&RequestSpec::get("/api/admin").from(ALPHA))
            .unwrap()
            .status(),
        Some(403)
    );
    assert_eq!(h.metric("meshfence.denied"), None);
}

#[test]
fn a_failed_configuration_read_is_a_refusal() {
    let mut h = Host::from_bytes(wasm()).unwrap();
    h.set_node_workload(WORKLOAD_NS, WORKLOAD_LABELS);
    h.fail_call("proxy_get_buffer_bytes", status::INTERNAL_FAILURE);
    assert!(!h
        .configure(&meshfence_ruleset::format::to_bytes(&ruleset()))
        .unwrap());
}

#[test]
fn non_utf8_request_bytes_fail_closed() {
    let mut h = host(Form::Json);
    let mut spec = RequestSpec::get("/health").from(ALPHA);
    spec.path = b"/health\xff".to_vec();
    assert_eq!(h.request(&spec).unwrap().status(), Some(403));
    let mut spec = RequestSpec::get("/health").from(ALPHA);
    spec.headers.push((IDENTITY.into(), b"\xc3\x28".to_vec()));
    assert_eq!(h.request(&spec).unwrap().status(), Some(403));
    // A header no rule reads may hold any bytes.
    let mut spec = RequestSpec::get("/health").from(ALPHA);
    spec.headers.push(("x-opaque".into(), b"\xff\xfe".to_vec()));
    assert!(h.request(&spec).unwrap().allowed());
    assert!(!h.trapped());
}

#[test]
fn many_header_copies_and_huge_values() {
    let mut h = host(Form::Raw);
    let mut spec = RequestSpec::get("/api/x").from(ALPHA);
    for i in 0..500 {
        spec = spec.header(
            if i % 2 == 0 {
                "X-Tenant-Identity"
            } else {
                IDENTITY
            },
            BETA,
        );
    }
    spec.headers.push(("x-big".into(), vec![b'a'; 1 << 20]));
    let out = h.request(&spec).unwrap();
    assert!(out.allowed());
    assert_eq!(out.header_values(IDENTITY), [ALPHA]);
}
