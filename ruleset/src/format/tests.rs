//! Unit tests of the format: one example of each way decoding fails.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::ir::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;

/// A small ruleset that uses every kind of record.
pub(crate) fn sample() -> Ruleset {
    let tenant = Rule {
        from: vec![vec![Clause::new(
            Attribute::PeerUri,
            vec![
                ValueMatch::Str(StrMatch::pattern(vec![
                    PatternPiece::AnyRun,
                    PatternPiece::Literal("/ns/tenant-a/".to_string()),
                    PatternPiece::AnyRun,
                ])),
                ValueMatch::ServiceAccount {
                    namespace: "tenant-a".to_string(),
                    name: "curl".to_string(),
                },
            ],
        )]],
        to: vec![
            vec![
                Clause::new(
                    Attribute::Method,
                    vec![ValueMatch::Str(StrMatch::exact("POST"))],
                ),
                Clause::new(
                    Attribute::Path,
                    vec![
                        ValueMatch::Str(StrMatch::prefix("/ingest/tenant-a/")),
                        ValueMatch::PathTemplate("/logs/*/x".to_string()),
                    ],
                ),
            ],
            vec![Clause::new(
                Attribute::DestinationPort,
                vec![ValueMatch::Port(8080)],
            )],
        ],
        when: vec![
            Clause::new(
                Attribute::Header("x-tenant-id".to_string()),
                vec![ValueMatch::Str(StrMatch::exact("tenant-a").ignoring_case())],
            ),
            Clause::not(
                Attribute::SourceIp,
                vec![ValueMatch::Cidr(Cidr {
                    address: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0],
                    prefix_len: 104,
                })],
            ),
        ],
    };
    Ruleset {
        mesh: MeshSettings {
            trust_domain_aliases: vec!["old.local".to_string()],
            trusted_forwarders: vec!["shared".to_string(), "gateway".to_string()],
            spoofed_identity: SpoofPolicy::Deny,
            ..MeshSettings::default()
        },
        policies: vec![
            Policy {
                name: "collector".to_string(),
                namespace: "shared".to_string(),
                action: Action::Allow,
                dry_run: false,
                selector: vec![("app".to_string(), "collector".to_string())],
                rules: vec![tenant.clone(), Rule::default()],
            },
            Policy {
                name: "deny-admin".to_string(),
                namespace: "istio-system".to_string(),
                action: Action::Deny,
                dry_run: true,
                selector: vec![],
                rules: vec![Rule {
                    to: vec![vec![Clause::new(
                        Attribute::Path,
                        vec![ValueMatch::Str(StrMatch::suffix("/admin"))],
                    )]],
                    ..Rule::default()
                }],
            },
            Policy {
                name: "allow-nothing".to_string(),
                namespace: "shared".to_string(),
                action: Action::Audit,
                dry_run: false,
                selector: vec![],
                rules: vec![],
            },
        ],
    }
}

