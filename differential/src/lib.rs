//! Differential testing against Envoy's own RBAC filter on Istio's golden
//! corpus (`make differential`).
//!
//! For every HTTP, non-CUSTOM case of a `CASES.yaml` (Istio's
//! `testdata/builder/`), one Envoy runs, per case and per destination port the
//! requests need, a pair of listeners on the same port and two loopback
//! addresses:
//!
//! - `127.0.C.10:PORT` runs the RBAC filter(s) istiod generates for the case
//!   (its `want` files, in order), then the router;
//! - `127.0.C.20:PORT` runs meshfence's filter with the ruleset compiled from
//!   the case's `-in.yaml` (path policy `istio`, identity header off,
//!   `requestAuthentication: none`, the case's trust domain and aliases, a root
//!   namespace that matches nothing, workload `foo` `{app: httpbin, version: v1}`),
//!   then the router.
//!
//! Both take TLS (client certificate optional, validated when presented) and
//! plain HTTP (Istio's PERMISSIVE), use the socket's address as the remote
//! address, and normalize paths as Istio's default does. The route answers
//! 200 itself with a marker header, so "allowed" means the request passed every
//! filter. Every generated request ([`requests`]) goes to both listeners; the
//! decisions must agree.

pub mod client;
pub mod corpus;
pub mod requests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use meshfence_compiler::mesh::RequestAuthentication;
use meshfence_compiler::{compile_paths, CompileOptions};
use meshfence_ruleset::ir::{
    Attribute, Cidr, IdentityValue, MeshSettings, PathPolicy, Ruleset, ValueMatch,
};
use serde_json::{json, Value as Json};

use client::{Answer, Verdict};
use corpus::Case;
use requests::{Caller, GenRequest, Literals};
use wasm_test_harness::envoy::Pki;

/// The workload of Istio's builder tests.
pub const NAMESPACE: &str = "foo";
pub const LABELS: &[(&str, &str)] = &[("app", "httpbin"), ("version", "v1")];
/// A root namespace no policy of the corpus lives in.
pub const NO_ROOT_NAMESPACE: &str = "meshfence-differential-no-root";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub cases: PathBuf,
    pub wasm: PathBuf,
    /// Random combinations per case, besides one request per literal value.
    pub samples: usize,
    pub seed: u64,
    /// Client threads.
    pub threads: usize,
    /// Run only these cases (all when empty).
    pub only: Vec<String>,
    /// Per request and connection.
    pub timeout: Duration,
    pub startup_timeout: Duration,
    /// For sending every request; what is left after it counts as failed.
    pub deadline: Duration,
    /// The command that runs Envoy; `None`: `scripts/envoy.sh` / `$ENVOY`.
    pub envoy: Option<Vec<String>>,
    pub concurrency: u32,
}

impl Options {
    pub fn new(cases: PathBuf, wasm: PathBuf) -> Options {
        Options {
            cases,
            wasm,
            samples: 1000,
            seed: 5,
            threads: 4,
            only: Vec::new(),
            timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(90),
            deadline: Duration::from_secs(600),
            envoy: None,
            concurrency: 2,
        }
    }
}

/// The mesh settings of a case, as the differential compiles it.
pub fn mesh_for(case: &Case) -> MeshSettings {
    let mut mesh = MeshSettings {
        trust_domain: case.trust_domain.clone(),
        trust_domain_aliases: case.aliases.clone(),
        root_namespace: NO_ROOT_NAMESPACE.into(),
        path_policy: PathPolicy::Istio,
        ..MeshSettings::default()
    };
    mesh.identity_header.value = IdentityValue::Off;
    mesh
}

/// One case, ready to run.
struct Prepared {
    index: usize,
    case: Case,
    ruleset: Vec<u8>,
    want: Vec<Json>,
    requests: Vec<GenRequest>,
    ports: BTreeSet<u16>,
}

