//! Generators shared by the integration tests: valid IR rulesets whose values
//! come from small per-attribute vocabularies, and requests drawn from the
//! same vocabularies, so that generated rules really match generated requests.

#![allow(dead_code)]

use meshfence_ruleset::ir::*;
use proptest::prelude::*;
use proptest::sample::select;

pub const NAMESPACES: &[&str] = &["istio-system", "foo", "bar", "tenant-a", "shared"];
pub const LABELS: &[(&str, &str)] = &[("app", "web"), ("app", "db"), ("version", "v1")];

pub const PEER_URIS: &[&str] = &[
    "spiffe://cluster.local/ns/foo/sa/curl",
    "spiffe://cluster.local/ns/foo/sa/admin",
    "spiffe://cluster.local/ns/bar/sa/curl",
    "spiffe://cluster.local/ns/tenant-a/sa/curl",
    "spiffe://cluster.local/ns/shared/sa/gateway",
    "spiffe://other.td/ns/foo/sa/curl",
    "spiffe://cluster.local/ns/foo/x/sa/curl/y",
    "spiffe://cluster.local/ns/ns/foo/sa/curl",
    "http://cluster.local/ns/foo/sa/curl",
];
pub const METHODS: &[&str] = &["GET", "POST", "get", "DELETE"];
pub const PATHS: &[&str] = &[
    "/",
    "/api/admin",
    "/api/data?x=1",
    "/ingest/tenant-a/x",
    "/ingest/tenant-a/",
    "/api//admin",
    "/a/b/c",
    "/api/admin/",
    "/API/Admin",
    "/logs/x/y#frag",
    "/api/admin;x=1",
    "/ingest/tenant-a/reports/2026/daily/summary",
];
pub const HOSTS: &[&str] = &["example.com", "api.example.com", "API.example.com:8080"];
pub const SNIS: &[&str] = &["api.example.com", "db.internal"];
pub const PORTS: &[u16] = &[8080, 9090, 80];
pub const IPS: &[&str] = &["10.0.0.1", "10.1.2.3", "192.168.1.1", "::1", "fe80::1"];
pub const HEADER_NAMES: &[&str] = &["x-tenant-id", "x-env", "x-tenant-identity"];
pub const HEADER_VALUES: &[&str] = &[
    "tenant-a",
    "TENANT-A",
    "prod",
    "dev",
    "spiffe://cluster.local/ns/tenant-a/sa/curl",
    "cluster.local/ns/foo/sa/curl",
    "forged",
    "",
];
pub const TEMPLATES: &[&str] = &[
    "/api/*",
    "/api/**",
    "/**",
    "/a/*/c",
    "/ingest/*/x",
    "/**/admin",
    "/ingest/tenant-a/**",
    "/ingest/tenant-a/reports/2026/*/summary",
];

pub fn ip(s: &str) -> [u8; 16] {
    meshfence_ruleset::request::parse_ip(s).expect("vocabulary address")
}

/// The vocabulary of one text attribute.
fn pool(a: &Attribute) -> &'static [&'static str] {
    match a {
        Attribute::PeerUri => PEER_URIS,
        Attribute::Sni => SNIS,
        Attribute::Host => HOSTS,
        Attribute::Method => METHODS,
        Attribute::Path => PATHS,
        Attribute::Header(n) if n == ":authority" => HOSTS,
        Attribute::Header(n) if n == ":method" => METHODS,
        Attribute::Header(n) if n == ":path" => PATHS,
        _ => HEADER_VALUES,
    }
}