/// Recomputes the checksum after a test edited the bytes on purpose.
fn reseal(bytes: &mut [u8]) {
    let sum = checksum(bytes);
    bytes[36..40].copy_from_slice(&sum.to_le_bytes());
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn round_trip() {
    for rs in [sample(), Ruleset::default()] {
        let bytes = to_bytes(&rs);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(from_bytes(&bytes), Ok(rs));
    }
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn strings_are_shared() {
    let bytes = to_bytes(&sample());
    let l = layout(&bytes).unwrap();
    let strings = l.section(Section::Strings).unwrap();
    let table = &bytes[strings.offset..strings.offset + strings.len];
    let count = table.windows(6).filter(|w| w == b"shared").count();
    assert_eq!(count, 1);
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn layout_accounts_for_every_byte() {
    let bytes = to_bytes(&sample());
    let l = layout(&bytes).unwrap();
    assert_eq!(l.sections.len(), 10);
    assert_eq!(l.total_len, bytes.len());
    assert_eq!(l.header_len, 128);
    assert_eq!(l.section(Section::Policies).unwrap().records, 3);
    assert_eq!(l.section(Section::Rules).unwrap().records, 3);
    assert_eq!(l.section(Section::Mesh).unwrap().offset, 128);
    let used: usize = l.sections.iter().map(|s| s.len).sum();
    assert_eq!(l.header_len + used + l.padding(), bytes.len());
    assert!(l.padding() < 4 * 10);
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn bad_label() {
    let mut bytes = to_bytes(&sample());
    bytes[0] = b'M';
    assert_eq!(from_bytes(&bytes), Err(DecodeError::BadLabel));
    assert_eq!(from_bytes(b"PK\x03\x04"), Err(DecodeError::BadLabel));
    assert_eq!(
        from_bytes(b""),
        Err(DecodeError::Truncated {
            section: "header",
            offset: 0,
            needed: HEADER_LEN,
            available: 0
        })
    );
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn newer_version_is_its_own_error() {
    let mut bytes = to_bytes(&sample());
    bytes[24..28].copy_from_slice(&2u32.to_le_bytes());
    let err = from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::NewerVersion {
            found: 2,
            supported: 1
        }
    );
    assert!(err.to_string().contains("newer"), "{err}");
    bytes[24..28].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        from_bytes(&bytes),
        Err(DecodeError::UnknownVersion { found: 0 })
    );
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn big_endian_marker() {
    let mut bytes = to_bytes(&sample());
    bytes[20..24].copy_from_slice(&0xFEFFu32.to_be_bytes());
    assert_eq!(
        from_bytes(&bytes),
        Err(DecodeError::BadEndianness { found: 0xFFFE_0000 })
    );
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn checksum_mismatch() {
    let mut bytes = to_bytes(&sample());
    let last = bytes.len() - 5;
    bytes[last] ^= 0x20;
    let err = from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(err, DecodeError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("offset 36"), "{err}");
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn truncated_and_extended() {
    let bytes = to_bytes(&sample());
    let n = bytes.len();
    assert_eq!(
        from_bytes(&bytes[..n - 4]),
        Err(DecodeError::Truncated {
            section: "body",
            offset: n - 4,
            needed: n,
            available: n - 4
        })
    );
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(
        from_bytes(&longer),
        Err(DecodeError::LengthMismatch {
            declared: n,
            actual: n + 4
        })
    );
}

/// Byte offset of record `index` of `section`.
fn at(bytes: &[u8], section: Section, index: usize) -> usize {
    layout(bytes).unwrap().section(section).unwrap().offset + index * section.record_size()
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn bad_index() {
    let mut bytes = to_bytes(&sample());
    // Policy 1's rule range: start it one record too far.
    let p1 = at(&bytes, Section::Policies, 1);
    let start = u32::from_le_bytes(bytes[p1 + 28..p1 + 32].try_into().unwrap());
    bytes[p1 + 28..p1 + 32].copy_from_slice(&(start + 1).to_le_bytes());
    reseal(&mut bytes);
    let err = from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadRange {
            section: "policies",
            offset: p1 + 28,
            target: "rules",
            start: start + 1,
            count: 1,
            expected_start: start as usize,
            available: 3,
        }
    );
    assert!(err.to_string().contains("policies"), "{err}");
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn hostile_count_is_refused_before_allocating() {
    let mut bytes = to_bytes(&sample());
    let p0 = at(&bytes, Section::Policies, 0);
    bytes[p0 + 32..p0 + 36].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        from_bytes(&bytes),
        Err(DecodeError::BadRange {
            target: "rules",
            ..
        })
    ));
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn bad_tags_and_semantics() {
    let base = to_bytes(&sample());
    let p0 = at(&base, Section::Policies, 0);
    let mut b = base.clone();
    b[p0 + 16] = 7;
    reseal(&mut b);
    assert_eq!(
        from_bytes(&b),
        Err(DecodeError::BadTag {
            section: "policies",
            offset: p0,
            field: "action",
            value: 7
        })
    );
    // The first pattern's pieces: `.*` `/ns/tenant-a/` `.*`; turn the
    // literal into a wildcard: two wildcards in a row.
    let pc = at(&base, Section::Pieces, 1);
    let mut b = base.clone();
    b[pc] = 3;
    b[pc + 4..pc + 12].fill(0);
    reseal(&mut b);
    let err = from_bytes(&b).unwrap_err();
    assert!(
        matches!(err, DecodeError::Invalid { section: "values", reason, .. } if reason.contains("two wildcards")),
        "{err:?}"
    );
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn encoder_output_of_invalid_ir_is_refused() {
    let mut rs = sample();
    rs.policies[0].rules[0].when[0].attribute = Attribute::Header(String::from("X-Tenant-Id"));
    let err = from_bytes(&to_bytes(&rs)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Invalid {
                section: "clauses",
                ..
            }
        ),
        "{err:?}"
    );

    let mut rs = sample();
    rs.policies[0].rules[0].to[1][0].values = vec![ValueMatch::Str(StrMatch::exact("8080"))];
    assert!(matches!(
        from_bytes(&to_bytes(&rs)),
        Err(DecodeError::Invalid {
            section: "values",
            ..
        })
    ));

    let mut rs = sample();
    rs.policies[0].rules[0].when[1].values = vec![ValueMatch::Cidr(Cidr {
        address: [0; 16],
        prefix_len: 129,
    })];
    assert!(matches!(
        from_bytes(&to_bytes(&rs)),
        Err(DecodeError::Invalid {
            section: "values",
            ..
        })
    ));

    let mut rs = sample();
    rs.policies[0].rules[0].from[0][0].values = vec![ValueMatch::Str(StrMatch::pattern(vec![
        PatternPiece::Literal(String::from("a\nb")),
    ]))];
    assert!(matches!(
        from_bytes(&to_bytes(&rs)),
        Err(DecodeError::Invalid {
            section: "pieces",
            ..
        })
    ));
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn errors_name_section_and_offset() {
    let e = DecodeError::InvalidUtf8 {
        section: "strings",
        offset: 200,
    };
    let s = e.to_string();
    assert!(s.contains("`strings`") && s.contains("200"), "{s}");
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn long_strings_are_not_shared() {
    let long = "a".repeat(MAX_SHARED_STRING_LEN + 1);
    let mut rs = sample();
    rs.policies[0].name = long.clone();
    rs.policies[1].name = long.clone();
    let bytes = to_bytes(&rs);
    assert_eq!(from_bytes(&bytes), Ok(rs));
    let l = layout(&bytes).unwrap();
    let s = l.section(Section::Strings).unwrap();
    let table: Vec<u8> = bytes[s.offset..s.offset + s.len].to_vec();
    let n = table
        .windows(long.len())
        .filter(|w| *w == long.as_bytes())
        .count();
    assert!(n >= 2);
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn path_templates_follow_envoy_rules() {
    for (t, ok) in [
        ("/a/*/b", true),
        ("/**/path/template", true),
        ("/a/*/**", true),
        ("/*/*/*/*/*", true),
        ("/*/*/*/*/*/*", false),
        ("/a/**/*", false),
        ("/a/***", false),
        ("a/*", true),
    ] {
        let mut rs = sample();
        rs.policies[0].rules[0].to[0][1].values = vec![ValueMatch::PathTemplate(t.to_string())];
        let got = from_bytes(&to_bytes(&rs));
        assert_eq!(got.is_ok(), ok, "{t}: {got:?}");
    }
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn unreferenced_records() {
    let mut bytes = to_bytes(&sample());
    // The mesh's trusted forwarders: claim one name of two.
    let m = at(&bytes, Section::Mesh, 0);
    bytes[m + 44..m + 48].copy_from_slice(&1u32.to_le_bytes());
    reseal(&mut bytes);
    assert_eq!(
        from_bytes(&bytes),
        Err(DecodeError::UnreferencedRecords {
            section: "names",
            used: 2,
            count: 3
        })
    );
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn shared_long_strings_hit_the_budget() {
    let mut rs = sample();
    rs.mesh.deny_body = "x".repeat(10_000);
    let template = rs.policies[2].clone();
    rs.policies = (0..200)
        .map(|_| Policy {
            name: String::new(),
            ..template.clone()
        })
        .collect();
    let mut bytes = to_bytes(&rs);
    assert!(from_bytes(&bytes).is_ok());
    // Point every policy's name at the deny body.
    let m = at(&bytes, Section::Mesh, 0);
    let body: [u8; 8] = bytes[m + 48..m + 56].try_into().unwrap();
    let p0 = at(&bytes, Section::Policies, 0);
    for i in 0..200 {
        let p = p0 + i * Section::Policies.record_size();
        bytes[p..p + 8].copy_from_slice(&body);
    }
    reseal(&mut bytes);
    let err = from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::TooLarge {
                section: "policies",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn strings_must_be_utf8_and_in_bounds() {
    let base = to_bytes(&sample());
    let l = layout(&base).unwrap();
    let strings = l.section(Section::Strings).unwrap();
    // The trust domain is the first string: make its first byte invalid UTF-8.
    let mut b = base.clone();
    b[strings.offset] = 0xff;
    reseal(&mut b);
    let m = at(&base, Section::Mesh, 0);
    assert_eq!(
        from_bytes(&b),
        Err(DecodeError::InvalidUtf8 {
            section: "mesh",
            offset: m
        })
    );
    let mut b = base.clone();
    b[m + 4..m + 8].copy_from_slice(&(strings.len as u32 + 1).to_le_bytes());
    reseal(&mut b);
    assert!(matches!(
        from_bytes(&b),
        Err(DecodeError::StringOutOfBounds {
            section: "mesh",
            ..
        })
    ));
}

#[test]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn directory_must_be_canonical() {
    let mut bytes = to_bytes(&sample());
    // Move the `names` section 4 bytes later.
    let e = HEADER_LEN + DIRECTORY_ENTRY_LEN;
    let off = u32::from_le_bytes(bytes[e..e + 4].try_into().unwrap());
    bytes[e..e + 4].copy_from_slice(&(off + 4).to_le_bytes());
    reseal(&mut bytes);
    let err = from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(err, DecodeError::BadSection { section: "names", offset, .. } if offset == e),
        "{err:?}"
    );
}