/// A request's outcome on both sides.
struct Outcome {
    case: usize,
    request: GenRequest,
    istio: Answer,
    meshfence: Answer,
}

/// The whole run's result.
pub struct Report {
    /// (case, requests, agreements)
    pub per_case: Vec<(String, usize, usize)>,
    /// Things not exercised, each on its own line with its reason.
    pub not_exercised: Vec<String>,
    pub passed: usize,
    pub failed: usize,
}

/// Runs the differential; prints per-case lines, listings and disagreements
/// to `out` as it goes. `Err` is a broken setup (no Envoy, a case that does
/// not compile for a reason that is not listed), not a disagreement.
pub fn run(opts: &Options, out: &mut dyn std::io::Write) -> Result<Report, String> {
    let corpus = corpus::load(&opts.cases)?;
    let mut not_exercised = Vec::new();
    for t in &corpus.tcp {
        not_exercised.push(format!(
            "tcp/{t}: a TCP case (network RBAC filter); HTTP requests do not exercise it"
        ));
    }
    let privileged_ok = can_bind_low_port();
    let mut prepared = Vec::new();
    for case in corpus.http.iter() {
        if !opts.only.is_empty() && !opts.only.contains(&case.name) {
            continue;
        }
        if case.mesh_config.is_some() || case.name.starts_with("custom-") {
            not_exercised.push(format!(
                "{}: CUSTOM (ext_authz) policy: out of scope (DESIGN §3.1), meshfence refuses it",
                case.name
            ));
            continue;
        }
        let opts_c = CompileOptions {
            mesh: mesh_for(case),
            skip_custom: false,
            request_authentication: RequestAuthentication::None,
        };
        let ruleset = match compile_paths(std::slice::from_ref(&case.input), &opts_c) {
            Ok(c) => c.ruleset,
            Err(e) => {
                let text = e.to_string();
                if text.contains("experimental.") {
                    match without_experimental(case, &opts_c) {
                        Ok((ruleset, notes)) => {
                            not_exercised.extend(notes);
                            ruleset
                        }
                        Err(why) => {
                            let first = text
                                .lines()
                                .find(|l| l.contains("experimental."))
                                .unwrap_or("")
                                .to_string();
                            not_exercised.push(format!(
                                "{}: does not compile on purpose: {first} ({why})",
                                case.name
                            ));
                            continue;
                        }
                    }
                } else {
                    return Err(format!(
                        "{}: {} does not compile:\n{text}",
                        case.name,
                        case.input.display()
                    ));
                }
            }
        };
        let mut want = Vec::new();
        for w in &case.want {
            want.push(corpus::filter_json(w)?);
        }
        let docs = corpus::documents(&case.input)?;
        let mut tds = vec![case.trust_domain.clone()];
        tds.extend(case.aliases.iter().cloned());
        let lit = Literals::collect(&docs, NAMESPACE, &tds);
        let mut reqs = Vec::new();
        let mut unsendable: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        for r in lit.requests(opts.samples, opts.seed) {
            match sendable(&r) {
                Ok(r) => reqs.push(r),
                Err((why, value)) => {
                    unsendable.entry(why).or_default().insert(value);
                }
            }
        }
        for (why, values) in unsendable {
            let values: Vec<String> = values.into_iter().map(|v| format!("{v:?}")).collect();
            not_exercised.push(format!("{}: {why}: {}", case.name, values.join(", ")));
        }
        reqs.sort();
        reqs.dedup();
        let mut ports: BTreeSet<u16> = reqs.iter().map(|r| r.port).collect();
        if !privileged_ok {
            let low: Vec<u16> = ports.iter().copied().filter(|p| *p < 1024).collect();
            for p in &low {
                not_exercised.push(format!(
                    "{}: destination port {p}: this user cannot bind ports below 1024",
                    case.name
                ));
            }
            ports.retain(|p| *p >= 1024);
            reqs.retain(|r| r.port >= 1024);
        }
        listing(&case.name, &ruleset, &mut not_exercised);
        prepared.push(Prepared {
            index: prepared.len() + 1,
            case: case.clone(),
            ruleset: meshfence_ruleset::format::to_bytes(&ruleset),
            want,
            requests: reqs,
            ports,
        });
    }
    if prepared.len() > 250 {
        return Err("more than 250 cases: the loopback address plan holds 250".into());
    }
    // Ports already taken on our addresses cannot be used.
    for p in &mut prepared {
        let mut taken = Vec::new();
        for &port in &p.ports {
            for side in [Side::Istio, Side::Meshfence] {
                if TcpListener::bind(side.addr(p.index, port)).is_err() {
                    taken.push(port);
                }
            }
        }
        taken.dedup();
        for port in taken {
            not_exercised.push(format!(
                "{}: destination port {port}: already in use on {}",
                p.case.name,
                side_ip(p.index, Side::Istio)
            ));
            p.ports.remove(&port);
            p.requests.retain(|r| r.port != port);
        }
    }

    let envoy = DiffEnvoy::start(opts, &prepared)?;
    let started = Instant::now();
    let outcomes = send_all(opts, &envoy, &prepared);
    let elapsed = started.elapsed();
    let known = known_differences(opts, &envoy, &prepared);
    drop(envoy);

    let mut per_case = Vec::new();
    let mut passed = 0;
    let mut failed = 0;
    let mut by_case: BTreeMap<usize, Vec<&Outcome>> = BTreeMap::new();
    for o in &outcomes {
        by_case.entry(o.case).or_default().push(o);
    }
    for p in &prepared {
        let list = by_case.get(&p.index).cloned().unwrap_or_default();
        let mut agree = 0;
        let mut allowed = 0;
        for o in &list {
            let (a, b) = (o.istio.verdict(), o.meshfence.verdict());
            if a == b && !matches!(a, Verdict::Other(_)) {
                agree += 1;
                if a == Verdict::Allow {
                    allowed += 1;
                }
            } else {
                let _ = writeln!(
                    out,
                    "DISAGREE {}: {}\n  request: {}\n  istio RBAC: {}\n  meshfence:  {}",
                    p.case.name,
                    if a == b {
                        "neither allowed nor denied"
                    } else {
                        "decisions differ"
                    },
                    describe(&o.request),
                    o.istio,
                    o.meshfence
                );
            }
        }
        let _ = writeln!(
            out,
            "{}: {} requests, {} agree ({} allowed, {} denied by both)",
            p.case.name,
            list.len(),
            agree,
            allowed,
            agree - allowed
        );
        passed += agree;
        failed += list.len() - agree;
        per_case.push((p.case.name.clone(), list.len(), agree));
    }
    for n in &not_exercised {
        let _ = writeln!(out, "not exercised: {n}");
    }
    for k in &known {
        let _ = writeln!(out, "{k}");
    }
    let _ = writeln!(
        out,
        "sent {} requests to each of 2 listeners in {:.1}s",
        outcomes.len(),
        elapsed.as_secs_f64()
    );
    Ok(Report {
        per_case,
        not_exercised,
        passed,
        failed,
    })
}