/// Cuts `s` at `cuts` and turns some chunks into wildcards, then tidies the
/// result into a valid pattern (no empty literal, never two wildcards in a row).
fn pattern_from(s: &str, cuts: &[usize], kinds: &[u8]) -> Vec<PatternPiece> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (s.len() + 1)).collect();
    points.push(0);
    points.push(s.len());
    points.sort_unstable();
    points.dedup();
    let mut out: Vec<PatternPiece> = Vec::new();
    // Usually merge adjacent literals as the compiler does; sometimes keep
    // them apart (the IR allows it, and matchers must cope).
    let merge = !matches!(kinds.len() % 3, 0);
    for (i, w) in points.windows(2).enumerate() {
        let chunk = &s[w[0]..w[1]];
        let piece = match kinds.get(i).copied().unwrap_or(0) % 6 {
            3 => PatternPiece::AnyRun,
            4 => PatternPiece::AnyNonEmptyRun,
            5 => PatternPiece::SegmentRun,
            _ => PatternPiece::Literal(chunk.to_string()),
        };
        push_piece(&mut out, piece, merge);
    }
    // Sometimes a leading or trailing wildcard.
    if kinds.first().copied().unwrap_or(0) % 7 == 6 {
        out.insert(0, PatternPiece::AnyRun);
        tidy(&mut out, merge);
    }
    out
}

fn push_piece(out: &mut Vec<PatternPiece>, piece: PatternPiece, merge: bool) {
    match (&piece, out.last_mut()) {
        (PatternPiece::Literal(l), _) if l.is_empty() => {}
        (PatternPiece::Literal(l), Some(PatternPiece::Literal(prev))) if merge => prev.push_str(l),
        (PatternPiece::Literal(_), _) => out.push(piece),
        (_, Some(PatternPiece::Literal(_))) | (_, None) => out.push(piece),
        _ => {}
    }
}

fn tidy(pieces: &mut Vec<PatternPiece>, merge: bool) {
    let old = std::mem::take(pieces);
    for p in old {
        push_piece(pieces, p, merge);
    }
}

fn flip_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// A string matcher derived from one vocabulary word, so that it matches that
/// word (or a variant of it) often.
fn str_match(words: &'static [&'static str]) -> impl Strategy<Value = StrMatch> {
    (
        select(words),
        0u8..7,
        any::<usize>(),
        any::<usize>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<usize>(), 0..4),
        prop::collection::vec(any::<u8>(), 0..6),
    )
        .prop_map(|(w, k, a, b, ci, flip, cuts, kinds)| {
            let (i, j) = {
                let n = w.len() + 1;
                let (x, y) = (a % n, b % n);
                (x.min(y), x.max(y))
            };
            let text = if ci && flip {
                flip_case(w)
            } else {
                w.to_string()
            };
            let kind = match k {
                0 => StrMatchKind::Exact(text),
                1 => StrMatchKind::Prefix(text[..j].to_string()),
                2 => StrMatchKind::Suffix(text[i..].to_string()),
                3 => StrMatchKind::Contains(text[i..j].to_string()),
                4 => StrMatchKind::Present,
                _ => StrMatchKind::Pattern(pattern_from(&text, &cuts, &kinds)),
            };
            StrMatch {
                kind,
                ignore_case: ci,
            }
        })
}

/// Namespace-style principal matchers as the compiler emits them: these are
/// what the evaluator's caller index keys on.
fn namespace_matcher() -> impl Strategy<Value = ValueMatch> {
    (select(NAMESPACES), 0u8..4).prop_map(|(ns, k)| {
        let m = match k {
            0 => StrMatch::pattern(vec![
                PatternPiece::AnyRun,
                PatternPiece::Literal(format!("/ns/{ns}/")),
                PatternPiece::AnyRun,
            ]),
            1 => StrMatch::prefix(format!("spiffe://cluster.local/ns/{ns}/")),
            2 => StrMatch {
                kind: StrMatchKind::Contains(format!("/ns/{ns}/")),
                ignore_case: false,
            },
            _ => StrMatch::exact(format!("spiffe://cluster.local/ns/{ns}/sa/curl")),
        };
        ValueMatch::Str(m)
    })
}

