//! Allow, deny, audit, dry-run and the path policy through both configuration
//! forms; counters, log lines and the host calls a request costs.

mod host_support;

use host_support::*;
use meshfence_ruleset::PathPolicy;
use wasm_test_harness::host::{Action, RequestSpec};

#[test]
fn allow_and_deny_in_both_forms() {
    for form in FORMS {
        let mut h = host(form);
        let out = h
            .request(&RequestSpec::get("/api/items").from(ALPHA))
            .unwrap();
        assert!(out.allowed(), "{form:?}: {out:?}");
        assert_eq!(out.action, Action::Continue);

        // DENY wins over the matching ALLOW.
        let out = h
            .request(&RequestSpec::get("/api/admin/users").from(ALPHA))
            .unwrap();
        let reply = out.local_reply.clone().expect("a local reply");
        assert_eq!(out.action, Action::Pause);
        assert_eq!(reply.status, 403, "{form:?}");
        assert_eq!(reply.body_text(), "RBAC: access denied");

        // Another tenant: no ALLOW rule matches.
        let out = h
            .request(&RequestSpec::get("/api/items").from(BETA))
            .unwrap();
        assert_eq!(out.status(), Some(403), "{form:?}");
        // Method outside the rule.
        let out = h
            .request(&RequestSpec::get("/api/items").method("DELETE").from(ALPHA))
            .unwrap();
        assert_eq!(out.status(), Some(403), "{form:?}");

        assert_eq!(h.metric("meshfence.allowed"), Some(1), "{form:?}");
        assert_eq!(h.metric("meshfence.denied"), Some(3), "{form:?}");
    }
}

#[test]
fn audit_marks_without_changing_the_decision() {
    for form in FORMS {
        let mut h = host(form);
        let out = h
            .request(&RequestSpec::get("/api/audit/log").from(ALPHA))
            .unwrap();
        assert!(out.allowed(), "{form:?}");
        let out = h
            .request(&RequestSpec::get("/api/audit/log").from(BETA))
            .unwrap();
        assert_eq!(out.status(), Some(403));
        assert_eq!(h.metric("meshfence.audited"), Some(2), "{form:?}");
    }
}

#[test]
fn dry_run_counts_and_logs_but_never_enforces() {
    for form in FORMS {
        let mut h = host(form);
        let out = h
            .request(&RequestSpec::get("/api/shadow/x").from(ALPHA))
            .unwrap();
        assert!(out.allowed(), "{form:?}: {out:?}");
        assert_eq!(h.metric("meshfence.dry_run_would_deny"), Some(1));
        let line = out
            .logs
            .iter()
            .find(|l| l.message.contains("dry-run would deny"))
            .expect("a dry-run log line");
        assert!(
            line.message.contains("policy=tenant-alpha/shadow rule=0"),
            "{line:?}"
        );
    }
}

#[test]
fn deny_log_line_names_policy_and_rule_but_no_header_value() {
    let mut h = host(Form::Raw);
    let out = h
        .request(
            &RequestSpec::get("/api/admin?token=s3cret")
                .from(ALPHA)
                .header("authorization", "Bearer s3cret")
                .header(IDENTITY, "forged-s3cret"),
        )
        .unwrap();
    assert_eq!(out.status(), Some(403));
    let denies: Vec<_> = out
        .logs
        .iter()
        .filter(|l| l.message.contains("denied"))
        .collect();
    assert_eq!(denies.len(), 1, "{:?}", out.logs);
    let m = &denies[0].message;
    for part in [
        "workload=tenant-alpha/api",
        "principal=\"cluster.local/ns/tenant-alpha/sa/curl\"",
        "method=\"GET\"",
        "path=\"/api/admin\"",
        "policy=tenant-alpha/deny-admin rule=0",
    ] {
        assert!(m.contains(part), "{part} not in {m}");
    }
    assert!(
        !out.logs.iter().any(|l| l.message.contains("s3cret")),
        "{:?}",
        out.logs
    );
}

#[test]
fn strict_path_policy_refuses_ambiguous_paths_with_400() {
    for form in FORMS {
        let mut h = host(form);
        for path in [
            "/api//admin",
            "/api/admin%2Fx",
            "/api/./admin",
            "/api/admin;x=1",
            "/api\\admin",
        ] {
            let out = h.request(&RequestSpec::get(path).from(ALPHA)).unwrap();
            assert_eq!(out.status(), Some(400), "{form:?} {path}");
        }
        assert_eq!(h.metric("meshfence.path_refused"), Some(5));
        // The query never takes part.
        let out = h
            .request(&RequestSpec::get("/api/items?x=//..;").from(ALPHA))
            .unwrap();
        assert!(out.allowed());
    }
}