/// The methods Envoy's HTTP/1 codec accepts (the http-parser list); any
/// other gets a 400 before the filters run.
const ENVOY_METHODS: &[&str] = &[
    "DELETE",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PATCH",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

/// meshfence refuses `experimental.envoy.filters.*` condition keys. Envoy's
/// RBAC reads them as dynamic-metadata matchers, which never match here (no
/// filter sets that metadata), so a rule with one can match only if the key
/// sits under `notValues`. When every rule holding such a key also holds a
/// positive JWT clause (`request.auth.*` `values`, `requestPrincipals`),
/// which under `requestAuthentication: none` never matches either, the rule
/// can never match with or without the key: dropping the key changes nothing,
/// and the rest of the case can be compared. Otherwise the case is listed.
fn without_experimental(
    case: &Case,
    opts: &CompileOptions,
) -> Result<(Ruleset, Vec<String>), String> {
    let mut docs = corpus::documents(&case.input)?;
    let mut touched = Vec::new();
    for doc in &mut docs {
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(rules) = doc
            .get_mut("spec")
            .and_then(|s| s.get_mut("rules"))
            .and_then(serde_yaml::Value::as_sequence_mut)
        else {
            continue;
        };
        for (i, rule) in rules.iter_mut().enumerate() {
            let Some(when) = rule
                .get_mut("when")
                .and_then(serde_yaml::Value::as_sequence_mut)
            else {
                continue;
            };
            let before = when.len();
            let mut keys = Vec::new();
            when.retain(|c| {
                let key = c
                    .get("key")
                    .and_then(serde_yaml::Value::as_str)
                    .unwrap_or("");
                if key.starts_with("experimental.") {
                    keys.push(key.to_string());
                    false
                } else {
                    true
                }
            });
            if when.len() != before {
                touched.push((name.clone(), i, keys));
            }
        }
    }
    let mut text = String::new();
    for d in &docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(d).map_err(|e| e.to_string())?);
    }
    let compiled = meshfence_compiler::compile_str(&case.input.display().to_string(), &text, opts)
        .map_err(|e| format!("without the experimental keys: {e}"))?;
    let mut notes = Vec::new();
    for (policy, i, keys) in touched {
        let rule = compiled
            .ruleset
            .policies
            .iter()
            .find(|p| p.name == policy)
            .and_then(|p| p.rules.get(i))
            .ok_or_else(|| format!("policy {policy} rule {i} not found"))?;
        let jwt = rule.when.iter().find_map(|c| match &c.attribute {
            Attribute::RequestAuth(k) if !c.negated => Some(k.clone()),
            _ => None,
        });
        let Some(jwt) = jwt else {
            return Err(format!(
                "ns[{NAMESPACE}]-policy[{policy}]-rule[{i}] could match without the key"
            ));
        };
        notes.push(format!(
            "{}: ns[{NAMESPACE}]-policy[{policy}]-rule[{i}]: condition {} left out: meshfence refuses it, Envoy's metadata matcher never matches here, and the rule's `{jwt}` values never match without a JWT, so the rule never matches either way",
            case.name,
            keys.join(", ")
        ));
    }
    Ok((compiled.ruleset, notes))
}

