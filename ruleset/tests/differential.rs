//! The evaluator (`Ruleset::for_workload(..).decide(..)`) against the naive
//! reference interpreter, on generated rulesets and requests drawn from the
//! same vocabularies, so that rules do match: the test also checks that the
//! generated traffic is a healthy mix of allowed and denied requests, of
//! matching ALLOW, DENY and AUDIT rules.

// proptest and std: native only (the wasm32 run covers the unit tests).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::cell::RefCell;

use common::OwnedRequest;
use meshfence_ruleset::format::{from_bytes, to_bytes};
use meshfence_ruleset::reference;
use meshfence_ruleset::{Cause, HeaderList, Request, Ruleset, Workload};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Default, Debug)]
struct Tally {
    total: usize,
    allowed: usize,
    denied: usize,
    allowed_by_rule: usize,
    denied_by_rule: usize,
    no_allow_matched: usize,
    audited: usize,
    dry_run_would_deny: usize,
}

fn check(
    rs: &Ruleset,
    w: &(String, Vec<(String, String)>),
    r: &OwnedRequest,
    tally: &RefCell<Tally>,
) -> Result<(), TestCaseError> {
    let labels: Vec<(&str, &str)> = w.1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let workload = Workload {
        namespace: &w.0,
        labels: &labels,
    };
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let hl = HeaderList(&headers);
    let req = Request {
        peer_uri: r.peer_uri.as_deref(),
        method: &r.method,
        path: &r.path,
        host: &r.host,
        destination_port: r.port,
        source_ip: r.source_ip,
        remote_ip: r.remote_ip,
        destination_ip: r.destination_ip,
        sni: r.sni.as_deref(),
        headers: &hl,
    };
    let got = rs.for_workload(&workload).decide(&req);
    let want = reference::decide(rs, &workload, &req);
    prop_assert!(
        want.agrees_with(&got),
        "evaluator and reference disagree\n  evaluator: {:?}\n  reference: {:?}\n  workload: {:?}\n  request: {:?}",
        got, want, w, r
    );
    let mut t = tally.borrow_mut();
    t.total += 1;
    if got.allowed {
        t.allowed += 1;
    } else {
        t.denied += 1;
    }
    match got.cause {
        Cause::AllowedBy(_) => t.allowed_by_rule += 1,
        Cause::DeniedBy(_) => t.denied_by_rule += 1,
        Cause::NoAllowMatched => t.no_allow_matched += 1,
        _ => {}
    }
    t.audited += usize::from(got.audit.is_some());
    t.dry_run_would_deny += usize::from(got.dry_run.would_deny());
    Ok(())
}

#[test]
fn evaluator_agrees_with_reference() {
    let tally = RefCell::new(Tally::default());
    // PROPTEST_CASES=20000 for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let strategy = (
        common::ruleset(),
        prop::collection::vec(common::workload(), 1..4),
        prop::collection::vec(common::request(), 1..24),
    );
    runner
        .run(&strategy, |(rs, workloads, requests)| {
            // Decide over the decoded ruleset: what the filter runs.
            let rs = from_bytes(&to_bytes(&rs)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for w in &workloads {
                for r in &requests {
                    check(&rs, w, r, &tally)?;
                }
            }
            Ok(())
        })
        .unwrap();
    let t = tally.into_inner();
    println!("{t:?}");
    let frac = |n: usize| n as f64 / t.total as f64;
    assert!(frac(t.allowed) > 0.15, "too few allowed: {t:?}");
    assert!(frac(t.denied) > 0.15, "too few denied: {t:?}");
    assert!(
        frac(t.allowed_by_rule) > 0.05,
        "too few ALLOW rule matches: {t:?}"
    );
    assert!(
        frac(t.denied_by_rule) > 0.05,
        "too few DENY rule matches: {t:?}"
    );
    assert!(
        frac(t.no_allow_matched) > 0.05,
        "too few unmatched ALLOWs: {t:?}"
    );
    assert!(frac(t.audited) > 0.02, "too few audits: {t:?}");
    assert!(
        frac(t.dry_run_would_deny) > 0.02,
        "too few dry-run denials: {t:?}"
    );
}
