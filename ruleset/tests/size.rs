//! How many bytes a tenant costs: the shared-collector example of the seeds
//! (one ALLOW rule per tenant) at 10, 1,000 and 10,000 tenants.

// proptest and std: native only (the wasm32 run covers the unit tests).
#![cfg(not(target_arch = "wasm32"))]

use meshfence_ruleset::format::{from_bytes, layout, to_bytes};
use meshfence_ruleset::ir::*;

/// `POST /ingest/<tenant>/*` with `x-tenant-id: <tenant>` from the tenant's
/// namespace, as the compiler lowers an Istio rule per tenant.
fn tenant_rule(t: &str) -> Rule {
    Rule {
        from: vec![vec![Clause::new(
            Attribute::PeerUri,
            vec![ValueMatch::Str(StrMatch::pattern(vec![
                PatternPiece::AnyRun,
                PatternPiece::Literal(format!("/ns/{t}/")),
                PatternPiece::AnyRun,
            ]))],
        )]],
        to: vec![vec![
            Clause::new(
                Attribute::Method,
                vec![ValueMatch::Str(StrMatch::exact("POST"))],
            ),
            Clause::new(
                Attribute::Path,
                vec![ValueMatch::Str(StrMatch::prefix(format!("/ingest/{t}/")))],
            ),
        ]],
        when: vec![Clause::new(
            Attribute::Header("x-tenant-id".into()),
            vec![ValueMatch::Str(StrMatch::exact(t))],
        )],
    }
}

fn collector(tenants: usize) -> Ruleset {
    Ruleset {
        mesh: MeshSettings::default(),
        policies: vec![Policy {
            name: "log-collector".into(),
            namespace: "shared".into(),
            action: Action::Allow,
            dry_run: false,
            selector: vec![("app".into(), "collector".into())],
            rules: (0..tenants)
                .map(|i| tenant_rule(&format!("tenant-{i:05}")))
                .collect(),
        }],
    }
}

#[test]
fn bytes_per_tenant() {
    let base = to_bytes(&collector(0)).len();
    for n in [10usize, 1_000, 10_000] {
        let rs = collector(n);
        let bytes = to_bytes(&rs);
        let per = (bytes.len() - base) as f64 / n as f64;
        println!(
            "{n:>6} tenants: {:>9} bytes, {per:.1} bytes per tenant",
            bytes.len()
        );
        if n == 10_000 {
            for s in layout(&bytes).unwrap().sections {
                println!(
                    "    {:<13} {:>8} bytes {:>7} records",
                    s.name(),
                    s.len,
                    s.records
                );
            }
        }
        assert!(per < 400.0, "{per} bytes per tenant");
        assert_eq!(from_bytes(&bytes).as_ref(), Ok(&rs));
    }
}