/// Probes for the differences DIFFERENCES.md documents, with certificates
/// the main run never uses: each line says whether the documented difference
/// showed. Informational: not counted as passed or failed.
fn known_differences(opts: &Options, envoy: &DiffEnvoy, cases: &[Prepared]) -> Vec<String> {
    use wasm_test_harness::envoy::Identity;
    let probes: [(&str, Identity, Verdict, Verdict, &str); 3] = [
        (
            "deny-and-allow",
            Identity::Uris(vec!["spiffe://other".into(), "spiffe://allow".into()]),
            Verdict::Allow,
            Verdict::Deny,
            "second URI SAN matches the ALLOW: Envoy matches any URI SAN, the filter sees the first",
        ),
        (
            "deny-and-allow",
            Identity::Uris(vec!["spiffe://allow".into(), "spiffe://deny".into()]),
            Verdict::Deny,
            Verdict::Allow,
            "second URI SAN matches the DENY: a second SAN would walk around a DENY under meshfence",
        ),
        (
            "trust-domain-wildcard-in-principal",
            Identity::NoUriSan,
            Verdict::Allow,
            Verdict::Deny,
            "no URI SAN, DNS SAN client.localhost: Envoy matches principals [\"*\"] (.+) on the DNS SAN",
        ),
    ];
    let mut out = Vec::new();
    for (name, identity, want_istio, want_mesh, what) in probes {
        let Some(c) = cases.iter().find(|c| c.case.name == name) else {
            continue;
        };
        let req = GenRequest {
            from: Caller::TlsNoCert,
            method: "GET".into(),
            path: "/".into(),
            host: "example.com".into(),
            port: requests::DEFAULT_PORT,
            headers: Vec::new(),
        };
        if !c.ports.contains(&req.port) {
            continue;
        }
        let tls = match envoy
            .pki
            .client(identity.clone())
            .map_err(|e| e.to_string())
            .and_then(|cert| client::tls_config(envoy.pki.ca_der(), Some(&cert)))
        {
            Ok(t) => t,
            Err(e) => {
                out.push(format!(
                    "known difference ({name}, {identity:?}): no certificate: {e}"
                ));
                continue;
            }
        };
        let bytes = frame(&req);
        let a = client::exchange(
            Side::Istio.addr(c.index, req.port),
            Some(tls.clone()),
            &bytes,
            opts.timeout,
        );
        let b = client::exchange(
            Side::Meshfence.addr(c.index, req.port),
            Some(tls),
            &bytes,
            opts.timeout,
        );
        let (va, vb) = (a.verdict(), b.verdict());
        let shown = va == want_istio && vb == want_mesh;
        out.push(format!(
            "known difference {} ({name}, certificate {identity:?}): {what}: istio RBAC {va:?}, meshfence {vb:?}",
            if shown { "confirmed" } else { "NOT as documented" }
        ));
    }
    out
}