fn text_value(a: Attribute) -> BoxedStrategy<ValueMatch> {
    let words = pool(&a);
    let mut options: Vec<(u32, BoxedStrategy<ValueMatch>)> =
        vec![(6, str_match(words).prop_map(ValueMatch::Str).boxed())];
    if a == Attribute::PeerUri || matches!(&a, Attribute::Header(n) if n == "x-tenant-identity") {
        options.push((3, namespace_matcher().boxed()));
        options.push((
            2,
            (
                select(&["foo", "bar", "tenant-a", "shared"][..]),
                select(&["curl", "admin", "gateway"][..]),
            )
                .prop_map(|(ns, sa)| ValueMatch::ServiceAccount {
                    namespace: ns.to_string(),
                    name: sa.to_string(),
                })
                .boxed(),
        ));
    }
    if a == Attribute::Path || matches!(&a, Attribute::Header(n) if n == ":path") {
        options.push((
            2,
            select(TEMPLATES)
                .prop_map(|t| ValueMatch::PathTemplate(t.to_string()))
                .boxed(),
        ));
    }
    prop::strategy::Union::new_weighted(options).boxed()
}

fn value_for(a: Attribute) -> BoxedStrategy<ValueMatch> {
    match a {
        Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
            (select(IPS), 0u8..=128, any::<bool>())
                .prop_map(|(s, n, v4)| {
                    let address = ip(s);
                    let mapped = address[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
                    let prefix_len = if mapped && v4 { 96 + n % 33 } else { n };
                    ValueMatch::Cidr(Cidr {
                        address,
                        prefix_len,
                    })
                })
                .boxed()
        }
        Attribute::DestinationPort => select(PORTS).prop_map(ValueMatch::Port).boxed(),
        other => text_value(other),
    }
}

fn header_attribute() -> impl Strategy<Value = Attribute> {
    select(
        &[
            "x-tenant-id",
            "x-env",
            "x-tenant-identity",
            ":authority",
            ":method",
            ":path",
        ][..],
    )
    .prop_map(|n| Attribute::Header(n.to_string()))
}

fn source_attribute() -> BoxedStrategy<Attribute> {
    prop_oneof![
        5 => Just(Attribute::PeerUri),
        1 => Just(Attribute::SourceIp),
        1 => Just(Attribute::RemoteIp),
        1 => header_attribute(),
    ]
    .boxed()
}

fn operation_attribute() -> BoxedStrategy<Attribute> {
    prop_oneof![
        2 => Just(Attribute::Host),
        2 => Just(Attribute::Method),
        3 => Just(Attribute::Path),
        1 => Just(Attribute::DestinationPort),
        1 => Just(Attribute::DestinationIp),
        1 => Just(Attribute::Sni),
    ]
    .boxed()
}

fn any_attribute() -> BoxedStrategy<Attribute> {
    prop_oneof![
        source_attribute(),
        operation_attribute(),
        header_attribute()
    ]
    .boxed()
}

fn clause(attr: BoxedStrategy<Attribute>) -> impl Strategy<Value = Clause> {
    (attr, prop::bool::weighted(0.2)).prop_flat_map(|(a, negated)| {
        let n = prop_oneof![1 => 0usize..1, 12 => 1usize..4];
        (
            Just(a.clone()),
            Just(negated),
            n.prop_flat_map(move |n| prop::collection::vec(value_for(a.clone()), n)),
        )
            .prop_map(|(attribute, negated, values)| Clause {
                attribute,
                negated,
                values,
            })
    })
}

fn conjunction(attr: fn() -> BoxedStrategy<Attribute>) -> impl Strategy<Value = Conjunction> {
    prop::collection::vec(clause(attr()), 1..3)
}

pub fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::collection::vec(conjunction(source_attribute), 0..3),
        prop::collection::vec(conjunction(operation_attribute), 0..3),
        prop::collection::vec(clause(any_attribute()), 0..2),
    )
        .prop_map(|(from, to, when)| Rule { from, to, when })
}

pub fn policy() -> impl Strategy<Value = Policy> {
    (
        select(&["p1", "p2", "deny-admin", "allow-tenant"][..]),
        select(&["istio-system", "foo", "foo", "bar"][..]),
        prop_oneof![3 => Just(Action::Allow), 2 => Just(Action::Deny), 1 => Just(Action::Audit)],
        prop::bool::weighted(0.2),
        prop::collection::vec(select(LABELS), 0..2),
        prop_oneof![1 => 0usize..1, 6 => 1usize..4]
            .prop_flat_map(|n| prop::collection::vec(rule(), n)),
    )
        .prop_map(|(name, ns, action, dry_run, selector, rules)| {
            let mut rules = rules;
            if action != Action::Allow && rules.is_empty() {
                rules.push(Rule::default());
            }
            Policy {
                name: name.to_string(),
                namespace: ns.to_string(),
                action,
                dry_run,
                selector: selector
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                rules,
            }
        })
}

