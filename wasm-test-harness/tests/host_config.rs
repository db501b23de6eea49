//! Every bad configuration is refused in `on_configure` (false, an error log,
//! the config-rejected counter), never a trap; and a refused configuration
//! never leaves the filter open.

mod host_support;

use base64::Engine as _;
use host_support::*;
use meshfence_ruleset::format::to_bytes;
use wasm_test_harness::host::{Host, RequestSpec};

/// Configures a fresh host (node metadata set) and checks the refusal.
fn refused(config: &[u8]) -> Host {
    let mut h = Host::from_bytes(wasm()).unwrap();
    h.set_node_workload(WORKLOAD_NS, WORKLOAD_LABELS);
    let ok = h.configure(config).expect("configure must not trap");
    assert!(
        !ok,
        "accepted: {:?}",
        String::from_utf8_lossy(&config[..config.len().min(80)])
    );
    assert_eq!(h.metric("meshfence.config_rejected"), Some(1));
    assert!(
        h.logs()
            .iter()
            .any(|l| l.level == 4 && l.message.contains("configuration rejected")),
        "{:?}",
        h.logs()
    );
    // Even if a host went on, nothing gets through an unconfigured filter.
    let out = h.request(&RequestSpec::get("/health").from(ALPHA)).unwrap();
    assert_eq!(out.status(), Some(403), "{out:?}");
    h
}

fn good() -> Vec<u8> {
    to_bytes(&ruleset())
}

fn with_word(mut b: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    b
}

fn log_text(h: &Host) -> String {
    h.logs()
        .iter()
        .map(|l| l.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn bad_label() {
    let mut b = good();
    b[0] = b'M';
    let h = refused(&b);
    assert!(
        log_text(&h).contains("does not validate"),
        "{}",
        log_text(&h)
    );
    refused(b"not a ruleset at all");
    refused(b"[1, 2, 3]");
}

#[test]
fn newer_and_unknown_versions() {
    refused(&with_word(good(), 24, 2));
    refused(&with_word(good(), 24, 0));
}

#[test]
fn checksum_mismatch() {
    let mut b = good();
    let last = b.len() - 1;
    b[last] ^= 0x55;
    refused(&b);
    refused(&with_word(good(), 36, 0xdead_beef));
}

#[test]
fn every_truncation() {
    let b = good();
    let mut h = Host::from_bytes(wasm()).unwrap();
    h.set_node_workload(WORKLOAD_NS, WORKLOAD_LABELS);
    for n in 1..b.len() {
        assert!(
            !h.configure(&b[..n]).expect("no trap"),
            "{n} bytes accepted"
        );
    }
    assert_eq!(
        h.metric("meshfence.config_rejected"),
        Some(b.len() as u64 - 1)
    );
    // A longer one (trailing garbage) is refused too.
    let mut long = b.clone();
    long.extend_from_slice(&[0; 4]);
    assert!(!h.configure(&long).unwrap());
    // The host is still healthy: a good configuration loads.
    assert!(h.configure(&b).unwrap());
}

#[test]
fn empty_configuration() {
    refused(b"");
}

#[test]
fn json_garbage() {
    for bad in [
        &b"{"[..],
        b"{}",
        b"{\"ruleset\": 5}",
        b"{\"ruleset\": \"QUJD\"",
        b"{\"ruleset\": \"QUJD\"} trailing",
        b"{\"ruleset\": \"QUJD\", \"ruleset\": \"QUJD\"}",
        b"{\"ruleset\": \"\\ud800\"}",
        b"{\"ruleset\": \"\xff\"}",
        b" \n {\"workload\": {\"namespace\": \"x\"}}",
    ] {
        refused(bad);
    }
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(50_000), "]".repeat(50_000));
    refused(deep.as_bytes());
}

#[test]
fn base64_garbage() {
    for bad in ["!!!!", "QUJD=QUJD", "Q", "not base64 at all"] {
        refused(format!(r#"{{"ruleset": "{bad}"}}"#).as_bytes());
    }
    // Valid base64 of bytes that are not a ruleset.
    let b64 = base64::engine::general_purpose::STANDARD.encode(b"hello");
    refused(format!(r#"{{"ruleset": "{b64}"}}"#).as_bytes());
}

#[test]
fn json_workload_errors() {
    let b = good();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&b);
    refused(format!(r#"{{"ruleset": "{b64}", "workload": {{"namespace": ""}}}}"#).as_bytes());
    refused(format!(r#"{{"ruleset": "{b64}", "workload": {{"labels": {{}}}}}}"#).as_bytes());
    refused(
        format!(
            r#"{{"ruleset": "{b64}", "workload": {{"namespace": "a", "labels": {{"k": 1}}}}}}"#
        )
        .as_bytes(),
    );
    refused(
        format!(r#"{{"ruleset": "{b64}", "workload": {{"namespace": "a", "lables": {{}}}}}}"#)
            .as_bytes(),
    );
    // Unknown top-level fields are room for later versions: accepted.
    let mut h = Host::from_bytes(wasm()).unwrap();
    let ok = format!(
        r#"{{"future": [1, {{"x": null}}], "ruleset": "{b64}", "workload": {{"namespace": "a"}}}}"#
    );
    assert!(h.configure(ok.as_bytes()).unwrap(), "{:?}", h.logs());
}

#[test]
fn no_workload_anywhere() {
    // Raw bytes and no node metadata: nothing says which policies apply.
    let mut h = Host::from_bytes(wasm()).unwrap();
    assert!(!h.configure(&good()).unwrap());
    assert!(log_text(&h).contains("NAMESPACE"), "{}", log_text(&h));
    // LABELS that are not a string map.
    let mut h = Host::from_bytes(wasm()).unwrap();
    h.set_property(&["xds", "node", "metadata", "NAMESPACE"], WORKLOAD_NS);
    h.set_property(
        &["xds", "node", "metadata", "LABELS"],
        vec![9u8, 0, 0, 0, 1],
    );
    assert!(!h.configure(&good()).unwrap());
}

#[test]
fn a_refused_update_keeps_the_rules_in_force() {
    let mut h = host(Form::Raw);
    let mut bad = good();
    bad[60] ^= 1;
    assert!(!h.configure(&bad).unwrap());
    let out = h
        .request(&RequestSpec::get("/api/admin").from(ALPHA))
        .unwrap();
    assert_eq!(out.status(), Some(403));
    let out = h
        .request(&RequestSpec::get("/api/items").from(ALPHA))
        .unwrap();
    assert!(out.allowed());
}

#[test]
fn json_accepts_unpadded_and_url_safe_base64() {
    let b = good();
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        let b64 = engine.encode(&b);
        let mut h = Host::from_bytes(wasm()).unwrap();
        let config = format!(
            r#"{{"ruleset": "{b64}", "workload": {{"namespace": "tenant-alpha", "labels": {{"app": "api"}}}}}}"#
        );
        assert!(h.configure(config.as_bytes()).unwrap(), "{:?}", h.logs());
    }
}
