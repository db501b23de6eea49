//! DESIGN §10's fail-closed facts, in a real Envoy: a ruleset the filter
//! refuses stops Envoy at boot, is rejected as a listener update (the old
//! rules keep being enforced), and a good update is enforced without dropping
//! traffic. Each test runs its own Envoy: they change its rules.
#![cfg(feature = "envoy")]

mod envoy_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use envoy_common::*;
use wasm_test_harness::envoy::{Envoy, Error, Probe, PushOutcome};

fn status(envoy: &Envoy, who: &str) -> u16 {
    envoy
        .send(&Probe::get("/data").from(envoy.caller(who).unwrap()))
        .unwrap()
        .status
}

/// Rulesets the filter must refuse: garbage, a truncated one, one with a
/// flipped byte (checksum), and an empty configuration.
fn bad_rulesets() -> Vec<(&'static str, Vec<u8>)> {
    let good = ruleset_bytes(&[ALICE]);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    vec![
        ("garbage", b"not a ruleset".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("flipped byte", flipped),
        ("empty", Vec::new()),
    ]
}

#[test]
fn a_bad_ruleset_at_boot_makes_envoy_refuse_to_start() {
    // Static listeners: Envoy itself exits ("Unable to create Wasm plugin").
    for (what, bytes) in bad_rulesets().into_iter().take(2) {
        let mut c = config(&[ALICE]);
        c.lds = false;
        c.ruleset = bytes;
        match Envoy::start(c) {
            Ok(envoy) => panic!("Envoy started with a {what} ruleset:\n{}", envoy.logs()),
            Err(e @ Error::Start { .. }) => {
                let text = e.to_string();
                assert!(text.contains("exited"), "{what}: {text}");
                assert!(
                    text.contains("meshfence: configuration rejected"),
                    "{what}: the log does not say why:\n{text}"
                );
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
}

#[test]
fn a_bad_ruleset_in_the_first_listener_update_serves_nothing() {
    // Listeners through LDS: Envoy keeps running but never opens a listener
    // with a refused ruleset, so nothing is served without rules. The runner
    // reports it as a failed start, with Envoy's reason.
    let mut c = config(&[ALICE]);
    c.ruleset = b"not a ruleset".to_vec();
    match Envoy::start(c) {
        Ok(envoy) => panic!("listeners came up with a bad ruleset:\n{}", envoy.logs()),
        Err(e @ Error::Start { .. }) => {
            let text = e.to_string();
            assert!(text.contains("LDS rejected"), "{text}");
            assert!(text.contains("Unable to create Wasm plugin"), "{text}");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn a_bad_update_is_rejected_and_the_old_rules_stay_enforced() {
    let envoy = Envoy::start(config(&[ALICE])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((status(&envoy, ALICE), status(&envoy, BOB)), (200, 403));
    for (what, bytes) in bad_rulesets() {
        match envoy.push_ruleset(bytes).unwrap() {
            PushOutcome::Rejected { details } => assert!(!details.is_empty(), "{what}"),
            PushOutcome::Accepted => panic!("Envoy accepted a {what} ruleset"),
        }
        assert_eq!(
            (status(&envoy, ALICE), status(&envoy, BOB)),
            (200, 403),
            "after the {what} update the old rules must hold"
        );
    }
    assert!(envoy.exit_status().is_none(), "Envoy kept running");
}

#[test]
fn a_good_update_is_enforced_without_dropping_traffic() {
    let envoy = Arc::new(Envoy::start(config(&[ALICE])).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!((status(&envoy, ALICE), status(&envoy, BOB)), (200, 403));

    // Alice keeps calling while the rules change under her: every answer is
    // the old rules' or the new rules' decision, never a refused connection,
    // a 5xx or a request that slipped through without a decision.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (envoy, stop) = (envoy.clone(), stop.clone());
        thread::spawn(move || {
            let alice = envoy.caller(ALICE).unwrap();
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) && seen.len() < 2000 {
                let o = envoy
                    .send(&Probe::get("/data").from(alice.clone()))
                    .unwrap();
                seen.push((o.status, o.upstream_saw.is_some(), o.refused));
            }
            seen
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        envoy.push_ruleset(ruleset_bytes(&[BOB])).unwrap(),
        PushOutcome::Accepted
    );
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let seen = traffic.join().unwrap();

    assert!(seen.len() > 2, "too little traffic to tell: {seen:?}");
    for (status, reached, refused) in &seen {
        assert!(
            (*status == 200 && *reached) || (*status == 403 && !*reached),
            "during the update: {status} reached={reached} refused={refused:?}"
        );
    }
    assert_eq!(
        (status(&envoy, ALICE), status(&envoy, BOB)),
        (403, 200),
        "the new rules hold"
    );
    assert_eq!(
        seen.last().map(|s| s.0),
        Some(403),
        "the traffic ended on the new rules"
    );
}
