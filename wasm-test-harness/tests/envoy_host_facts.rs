//! Facts about Envoy 1.40's proxy-wasm host that the filter relies on
//! (DESIGN §10), measured with a tiny hand-written module rather than the
//! filter, so a failure says "Envoy changed", not "the filter broke".
#![cfg(feature = "envoy")]

use wasm_test_harness::envoy::{Envoy, EnvoyConfig, Listener, Probe, Workload};

/// Logs `probe I rc=R value=V` for each property it reads: 0-2 in
/// `on_configure`, 0-3 per request.
const PROBE_WAT: &str = r#"
(module
  (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 0) "node\00metadata\00NAMESPACE")
  (data (i32.const 100) "xds\00node\00metadata\00NAMESPACE")
  (data (i32.const 200) "xds\00node\00id")
  (data (i32.const 300) "connection\00uri_san_peer_certificate")
  (data (i32.const 1000) "probe X rc=Y value=")
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func $probe (param $i i32) (param $p i32) (param $n i32) (local $rc i32) (local $vn i32)
    (local.set $rc (call $get (local.get $p) (local.get $n) (i32.const 900) (i32.const 904)))
    (i32.store8 (i32.const 1006) (i32.add (i32.const 48) (local.get $i)))
    (i32.store8 (i32.const 1011) (i32.add (i32.const 48) (local.get $rc)))
    (local.set $vn (i32.const 0))
    (if (i32.eqz (local.get $rc)) (then
      (local.set $vn (i32.load (i32.const 904)))
      (memory.copy (i32.const 1019) (i32.load (i32.const 900)) (local.get $vn))))
    (drop (call $log (i32.const 2) (i32.const 1000) (i32.add (i32.const 19) (local.get $vn)))))
  (func $node (call $probe (i32.const 0) (i32.const 0) (i32.const 23))
    (call $probe (i32.const 1) (i32.const 100) (i32.const 27))
    (call $probe (i32.const 2) (i32.const 200) (i32.const 11)))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (call $node) i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $node)
    (call $probe (i32.const 3) (i32.const 300) (i32.const 35))
    i32.const 0)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func (export "proxy_on_delete") (param i32))
)"#;

#[test]
fn node_metadata_is_under_xds_and_the_peer_uri_san_is_a_plain_string() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("probe.wasm");
    std::fs::write(&wasm, wat::parse_str(PROBE_WAT).unwrap()).unwrap();
    let mut config = EnvoyConfig::with_filter(wasm, b"unused".to_vec());
    config.workload = Workload {
        namespace: "backend".into(),
        labels: vec![("app".into(), "api".into())],
    };
    let envoy = Envoy::start(config).unwrap_or_else(|e| panic!("{e}"));
    let count = |needle: &str| envoy.logs().lines().filter(|l| l.contains(needle)).count();

    // In on_configure (and per request): `node.*` is not found; the node is
    // `xds.node`, so Istio's NAMESPACE is `xds.node.metadata.NAMESPACE`.
    assert!(
        count("probe 0 rc=1 value=") > 0,
        "node.metadata.NAMESPACE:\n{}",
        envoy.logs()
    );
    assert!(
        count("probe 1 rc=0 value=backend") > 0,
        "xds.node.metadata.NAMESPACE"
    );
    assert!(
        count("probe 2 rc=0 value=meshfence-local") > 0,
        "xds.node.id"
    );

    let alice = "spiffe://cluster.local/ns/tenant-a/sa/app";
    let seen = envoy
        .send(&Probe::get("/").from(envoy.caller(alice).unwrap()))
        .unwrap();
    assert!(seen.allowed(), "{seen:?}");
    assert_eq!(
        count(&format!("probe 3 rc=0 value={alice}")),
        1,
        "the URI SAN, as is"
    );
    assert!(
        count("probe 1 rc=0 value=backend") >= 2,
        "xds.node per request too"
    );

    // Without a client certificate: not found.
    let seen = envoy
        .send(&Probe::get("/").on(Listener::Permissive))
        .unwrap();
    assert!(seen.allowed(), "{seen:?}");
    assert_eq!(
        count("probe 3 rc=1 value="),
        1,
        "no certificate, no URI SAN"
    );
}