#[test]
fn istio_path_policy_matches_as_istio_does() {
    let mut rs = ruleset();
    rs.mesh.path_policy = PathPolicy::Istio;
    let mut h = host_with(&rs, Form::Json);
    // Not refused; `//` does not match the `/api/admin` prefix deny.
    let out = h
        .request(&RequestSpec::get("/api//admin").from(ALPHA))
        .unwrap();
    assert!(out.allowed(), "{out:?}");
    assert_eq!(h.metric("meshfence.path_refused"), Some(0));
}

#[test]
fn workload_selection_follows_node_labels() {
    // The same ruleset on a workload without app=api: no policy applies, so
    // everything is allowed, even what allow-api would refuse.
    let mut h = wasm_test_harness::host::Host::from_bytes(wasm()).unwrap();
    h.set_node_workload(WORKLOAD_NS, &[("app", "web")]);
    assert!(h
        .configure(&meshfence_ruleset::format::to_bytes(&ruleset()))
        .unwrap());
    let out = h
        .request(&RequestSpec::get("/api/admin").from(BETA))
        .unwrap();
    assert!(out.allowed(), "{out:?}");
    // The JSON workload overrides node metadata.
    let mut h = wasm_test_harness::host::Host::from_bytes(wasm()).unwrap();
    h.set_node_workload("elsewhere", &[]);
    let config = json_config(
        &meshfence_ruleset::format::to_bytes(&ruleset()),
        WORKLOAD_NS,
        &[("app", "api")],
    );
    assert!(h.configure(&config).unwrap());
    let out = h
        .request(&RequestSpec::get("/api/admin").from(ALPHA))
        .unwrap();
    assert_eq!(out.status(), Some(403));
}

#[test]
fn rules_on_headers_and_ports_read_them() {
    let mut rs = ruleset();
    rs.policies[0].rules.push(rule(
        vec![],
        vec![vec![meshfence_ruleset::Clause::new(
            meshfence_ruleset::Attribute::DestinationPort,
            vec![meshfence_ruleset::ValueMatch::Port(9090)],
        )]],
        vec![header("x-env", "prod")],
    ));
    let mut h = host_with(&rs, Form::Json);
    let mut spec = RequestSpec::get("/other").header("x-env", "prod");
    spec.destination_port = Some(9090);
    assert!(h.request(&spec).unwrap().allowed());
    // Two copies read as "prod,prod", as Envoy's header matcher reads them.
    let out = h.request(&spec.clone().header("X-Env", "prod")).unwrap();
    assert_eq!(out.status(), Some(403));
    spec.destination_port = Some(8080);
    assert_eq!(h.request(&spec).unwrap().status(), Some(403));
}

#[test]
fn custom_deny_status_and_body() {
    let mut rs = ruleset();
    rs.mesh.deny_status = 451;
    rs.mesh.deny_body = "tenant boundary".into();
    let mut h = host_with(&rs, Form::Raw);
    let out = h
        .request(&RequestSpec::get("/api/items").from(BETA))
        .unwrap();
    let reply = out.local_reply.unwrap();
    assert_eq!(
        (reply.status, reply.body_text().as_str()),
        (451, "tenant boundary")
    );
}

/// The cost of a request in host calls (recorded in benches/RESULTS.md).
#[test]
fn host_calls_per_request() {
    let mut h = host(Form::Json);
    // Warm up: the first calls pay for lazy compilation and heap growth.
    h.request(&RequestSpec::get("/api/items").from(ALPHA))
        .unwrap();
    h.request(&RequestSpec::get("/api/items").from(BETA))
        .unwrap();
    let allowed = h
        .request(&RequestSpec::get("/api/items").from(ALPHA))
        .unwrap();
    assert!(allowed.allowed());
    assert_eq!(
        allowed.host_calls,
        [
            "proxy_get_property",
            "proxy_get_header_map_pairs",
            "proxy_add_header_map_value",
            "proxy_increment_metric",
        ]
    );
    let denied = h
        .request(&RequestSpec::get("/api/items").from(BETA))
        .unwrap();
    assert_eq!(
        denied.host_calls,
        [
            "proxy_get_property",
            "proxy_get_header_map_pairs",
            "proxy_increment_metric",
            "proxy_log",
            "proxy_send_local_response",
        ]
    );
    println!(
        "host calls: allowed {} {:?} ({} fuel); denied {} {:?} ({} fuel)",
        allowed.host_calls.len(),
        allowed.host_calls,
        allowed.fuel,
        denied.host_calls.len(),
        denied.host_calls,
        denied.fuel
    );
}

