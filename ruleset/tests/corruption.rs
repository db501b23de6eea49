//! Damaged rulesets: every truncation and every single-byte change of a few
//! valid rulesets decodes to a clean error or to a valid ruleset, never a
//! panic. Changes are tried twice: as they come (the checksum catches almost
//! all of them) and with the checksum recomputed, so that every later check of
//! the decoder (directory, ranges, strings, tags, semantics) is exercised.

// proptest and std: native only (the wasm32 run covers the unit tests).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use meshfence_ruleset::format::{
    from_bytes, from_bytes_for_workload, layout, to_bytes, DecodeError,
};
use meshfence_ruleset::ir::*;
use meshfence_ruleset::{HeaderList, Request, Workload};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The checksum as FORMAT.md defines it: CRC-32 of every byte but 36..40.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() < 40 {
        return;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..36]);
    h.update(&bytes[40..]);
    let sum = h.finalize();
    bytes[36..40].copy_from_slice(&sum.to_le_bytes());
}

/// Hand-written: every record kind at least once.
fn handmade() -> Ruleset {
    let lit = |s: &str| PatternPiece::Literal(s.to_string());
    Ruleset {
        mesh: MeshSettings {
            trust_domain_aliases: vec!["old.local".into()],
            trusted_forwarders: vec!["shared".into()],
            ..MeshSettings::default()
        },
        policies: vec![
            Policy {
                name: "tenants".into(),
                namespace: "shared".into(),
                action: Action::Allow,
                dry_run: false,
                selector: vec![("app".into(), "collector".into())],
                rules: vec![Rule {
                    from: vec![vec![Clause::new(
                        Attribute::PeerUri,
                        vec![
                            ValueMatch::Str(StrMatch::pattern(vec![
                                PatternPiece::AnyRun,
                                lit("/ns/tenant-a/"),
                                PatternPiece::SegmentRun,
                                lit("/sa/"),
                                PatternPiece::AnyNonEmptyRun,
                            ])),
                            ValueMatch::ServiceAccount {
                                namespace: "tenant-b".into(),
                                name: "curl".into(),
                            },
                        ],
                    )]],
                    to: vec![vec![
                        Clause::new(
                            Attribute::Path,
                            vec![ValueMatch::PathTemplate("/ingest/*/x".into())],
                        ),
                        Clause::not(Attribute::DestinationPort, vec![ValueMatch::Port(9090)]),
                    ]],
                    when: vec![
                        Clause::new(
                            Attribute::Header("x-tenant-id".into()),
                            vec![ValueMatch::Str(StrMatch::exact("tenant-a").ignoring_case())],
                        ),
                        Clause::new(
                            Attribute::RemoteIp,
                            vec![ValueMatch::Cidr(Cidr {
                                address: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                                prefix_len: 64,
                            })],
                        ),
                    ],
                }],
            },
            Policy {
                name: "no-admin".into(),
                namespace: "istio-system".into(),
                action: Action::Deny,
                dry_run: true,
                selector: vec![],
                rules: vec![Rule {
                    to: vec![vec![Clause::new(
                        Attribute::Host,
                        vec![
                            ValueMatch::Str(StrMatch::suffix(".internal").ignoring_case()),
                            ValueMatch::Str(StrMatch::present()),
                        ],
                    )]],
                    ..Rule::default()
                }],
            },
        ],
    }
}

/// A few valid rulesets: the hand-written one and generated ones.
fn samples() -> Vec<Ruleset> {
    let mut out = vec![handmade(), Ruleset::default()];
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = common::ruleset();
    while out.len() < 5 {
        let rs = strategy.new_tree(&mut runner).unwrap().current();
        if rs.policies.len() >= 2 {
            out.push(rs);
        }
    }
    out
}

/// Decoding must not panic; what decodes must be a ruleset the evaluator can
/// run and that encodes back to bytes that decode to it.
fn survive(bytes: &[u8]) -> Result<(), DecodeError> {
    let _ = layout(bytes);
    let labels = [("app", "collector")];
    // Loading for one workload validates exactly as much: the same verdict.
    let one = Workload {
        namespace: "shared",
        labels: &labels,
    };
    let for_one = from_bytes_for_workload(bytes, &one);
    let rs = match from_bytes(bytes) {
        Ok(rs) => {
            assert!(for_one.is_ok(), "{for_one:?}");
            rs
        }
        Err(e) => {
            assert_eq!(for_one, Err(e.clone()));
            return Err(e);
        }
    };
    assert_eq!(from_bytes(&to_bytes(&rs)).as_ref(), Ok(&rs));
    let headers = [("x-tenant-id", "tenant-a")];
    let hl = HeaderList(&headers);
    for ns in ["shared", "foo"] {
        let wp = rs.for_workload(&Workload {
            namespace: ns,
            labels: &labels,
        });
        for peer in [None, Some("spiffe://cluster.local/ns/tenant-a/sa/curl")] {
            let req = Request {
                peer_uri: peer,
                method: "POST",
                path: "/ingest/tenant-a/x",
                host: "logs.internal",
                destination_port: 8080,
                source_ip: None,
                remote_ip: None,
                destination_ip: None,
                sni: None,
                headers: &hl,
            };
            let _ = wp.decide(&req);
        }
    }
    Ok(())
}

#[test]
fn every_truncation_is_a_clean_error() {
    for rs in samples() {
        let bytes = to_bytes(&rs);
        for n in 0..bytes.len() {
            let err = survive(&bytes[..n]).expect_err("a truncated ruleset decoded");
            // The message names a place.
            assert!(err.to_string().contains("offset") || err == DecodeError::BadLabel);
            let mut sealed = bytes[..n].to_vec();
            reseal(&mut sealed);
            assert!(
                survive(&sealed).is_err(),
                "truncated to {n} and resealed, it decoded"
            );
        }
    }
}

#[test]
fn every_byte_changed_once() {
    let mut decoded_after_change = 0usize;
    for rs in samples() {
        let bytes = to_bytes(&rs);
        for i in 0..bytes.len() {
            for delta in [0xffu8, 0x01] {
                let mut b = bytes.clone();
                b[i] ^= delta;
                if !(36..40).contains(&i) {
                    assert!(survive(&b).is_err(), "byte {i} ^ {delta:#x} went unnoticed");
                }
                reseal(&mut b);
                if survive(&b).is_ok() {
                    decoded_after_change += 1;
                }
            }
        }
    }
    // Some changes are harmless (a letter of a name), most are not.
    assert!(decoded_after_change > 0);
}

#[test]
fn every_value_at_sampled_positions() {
    for rs in samples().into_iter().take(3) {
        let bytes = to_bytes(&rs);
        // Every header and directory byte, then every 5th byte of the rest.
        let positions = (0..bytes.len()).filter(|&i| i < 128 || i % 5 == 0);
        for i in positions {
            for v in 0..=255u8 {
                if v == bytes[i] {
                    continue;
                }
                let mut b = bytes.clone();
                b[i] = v;
                let _ = survive(&b);
                reseal(&mut b);
                let _ = survive(&b);
            }
        }
    }
}

#[test]
fn random_garbage_after_a_valid_header() {
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    let header = to_bytes(&handmade())[..128].to_vec();
    runner
        .run(
            &proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            |tail| {
                let mut b = header.clone();
                b.extend_from_slice(&tail);
                let len = b.len() as u32;
                b[32..36].copy_from_slice(&len.to_le_bytes());
                reseal(&mut b);
                let _ = survive(&b);
                Ok(())
            },
        )
        .unwrap();
}