/// Makes a generated request one Envoy takes to its filters, or says why
/// not (the reason, and the value).
fn sendable(r: &GenRequest) -> Result<GenRequest, (&'static str, String)> {
    let mut r = r.clone();
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !r.method.is_empty()
        && r.method.chars().all(tchar)
        && !ENVOY_METHODS.contains(&r.method.as_str())
    {
        return Err((
            "methods Envoy's HTTP/1 codec refuses with 400 before any filter (not a method it knows)",
            r.method,
        ));
    }
    if r.method.is_empty() || !r.method.chars().all(tchar) {
        return Err((
            "methods that are not HTTP tokens (no HTTP/1.1 request carries them; both sides can only deny)",
            r.method,
        ));
    }
    if !r.path.starts_with('/') {
        r.path.insert(0, '/');
    }
    if r.path.contains('#') {
        return Err((
            "paths with a fragment (Envoy 1.40 answers 400 before any filter)",
            r.path,
        ));
    }
    if r.path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(("paths with a space or control character", r.path));
    }
    for (n, v) in &r.headers {
        if v.chars().any(|c| c.is_ascii_control()) || n.is_empty() || !n.chars().all(tchar) {
            return Err(("headers HTTP/1.1 cannot carry", format!("{n}: {v}")));
        }
    }
    Ok(r)
}

fn describe(r: &GenRequest) -> String {
    let mut s = format!(
        "{} {} host {:?} port {} from {}",
        r.method, r.path, r.host, r.port, r.from
    );
    for (n, v) in &r.headers {
        let _ = write!(s, " [{n}: {v:?}]");
    }
    s
}

fn cidr_text(c: &Cidr) -> String {
    let a = &c.address;
    if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
        format!(
            "{}/{}",
            Ipv4Addr::new(a[12], a[13], a[14], a[15]),
            c.prefix_len.saturating_sub(96)
        )
    } else {
        format!("{}/{}", std::net::Ipv6Addr::from(*a), c.prefix_len)
    }
}

fn contains(c: &Cidr, ip: Ipv4Addr) -> bool {
    let addr = ip.to_ipv6_mapped().octets();
    let bits = c.prefix_len as usize;
    (0..bits.min(128)).all(|i| {
        let mask = 0x80u8 >> (i % 8);
        (c.address[i / 8] & mask) == (addr[i / 8] & mask)
    })
}