#[test]
fn wasm_size_budget() {
    let size = wasm().len();
    println!("meshfence_filter.wasm: {size} bytes");
    assert!(size <= 200 * 1024, "{size} bytes > 200 KiB");
}

/// Envoy serializes a map property in the pairs encoding into a buffer of at
/// least 30 bytes (`serializeValue`, "prevent string inlining"): the filter
/// must accept the zero padding after the pairs.
#[test]
fn node_labels_padded_as_envoy_pads_them() {
    use wasm_test_harness::host::{pairs, Host};
    for labels in [&[][..], &[("app", "api")][..]] {
        let mut encoded = pairs::encode(labels);
        encoded.resize(encoded.len().max(30), 0);
        let mut h = Host::from_bytes(wasm()).unwrap();
        h.set_property(&["xds", "node", "metadata", "NAMESPACE"], WORKLOAD_NS);
        h.set_property(&["xds", "node", "metadata", "LABELS"], encoded);
        assert!(h
            .configure(&meshfence_ruleset::format::to_bytes(&ruleset()))
            .unwrap());
        let out = h
            .request(&RequestSpec::get("/api/admin").from(ALPHA))
            .unwrap();
        // With app=api the deny applies; without labels no policy selects it.
        assert_eq!(out.allowed(), labels.is_empty(), "{labels:?}");
    }
}

/// A mesh of 2,000 tenants, one ALLOW rule each: loads through the JSON form
/// (a ~650 KB base64 string) and still decides by the caller's namespace.
#[test]
fn many_tenants() {
    let mut rs = ruleset();
    for i in 0..2_000 {
        rs.policies.push(policy(
            WORKLOAD_NS,
            &format!("tenant-{i}"),
            meshfence_ruleset::Action::Allow,
            vec![rule(
                vec![vec![from_namespace(&format!("tenant-{i}"))]],
                vec![vec![path_prefix(&format!("/t/{i}/"))]],
                vec![],
            )],
        ));
    }
    let bytes = meshfence_ruleset::format::to_bytes(&rs);
    let config = json_config(&bytes, WORKLOAD_NS, WORKLOAD_LABELS);
    let mut h = wasm_test_harness::host::Host::from_bytes(wasm()).unwrap();
    h.set_fuel_per_call(4_000_000_000);
    assert!(h.configure(&config).unwrap(), "{:?}", h.logs());
    println!(
        "2,000 tenants: {} bytes of JSON configuration, {} units of fuel to load",
        config.len(),
        h.last_call_fuel()
    );
    let caller = |i: u32| format!("spiffe://cluster.local/ns/tenant-{i}/sa/app");
    assert!(h
        .request(&RequestSpec::get("/t/1234/x").from(&caller(1234)))
        .unwrap()
        .allowed());
    let out = h
        .request(&RequestSpec::get("/t/1234/x").from(&caller(1235)))
        .unwrap();
    assert_eq!(out.status(), Some(403));
}

/// Envoy 1.40 shows the node as `xds.node`; older Envoys as `node`. The
/// filter reads `xds.node.metadata` first and falls back to `node.metadata`.
#[test]
fn node_metadata_under_xds_or_node() {
    use wasm_test_harness::host::{pairs, Host};
    let bytes = meshfence_ruleset::format::to_bytes(&ruleset());
    // The older layout only.
    let mut h = Host::from_bytes(wasm()).unwrap();
    h.set_property(&["node", "metadata", "NAMESPACE"], WORKLOAD_NS);
    h.set_property(
        &["node", "metadata", "LABELS"],
        pairs::encode(WORKLOAD_LABELS),
    );
    assert!(h.configure(&bytes).unwrap(), "{:?}", h.logs());
    let out = h
        .request(&RequestSpec::get("/api/admin").from(ALPHA))
        .unwrap();
    assert_eq!(out.status(), Some(403));
    // Both: xds.node wins (here it selects no policy, so all is allowed).
    let mut h = Host::from_bytes(wasm()).unwrap();
    h.set_property(&["node", "metadata", "NAMESPACE"], WORKLOAD_NS);
    h.set_property(
        &["node", "metadata", "LABELS"],
        pairs::encode(WORKLOAD_LABELS),
    );
    h.set_node_workload(WORKLOAD_NS, &[("app", "web")]);
    assert!(h.configure(&bytes).unwrap());
    assert!(h
        .request(&RequestSpec::get("/api/admin").from(ALPHA))
        .unwrap()
        .allowed());
}
