//! The host itself, on tiny modules: a trap is an `Err`, never a panic of the
//! test; an import the host does not implement answers `Unimplemented`.

mod host_support;

use wasm_test_harness::host::{interface, status, Host, HostError, RequestSpec};

/// A module with the ABI's exports; `configure` and `headers` are the bodies
/// of `proxy_on_configure` and `proxy_on_request_headers`.
fn module(imports: &str, configure: &str, headers: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 1024))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    global.get $next
    local.set $p
    global.get $next
    local.get $n
    i32.add
    global.set $next
    local.get $p)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure})
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {headers})
)"#
    );
    wat::parse_str(text).expect("valid wat")
}

#[test]
fn a_trap_is_an_error_and_poisons_the_vm() {
    let wasm = module("", "unreachable", "i32.const 0");
    let mut h = Host::from_bytes(&wasm).unwrap();
    match h.configure(b"x") {
        Err(HostError::Trap(msg)) => assert!(msg.contains("proxy_on_configure"), "{msg}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(h.trapped());
    assert_eq!(h.request(&RequestSpec::get("/")), Err(HostError::Poisoned));
}

#[test]
fn a_runaway_loop_runs_out_of_fuel() {
    let wasm = module("", "(loop $l (br $l)) i32.const 1", "i32.const 0");
    let mut h = Host::from_bytes(&wasm).unwrap();
    h.set_fuel_per_call(10_000_000);
    assert!(matches!(h.configure(b"x"), Err(HostError::Trap(_))));
}

#[test]
fn unknown_imports_answer_unimplemented() {
    let wasm = module(
        r#"(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))"#,
        "i32.const 0 i32.const 0 i32.const 0 i32.const 0 i32.const 0 i32.const 0 i32.const 0 i32.const 0 i32.const 0 i32.const 0 call $call",
        "i32.const 0 i32.const 0 i32.const 0 i32.const 0 call $w",
    );
    let mut h = Host::from_bytes(&wasm).unwrap();
    // proxy_on_configure returns the status: 12 is non-zero, i.e. "true".
    assert_eq!(h.configure(b"x"), Ok(status::UNIMPLEMENTED != 0));
    let out = h.request(&RequestSpec::get("/")).unwrap();
    assert_eq!(out.host_calls, ["wasi_snapshot_preview1.fd_write"]);
    assert_eq!(
        out.action,
        wasm_test_harness::host::Action::Other(status::UNIMPLEMENTED as i32)
    );
}

#[test]
fn a_module_that_is_not_wasm_is_a_load_error() {
    assert!(matches!(
        Host::from_bytes(b"\0asm garbage"),
        Err(HostError::Load(_))
    ));
    assert!(matches!(
        Host::load("/nonexistent.wasm"),
        Err(HostError::Load(_))
    ));
}

/// What Envoy's proxy-wasm host needs from the filter, and every host call the
/// filter can make (all of them exist in Envoy's ABI 0.2.1 host).
#[test]
fn the_filter_module_interface() {
    let (imports, exports) = interface(host_support::wasm()).unwrap();
    for name in [
        "memory",
        "malloc",
        "proxy_abi_version_0_2_1",
        "proxy_on_context_create",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_request_headers",
        "proxy_on_done",
        "proxy_on_delete",
    ] {
        assert!(
            exports.iter().any(|e| e == name),
            "{name} not exported: {exports:?}"
        );
    }
    let mut imports = imports;
    imports.sort();
    assert_eq!(
        imports,
        [
            "env.proxy_add_header_map_value",
            "env.proxy_define_metric",
            "env.proxy_get_buffer_bytes",
            "env.proxy_get_header_map_pairs",
            "env.proxy_get_property",
            "env.proxy_increment_metric",
            "env.proxy_log",
            "env.proxy_remove_header_map_value",
            "env.proxy_replace_header_map_value",
            "env.proxy_send_local_response",
        ]
    );
}