/// Names every rule with a clause our loopback traffic cannot flip: IP ranges
/// that hold no address our requests use, JWT facts, SNI.
fn listing(case: &str, ruleset: &Ruleset, out: &mut Vec<String>) {
    for p in &ruleset.policies {
        for (i, rule) in p.rules.iter().enumerate() {
            let name = format!("{case}: ns[{}]-policy[{}]-rule[{i}]", p.namespace, p.name);
            for c in rule.clauses() {
                let (what, probe): (&str, Option<Ipv4Addr>) = match &c.attribute {
                    Attribute::SourceIp => (
                        "source IP (ipBlocks / source.ip)",
                        Some(Ipv4Addr::LOCALHOST),
                    ),
                    Attribute::RemoteIp => (
                        "remote IP (remoteIpBlocks / remote.ip)",
                        Some(Ipv4Addr::LOCALHOST),
                    ),
                    Attribute::DestinationIp => ("destination IP (destination.ip)", None),
                    Attribute::RequestAuth(k) => {
                        out.push(format!(
                            "{name}: {}{k}: no request carries a verified JWT (requestAuthentication: none); only its absent half is exercised",
                            if c.negated { "not " } else { "" }
                        ));
                        continue;
                    }
                    Attribute::Sni => {
                        out.push(format!(
                            "{name}: {}connection.sni: every TLS request sends SNI localhost; plaintext sends none",
                            if c.negated { "not " } else { "" }
                        ));
                        continue;
                    }
                    _ => continue,
                };
                let cidrs: Vec<&Cidr> = c
                    .values
                    .iter()
                    .filter_map(|v| match v {
                        ValueMatch::Cidr(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                let hit = cidrs.iter().any(|c| match probe {
                    Some(ip) => contains(c, ip),
                    // Destination addresses differ per side: any 127/8 range.
                    None => {
                        contains(c, Ipv4Addr::new(127, 0, 1, 10))
                            || contains(c, Ipv4Addr::new(127, 0, 1, 20))
                    }
                });
                if !hit {
                    let vals: Vec<String> = cidrs.iter().map(|c| cidr_text(c)).collect();
                    out.push(format!(
                        "{name}: {}{what} {}: outside what loopback requests use (source 127.0.0.1, destination 127.0.N.10/20), so this clause is always {}",
                        if c.negated { "not " } else { "" },
                        vals.join(", "),
                        if c.negated { "true" } else { "false" }
                    ));
                }
            }
        }
    }
}

fn can_bind_low_port() -> bool {
    // Port 1 on a loopback address nobody uses: a permission check only.
    TcpListener::bind((Ipv4Addr::new(127, 0, 254, 254), 1)).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Istio,
    Meshfence,
}

fn side_ip(case: usize, side: Side) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        0,
        case as u8,
        match side {
            Side::Istio => 10,
            Side::Meshfence => 20,
        },
    )
}

impl Side {
    fn addr(self, case: usize, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(side_ip(case, self), port))
    }
}

struct DiffEnvoy {
    dir: tempfile::TempDir,
    pki: Pki,
    child: Mutex<Option<(Child, Option<ChildStdin>)>>,
    admin_port: u16,
}

