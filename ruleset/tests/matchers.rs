//! Each matcher of `matching.rs` against the reference interpreter's naive
//! backtracking version, on a small alphabet where every corner case (slashes,
//! repeats, case, newlines) comes up often.

// proptest and std: native only (the wasm32 run covers the unit tests).
#![cfg(not(target_arch = "wasm32"))]

use meshfence_ruleset::ir::{Cidr, PatternPiece, StrMatch};
use meshfence_ruleset::matching::{service_account_matches, template_matches};
use meshfence_ruleset::reference;
use proptest::prelude::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(&["a", "b", "A", "/", "ab", "\n"][..]),
        0..max,
    )
    .prop_map(|v| v.concat())
}

fn literal() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&["a", "b", "B", "/"][..]), 1..4)
        .prop_map(|v| v.concat())
}

/// Any valid pattern: literals (adjacent ones included) and wildcards, never
/// two wildcards in a row.
fn pattern() -> impl Strategy<Value = Vec<PatternPiece>> {
    let piece = prop_oneof![
        3 => literal().prop_map(PatternPiece::Literal),
        1 => Just(PatternPiece::AnyRun),
        1 => Just(PatternPiece::AnyNonEmptyRun),
        1 => Just(PatternPiece::SegmentRun),
    ];
    prop::collection::vec(piece, 0..7).prop_map(|pieces| {
        let mut out: Vec<PatternPiece> = Vec::new();
        for p in pieces {
            let wild = !matches!(p, PatternPiece::Literal(_));
            let prev_wild = out
                .last()
                .is_some_and(|q| !matches!(q, PatternPiece::Literal(_)));
            if !(wild && prev_wild) {
                out.push(p);
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn patterns(p in pattern(), v in text(10), ci in any::<bool>()) {
        let m = StrMatch { kind: meshfence_ruleset::ir::StrMatchKind::Pattern(p.clone()), ignore_case: ci };
        prop_assert_eq!(
            m.matches(&v),
            reference::pattern(&p, v.as_bytes(), ci),
            "pattern {:?} on {:?} (ignore case: {})", p, v, ci
        );
    }

    #[test]
    fn service_accounts(
        uri in (prop::sample::select(&["spiffe://", "spiffe://td", "x://"][..]), text(6), prop::sample::select(&["/ns/a/sa/b", "/ns/a/x/sa/b", "/ns/a/sa/b/", "/ns/a/sa/b/c", "/ns//sa/b", "/ns/a/ns/a/sa/b"][..]), text(3))
            .prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}")),
        ns in prop::sample::select(&["a", "b", "a/b"][..]),
        sa in prop::sample::select(&["b", "a", "sa"][..]),
    ) {
        prop_assert_eq!(
            service_account_matches(&uri, ns, sa),
            reference::service_account(&uri, ns, sa),
            "service account {}/{} on {:?}", ns, sa, uri
        );
    }

    #[test]
    fn templates(
        t in prop::collection::vec(prop::sample::select(&["/", "a", "*", "**", "b"][..]), 0..8).prop_map(|v| v.concat()),
        p in prop::collection::vec(prop::sample::select(&["/", "a", "b", "ab", "?", "*"][..]), 0..8).prop_map(|v| v.concat()),
    ) {
        prop_assert_eq!(
            template_matches(&t, &p),
            reference::template(t.as_bytes(), p.as_bytes()),
            "template {:?} on {:?}", t, p
        );
    }

    #[test]
    fn cidrs(address in any::<[u8; 16]>(), prefix_len in 0u8..=128, ip in any::<[u8; 16]>(), keep in 0usize..=16) {
        // Share a prefix often, so that both outcomes come up.
        let mut ip = ip;
        ip[..keep].copy_from_slice(&address[..keep]);
        let c = Cidr { address, prefix_len };
        prop_assert_eq!(c.contains(&ip), reference::cidr(&c, &ip));
    }
}
