//! Encode → decode gives back exactly the ruleset that was encoded, and the
//! encoding is canonical (decode → encode gives back the same bytes).

// proptest and std: native only (the wasm32 run covers the unit tests).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use meshfence_ruleset::format::{from_bytes, from_bytes_for_workload, layout, to_bytes, Section};
use meshfence_ruleset::{Ruleset, Workload};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(rs in common::ruleset()) {
        let bytes = to_bytes(&rs);
        let back = from_bytes(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&rs));
        prop_assert_eq!(to_bytes(&back.unwrap()), bytes);
    }

    #[test]
    fn loading_for_a_workload_keeps_exactly_its_policies(
        rs in common::ruleset(),
        (ns, labels) in common::workload(),
    ) {
        let labels: Vec<(&str, &str)> =
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let w = Workload { namespace: &ns, labels: &labels };
        let want = Ruleset {
            mesh: rs.mesh.clone(),
            policies: rs
                .policies
                .iter()
                .filter(|p| p.applies_to(&w, &rs.mesh.root_namespace))
                .cloned()
                .collect(),
        };
        prop_assert_eq!(from_bytes_for_workload(&to_bytes(&rs), &w), Ok(want));
    }

    #[test]
    fn layout_covers_the_whole_ruleset(rs in common::ruleset()) {
        let bytes = to_bytes(&rs);
        let l = layout(&bytes).unwrap();
        prop_assert_eq!(l.total_len, bytes.len());
        let mut at = l.header_len;
        for s in &l.sections {
            prop_assert_eq!(s.offset % 4, 0);
            prop_assert!(s.offset >= at);
            prop_assert_eq!(s.len, s.records * s.section.record_size());
            at = s.offset + s.len;
        }
        prop_assert_eq!(l.section(Section::Policies).unwrap().records, rs.policies.len());
        let rules: usize = rs.policies.iter().map(|p| p.rules.len()).sum();
        prop_assert_eq!(l.section(Section::Rules).unwrap().records, rules);
    }
}