impl DiffEnvoy {
    fn start(opts: &Options, cases: &[Prepared]) -> Result<DiffEnvoy, String> {
        let command = match &opts.envoy {
            Some(c) => c.clone(),
            None => wasm_test_harness::envoy::envoy_command().map_err(|e| e.to_string())?,
        };
        let dir = tempfile::Builder::new()
            .prefix("meshfence-differential-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let pki = Pki::create(&dir.path().join("certs")).map_err(|e| e.to_string())?;
        let bootstrap = bootstrap(opts, &pki, cases);
        let path = dir.path().join("bootstrap.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&bootstrap).unwrap_or_default(),
        )
        .map_err(|e| format!("write {}: {e}", path.display()))?;
        let admin_path = dir.path().join("admin.address");
        let log_path = dir.path().join("envoy.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("envoy.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("envoy.log: {e}"))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(wasm_test_harness::envoy::WRAPPER)
            .arg("meshfence-differential-envoy")
            .args(&command)
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", "warning"])
            .args(["--drain-time-s", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("run {command:?}: {e}"))?;
        let stdin = child.stdin.take();
        let mut envoy = DiffEnvoy {
            dir,
            pki,
            child: Mutex::new(Some((child, stdin))),
            admin_port: 0,
        };
        envoy.wait_ready(opts.startup_timeout, &admin_path, cases)?;
        Ok(envoy)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn wait_ready(
        &mut self,
        timeout: Duration,
        admin_path: &Path,
        cases: &[Prepared],
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let addrs: Vec<SocketAddr> = cases
            .iter()
            .flat_map(|c| {
                c.ports.iter().flat_map(move |p| {
                    [
                        Side::Istio.addr(c.index, *p),
                        Side::Meshfence.addr(c.index, *p),
                    ]
                })
            })
            .collect();
        loop {
            if let Some((child, _)) = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "Envoy exited while starting ({status}):\n{}",
                        self.log_tail()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy not ready after {timeout:?}:\n{}",
                    self.log_tail()
                ));
            }
            if self.admin_port == 0 {
                self.admin_port = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|s| s.trim().rsplit(':').next()?.parse().ok())
                    .unwrap_or(0);
            }
            if self.admin_port != 0
                && admin(self.admin_port, "GET", "/ready").is_some_and(|(s, _)| s == 200)
                && addrs
                    .iter()
                    .all(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DiffEnvoy {
    fn drop(&mut self) {
        if self.admin_port != 0 {
            let _ = admin(self.admin_port, "POST", "/quitquitquit");
        }
        let Some((mut child, stdin)) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take()
        else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A request on Envoy's admin interface: (status, body).
fn admin(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn bootstrap(opts: &Options, pki: &Pki, cases: &[Prepared]) -> Json {
    let cert_dir = pki.dir().to_string_lossy().into_owned();
    let labels: serde_json::Map<String, Json> = LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
        .collect();
    let mut listeners = Vec::new();
    let wasm = opts.wasm.to_string_lossy().into_owned();
    for c in cases {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&c.ruleset);
        for &port in &c.ports {
            let istio_filters = c.want.clone();
            let mesh_filters = vec![json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": format!("meshfence-{}", c.case.name),
                        "vm_config": {
                            "vm_id": "meshfence",
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": wasm}}
                        },
                        // The workload rides in the JSON configuration (the
                        // shape of an Istio WasmPlugin.pluginConfig), not in
                        // node metadata: Envoy 1.40 shows that to wasm as
                        // xds.node.*, which the filter does not read yet.
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": json!({
                                "ruleset": b64,
                                "workload": {"namespace": NAMESPACE, "labels": labels.clone()}
                            }).to_string()
                        },
                        "fail_open": false
                    }
                }
            })];
            for (side, filters) in [
                (Side::Istio, istio_filters),
                (Side::Meshfence, mesh_filters),
            ] {
                let name = format!(
                    "{}-{}-{port}",
                    c.case.name,
                    if side == Side::Istio {
                        "istio"
                    } else {
                        "meshfence"
                    }
                );
                listeners.push(listener(
                    &name,
                    side_ip(c.index, side),
                    port,
                    &cert_dir,
                    filters,
                ));
            }
        }
    }
    json!({
        "node": {
            "id": "meshfence-differential",
            "cluster": "meshfence-differential",
            "metadata": {"NAMESPACE": NAMESPACE, "LABELS": labels}
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners}
    })
}