pub fn mesh() -> impl Strategy<Value = MeshSettings> {
    (
        prop_oneof![
            3 => Just(IdentityValue::Spiffe),
            1 => Just(IdentityValue::Principal),
            1 => Just(IdentityValue::Off)
        ],
        prop_oneof![3 => Just(SpoofPolicy::Strip), 1 => Just(SpoofPolicy::Deny)],
        prop_oneof![1 => Just(PathPolicy::Strict), 2 => Just(PathPolicy::Istio)],
        prop::collection::vec(select(&["shared", "foo", "bar"][..]), 0..3),
        prop::collection::vec(select(&["old.local", "legacy.td"][..]), 0..2),
        select(&[403u16, 401, 404][..]),
    )
        .prop_map(
            |(value, spoof, path_policy, fwd, aliases, status)| MeshSettings {
                trust_domain_aliases: aliases.into_iter().map(String::from).collect(),
                identity_header: IdentityHeader {
                    name: "x-tenant-identity".to_string(),
                    value,
                },
                trusted_forwarders: fwd.into_iter().map(String::from).collect(),
                spoofed_identity: spoof,
                path_policy,
                deny_status: status,
                ..MeshSettings::default()
            },
        )
}

pub fn ruleset() -> impl Strategy<Value = Ruleset> {
    (mesh(), prop::collection::vec(policy(), 0..6))
        .prop_map(|(mesh, policies)| Ruleset { mesh, policies })
}

/// A request, owned, built from the vocabularies.
#[derive(Debug, Clone)]
pub struct OwnedRequest {
    pub peer_uri: Option<String>,
    pub method: String,
    pub path: String,
    pub host: String,
    pub port: u16,
    pub source_ip: Option<[u8; 16]>,
    pub remote_ip: Option<[u8; 16]>,
    pub destination_ip: Option<[u8; 16]>,
    pub sni: Option<String>,
    pub headers: Vec<(String, String)>,
}

fn maybe_ip() -> impl Strategy<Value = Option<[u8; 16]>> {
    prop::option::weighted(0.8, select(IPS).prop_map(ip))
}

pub fn request() -> impl Strategy<Value = OwnedRequest> {
    (
        prop::option::weighted(0.85, select(PEER_URIS).prop_map(String::from)),
        select(METHODS),
        (select(PATHS), prop::option::weighted(0.2, select(PATHS))),
        select(HOSTS),
        select(PORTS),
        (maybe_ip(), maybe_ip(), maybe_ip()),
        prop::option::weighted(0.5, select(SNIS).prop_map(String::from)),
        prop::collection::vec(
            (
                select(
                    &[
                        "x-tenant-id",
                        "x-env",
                        "x-tenant-identity",
                        "X-Tenant-Identity",
                        "X-Env",
                    ][..],
                ),
                select(HEADER_VALUES),
            ),
            0..4,
        ),
    )
        .prop_map(
            |(peer_uri, method, (path, more), host, port, (src, remote, dst), sni, headers)| {
                // Sometimes a path one level deeper, for prefixes and templates.
                let path = match more {
                    Some(m) if !path.contains(['?', '#']) => {
                        format!("{}{}", path.trim_end_matches('/'), m)
                    }
                    _ => path.to_string(),
                };
                OwnedRequest {
                    peer_uri,
                    method: method.to_string(),
                    path,
                    host: host.to_string(),
                    port,
                    source_ip: src,
                    remote_ip: remote,
                    destination_ip: dst,
                    sni,
                    headers: headers
                        .into_iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                }
            },
        )
}

/// A workload: a namespace and a few labels.
pub fn workload() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    (
        select(&["foo", "bar", "shared"][..]),
        prop::collection::vec(select(LABELS), 0..3),
    )
        .prop_map(|(ns, labels)| {
            (
                ns.to_string(),
                labels
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        })
}