fn listener(name: &str, ip: Ipv4Addr, port: u16, cert_dir: &str, filters: Vec<Json>) -> Json {
    let hcm = |tls: bool| {
        let mut http_filters = filters.clone();
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("{name}-{}", if tls { "tls" } else { "plain" }),
                "codec_type": "AUTO",
                "use_remote_address": true,
                // Istio's default (BASE) normalization on both sides.
                "normalize_path": true,
                "merge_slashes": false,
                "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
                "route_config": {
                    "name": name,
                    "virtual_hosts": [{
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{
                            "match": {"prefix": ""},
                            "direct_response": {"status": 200, "body": {"inline_string": "reached"}},
                            "response_headers_to_add": [{"header": {"key": client::UPSTREAM_HEADER, "value": "1"}}]
                        }]
                    }]
                },
                "http_filters": http_filters
            }
        })
    };
    json!({
        "name": name,
        "address": {"socket_address": {"address": ip.to_string(), "port_value": port}},
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
        }],
        "filter_chains": [
            {
                "filter_chain_match": {"transport_protocol": "tls"},
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": false,
                        "common_tls_context": {
                            "tls_certificates": [{
                                "certificate_chain": {"filename": format!("{cert_dir}/server.pem")},
                                "private_key": {"filename": format!("{cert_dir}/server.key")}
                            }],
                            "validation_context": {"trusted_ca": {"filename": format!("{cert_dir}/ca.pem")}}
                        }
                    }
                },
                "filters": [hcm(true)]
            },
            {"filters": [hcm(false)]}
        ]
    })
}

fn frame(r: &GenRequest) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/1.1\r\nhost: {}\r\n", r.method, r.path, r.host);
    for (n, v) in &r.headers {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    head.push_str("connection: close\r\n");
    if !matches!(r.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") {
        head.push_str("content-length: 0\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn send_all(opts: &Options, envoy: &DiffEnvoy, cases: &[Prepared]) -> Vec<Outcome> {
    let jobs: Vec<(usize, &GenRequest)> = cases
        .iter()
        .flat_map(|c| c.requests.iter().map(move |r| (c.index, r)))
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    let configs: Mutex<HashMap<Caller, Result<Arc<rustls::ClientConfig>, String>>> =
        Mutex::new(HashMap::new());
    let config_for = |caller: &Caller| -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if *caller == Caller::Plaintext {
            return Ok(None);
        }
        if let Some(c) = configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(caller)
        {
            return c.clone().map(Some);
        }
        let made = match caller {
            Caller::Uri(u) => envoy
                .pki
                .client(u.as_str())
                .map_err(|e| e.to_string())
                .and_then(|cert| client::tls_config(envoy.pki.ca_der(), Some(&cert))),
            _ => client::tls_config(envoy.pki.ca_der(), None),
        };
        configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(caller.clone(), made.clone());
        made.map(Some)
    };
    let deadline = Instant::now() + opts.deadline;
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(case, req)) = jobs.get(i) else {
                    break;
                };
                let bytes = frame(req);
                let (istio, meshfence) = match config_for(&req.from) {
                    Err(e) => {
                        let a = Answer {
                            status: 0,
                            upstream: false,
                            body: String::new(),
                            error: Some(format!("client setup: {e}")),
                        };
                        (a.clone(), a)
                    }
                    Ok(_) if Instant::now() > deadline => {
                        let a = Answer {
                            status: 0,
                            upstream: false,
                            body: String::new(),
                            error: Some(format!(
                                "not sent: the run's {:?} deadline passed",
                                opts.deadline
                            )),
                        };
                        (a.clone(), a)
                    }
                    Ok(tls) => {
                        // A connection that got no response at all (a reset
                        // under load) is tried again, twice at most.
                        let send = |side: Side| {
                            let mut answer = client::exchange(
                                side.addr(case, req.port),
                                tls.clone(),
                                &bytes,
                                opts.timeout,
                            );
                            for _ in 0..2 {
                                if answer.error.is_none() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                                answer = client::exchange(
                                    side.addr(case, req.port),
                                    tls.clone(),
                                    &bytes,
                                    opts.timeout,
                                );
                            }
                            answer
                        };
                        (send(Side::Istio), send(Side::Meshfence))
                    }
                };
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Outcome {
                        case,
                        request: req.clone(),
                        istio,
                        meshfence,
                    });
            });
        }
    });
    let mut v = results.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by(|a, b| (a.case, &a.request).cmp(&(b.case, &b.request)));
    v
}
