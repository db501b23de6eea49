//! Cases files (DESIGN §11): a workload and requests with the decision each
//! must get, and the runner of `meshfence test`.
//!
//! [`run_cases`] decides with the evaluator and checks `expectUpstreamHeaders`
//! against the identity rewrite in the decision. [`run_cases_envoy`] is where
//! sending the same cases through a real Envoy plugs in.

use std::path::Path;

use meshfence_ruleset::eval::Decision;
use meshfence_ruleset::ir::Ruleset;

use crate::diagnostics::{Errors, Location};
use crate::explain::{self, check_ip, RequestSpec, WorkloadSpec};
use crate::source::{self, index, join, Node, Reader, Value};

/// The real-Envoy runner (wasm-test-harness, feature `envoy`).
pub use wasm_test_harness::envoy;
pub mod envoy_run;

/// A whole cases file.
#[derive(Debug, Clone)]
pub struct CasesFile {
    pub workload: WorkloadSpec,
    pub cases: Vec<Case>,
}

/// The decision a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub at: Location,
    pub request: RequestSpec,
    pub expect: Expect,
    pub expect_audit: Option<bool>,
    /// What the dry-run (shadow) policies would decide, if enforced.
    pub expect_dry_run: Option<Expect>,
    /// Header name (lower case) → value, or `None` for "must be absent".
    pub expect_upstream_headers: Vec<(String, Option<String>)>,
    /// The request target the upstream must receive (an addition to DESIGN
    /// §11): with `--envoy`, the path after Envoy's normalization; without,
    /// the path as written (nothing normalizes it).
    pub expect_upstream_path: Option<String>,
    /// The client certificate presented for `from` (an addition to DESIGN
    /// §11, for attack cases): by default one signed by the CA Envoy trusts.
    pub certificate: Certificate,
    /// The listener the case goes to; `None`: mTLS with a certificate,
    /// permissive without (DESIGN §11).
    pub listener: Option<ListenerKind>,
}

/// `certificate:` of a case: what the client presents besides `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Certificate {
    /// Signed by the CA Envoy trusts; its only URI SAN is `from` (any URI,
    /// SPIFFE or not). Without `from`: no certificate.
    #[default]
    Trusted,
    /// The same certificate signed by a CA Envoy does not trust: every
    /// listener refuses the handshake (a presented certificate must validate).
    UntrustedCa,
    /// A certificate from the trusted CA with a DNS SAN and no URI SAN: an
    /// mTLS connection without an identity. `from` must be absent.
    NoUriSan,
}

/// `listener:` of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Requires a client certificate (Istio STRICT).
    Mtls,
    /// Accepts a client without one (Istio PERMISSIVE).
    Permissive,
}

impl Case {
    /// The listener the case is sent to.
    pub fn listener(&self) -> ListenerKind {
        self.listener.unwrap_or(
            if self.request.from.is_some() || self.certificate != Certificate::Trusted {
                ListenerKind::Mtls
            } else {
                ListenerKind::Permissive
            },
        )
    }

    /// Why the TLS handshake fails before any filter runs, if it does.
    pub fn refused_by_tls(&self) -> Option<&'static str> {
        if self.certificate == Certificate::UntrustedCa {
            return Some("the client certificate is not signed by a trusted CA");
        }
        let presents = self.request.from.is_some() || self.certificate == Certificate::NoUriSan;
        if !presents && self.listener() == ListenerKind::Mtls {
            return Some("the mTLS listener requires a client certificate");
        }
        None
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    /// Empty when the case passed; else what went wrong.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
    /// `ok   name` or `FAIL name: what went wrong`.
    pub fn line(&self) -> String {
        if self.passed() {
            format!("ok   {}", self.name)
        } else {
            format!("FAIL {}: {}", self.name, self.failures.join("; "))
        }
    }
}

/// `N passed, M failed`.
pub fn summary(results: &[CaseResult]) -> String {
    let passed = results.iter().filter(|r| r.passed()).count();
    format!("{passed} passed, {} failed", results.len() - passed)
}

const CASE_KEYS: &[&str] = &[
    "name",
    "from",
    "method",
    "path",
    "host",
    "port",
    "headers",
    "expect",
    "expectAudit",
    "expectDryRun",
    "expectUpstreamHeaders",
    "sourceIp",
    "remoteIp",
    "destinationIp",
    "sni",
    "certificate",
    "listener",
    "expectUpstreamPath",
];

/// Reads a cases file.
pub fn load(path: &Path) -> Result<CasesFile, Errors> {
    let docs = source::parse_file(path)?;
    from_docs(&path.display().to_string(), docs)
}

/// Parses a cases file from text.
pub fn parse_str(file: &str, text: &str) -> Result<CasesFile, Errors> {
    let docs = source::parse_str(file, text)?;
    from_docs(file, docs)
}

fn from_docs(file: &str, docs: Vec<source::Document>) -> Result<CasesFile, Errors> {
    let mut r = Reader::default();
    let Some(doc) = docs.first() else {
        return Err(crate::Error::new(
            Location {
                file: file.into(),
                line: 1,
                column: 1,
            },
            "",
            "the cases file is empty",
        )
        .into());
    };
    if docs.len() > 1 {
        r.error(&docs[1].root.at, "", "a cases file holds one document");
    }
    let out = read(&mut r, &doc.root);
    match out {
        Some(c) if r.errors.is_empty() => Ok(c),
        _ => Err(Errors(r.into_sorted())),
    }
}

fn opt_string(r: &mut Reader, f: &source::Fields<'_>, key: &str, path: &str) -> Option<String> {
    let n = f.get(key).filter(|n| !n.is_null())?;
    r.string(n, &join(path, key))
}

fn read(r: &mut Reader, root: &Node) -> Option<CasesFile> {
    let f = r.fields(root, "", &["workload", "cases"])?;
    let mut workload = WorkloadSpec::default();
    match f.get("workload").filter(|n| !n.is_null()) {
        None => r.error(&root.at, "workload", "`workload` is required"),
        Some(w) => {
            if let Some(wf) = r.fields(w, "workload", &["namespace", "labels"]) {
                match opt_string(r, &wf, "namespace", "workload") {
                    Some(ns) if !ns.is_empty() => workload.namespace = ns,
                    _ => r.error(&w.at, "workload.namespace", "`namespace` is required"),
                }
                if let Some(l) = wf.get("labels") {
                    if let Some(lf) = labels(r, l, "workload.labels") {
                        workload.labels = lf;
                    }
                }
            }
        }
    }
    let mut cases = Vec::new();
    if let Some(n) = f.get("cases") {
        if let Some(items) = r.list(n, "cases") {
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = read_case(r, item, &index("cases", i)) {
                    cases.push(c);
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for c in &cases {
        if !seen.insert(c.name.clone()) {
            r.error(&c.at, "cases", format!("two cases are named `{}`", c.name));
        }
    }
    Some(CasesFile { workload, cases })
}

fn labels(r: &mut Reader, node: &Node, path: &str) -> Option<Vec<(String, String)>> {
    match &node.value {
        Value::Null => Some(Vec::new()),
        Value::Map(entries) => {
            let mut out = Vec::new();
            for (k, v) in entries {
                let key = r.string(k, path)?;
                let p = join(path, &key);
                let val = match &v.value {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        r.error(
                            &v.at,
                            &p,
                            format!("expected a string, found {}", other.kind()),
                        );
                        continue;
                    }
                };
                out.push((key, val));
            }
            Some(out)
        }
        other => {
            r.error(
                &node.at,
                path,
                format!("expected a mapping, found {}", other.kind()),
            );
            None
        }
    }
}

fn read_case(r: &mut Reader, node: &Node, path: &str) -> Option<Case> {
    let f = r.fields(node, path, CASE_KEYS)?;
    let before = r.errors.len();
    let name = match opt_string(r, &f, "name", path) {
        Some(n) if !n.is_empty() => n,
        _ => {
            r.error(&node.at, &join(path, "name"), "`name` is required");
            String::new()
        }
    };
    let mut req = RequestSpec {
        from: opt_string(r, &f, "from", path),
        ..RequestSpec::default()
    };
    if let Some(m) = opt_string(r, &f, "method", path) {
        req.method = m;
    }
    if let Some(p) = opt_string(r, &f, "path", path) {
        req.path = p;
    }
    if let Some(h) = opt_string(r, &f, "host", path) {
        req.host = h;
    }
    if let Some(n) = f.get("port").filter(|n| !n.is_null()) {
        let p = join(path, "port");
        let port = match &n.value {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.parse::<i64>().ok(),
            _ => None,
        };
        match port {
            Some(i) if (1..=65535).contains(&i) => req.port = i as u16,
            _ => r.error(&n.at, &p, "expected a port number (1-65535)"),
        }
    }
    for (key, slot) in [
        ("sourceIp", &mut req.source_ip),
        ("remoteIp", &mut req.remote_ip),
        ("destinationIp", &mut req.destination_ip),
    ] {
        if let Some(v) = opt_string(r, &f, key, path) {
            let v = Some(v);
            if let Err(m) = check_ip(key, &v) {
                r.error(
                    &f.get(key).map(|n| n.at.clone()).unwrap_or(node.at.clone()),
                    &join(path, key),
                    m,
                );
            }
            *slot = v;
        }
    }
    req.sni = opt_string(r, &f, "sni", path);
    if let Some(h) = f.get("headers") {
        let hp = join(path, "headers");
        if let Some(items) = r.list(h, &hp) {
            for (i, item) in items.iter().enumerate() {
                let ip = index(&hp, i);
                match &item.value {
                    Value::Seq(pair) if pair.len() == 2 => {
                        let k = r.string(&pair[0], &ip);
                        let v = r.string(&pair[1], &ip);
                        if let (Some(k), Some(v)) = (k, v) {
                            req.headers.push((k, v));
                        }
                    }
                    _ => r.error(&item.at, &ip, "expected a [name, value] pair"),
                }
            }
        }
    }
    let ep = join(path, "expect");
    let expect = match f.get("expect").filter(|n| !n.is_null()) {
        None => {
            r.error(&node.at, &ep, "`expect` is required (allow or deny)");
            Expect::Deny
        }
        Some(n) => match r.string(n, &ep).as_deref() {
            Some("allow") => Expect::Allow,
            Some("deny") => Expect::Deny,
            Some(other) => {
                r.error(&n.at, &ep, format!("`{other}` is not allow or deny"));
                Expect::Deny
            }
            None => Expect::Deny,
        },
    };
    let expect_audit = match f.get("expectAudit").filter(|n| !n.is_null()) {
        None => None,
        Some(n) => match n.value {
            Value::Bool(b) => Some(b),
            _ => {
                r.error(
                    &n.at,
                    &join(path, "expectAudit"),
                    format!("expected a boolean, found {}", n.value.kind()),
                );
                None
            }
        },
    };
    let expect_dry_run = match f.get("expectDryRun").filter(|n| !n.is_null()) {
        None => None,
        Some(n) => match r.string(n, &join(path, "expectDryRun")).as_deref() {
            Some("allow") => Some(Expect::Allow),
            Some("deny") => Some(Expect::Deny),
            Some(other) => {
                r.error(
                    &n.at,
                    &join(path, "expectDryRun"),
                    format!("`{other}` is not allow or deny"),
                );
                None
            }
            None => None,
        },
    };
    let mut certificate = Certificate::Trusted;
    if let Some(n) = f.get("certificate").filter(|n| !n.is_null()) {
        let p = join(path, "certificate");
        match r.string(n, &p).as_deref() {
            Some("trusted") => {}
            Some("untrusted-ca") => certificate = Certificate::UntrustedCa,
            Some("no-uri-san") => certificate = Certificate::NoUriSan,
            Some(other) => r.error(
                &n.at,
                &p,
                format!("`{other}` is not trusted, untrusted-ca or no-uri-san"),
            ),
            None => {}
        }
        match certificate {
            Certificate::UntrustedCa if req.from.is_none() => r.error(
                &n.at,
                &p,
                "`untrusted-ca` needs `from` (the URI SAN of the certificate)",
            ),
            Certificate::NoUriSan if req.from.is_some() => r.error(
                &n.at,
                &p,
                "`no-uri-san` presents no URI SAN: leave `from` out",
            ),
            _ => {}
        }
    }
    let expect_upstream_path = opt_string(r, &f, "expectUpstreamPath", path);
    let mut listener = None;
    if let Some(n) = f.get("listener").filter(|n| !n.is_null()) {
        let p = join(path, "listener");
        match r.string(n, &p).as_deref() {
            Some("mtls") => listener = Some(ListenerKind::Mtls),
            Some("permissive") => listener = Some(ListenerKind::Permissive),
            Some(other) => r.error(&n.at, &p, format!("`{other}` is not mtls or permissive")),
            None => {}
        }
    }
    let mut expect_upstream_headers = Vec::new();
    if let Some(n) = f.get("expectUpstreamHeaders").filter(|n| !n.is_null()) {
        let p = join(path, "expectUpstreamHeaders");
        match &n.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let Some(key) = r.string(k, &p) else { continue };
                    let vp = join(&p, &key);
                    let val = match &v.value {
                        Value::Null => None,
                        Value::Str(s) => Some(s.clone()),
                        other => {
                            r.error(
                                &v.at,
                                &vp,
                                format!("expected a string or null, found {}", other.kind()),
                            );
                            continue;
                        }
                    };
                    expect_upstream_headers.push((key.to_ascii_lowercase(), val));
                }
            }
            other => r.error(
                &n.at,
                &p,
                format!("expected a mapping, found {}", other.kind()),
            ),
        }
    }
    (r.errors.len() == before).then_some(Case {
        name,
        at: node.at.clone(),
        request: req,
        expect,
        expect_audit,
        expect_dry_run,
        expect_upstream_headers,
        expect_upstream_path,
        certificate,
        listener,
    })
}

/// What one case came to: its result, and what a table shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: CaseResult,
    /// What happened: `allow`, `deny` (evaluator); `allow 200`, `deny 403`,
    /// `deny: TLS handshake refused` (Envoy).
    pub got: String,
    /// Whether the request reached the upstream (Envoy), or would (evaluator).
    pub reached_upstream: bool,
    /// The identity header the upstream received (every copy joined with `,`);
    /// `None` when absent or when the request never got there.
    pub upstream_identity: Option<String>,
    /// Whether the request was audited, when known (Envoy: only for cases
    /// with `expectAudit`, read from the filter's counter).
    pub audited: Option<bool>,
}

/// The identity a case presents, short: the SPIFFE ID without the scheme and
/// `trust_domain`, and what is odd about its certificate.
pub fn caller(case: &Case, trust_domain: &str) -> String {
    let prefix = format!("spiffe://{trust_domain}/");
    let from = case
        .request
        .from
        .as_deref()
        .map(|f| match f.strip_prefix(&prefix) {
            Some(rest) => rest.to_string(),
            None => f.to_string(),
        });
    let mut s = match (case.certificate, from) {
        (Certificate::NoUriSan, _) => "cert without URI SAN".to_string(),
        (Certificate::UntrustedCa, Some(f)) => format!("{f} (untrusted CA)"),
        (_, Some(f)) => f,
        (_, None) => "no certificate".to_string(),
    };
    if case.listener.is_some() {
        let l = match case.listener() {
            ListenerKind::Mtls => "mTLS",
            ListenerKind::Permissive => "permissive",
        };
        s = format!("{s} [{l}]");
    }
    s
}

/// The request of a case, short: method, path, then each header (a SPIFFE
/// ID of `trust_domain` in a header value shortened like the caller).
pub fn request_text(case: &Case, trust_domain: &str) -> String {
    let r = &case.request;
    let prefix = format!("spiffe://{trust_domain}/");
    let mut s = format!("{} {}", r.method, r.path);
    if r.host != RequestSpec::default().host {
        s.push_str(&format!(" host={}", r.host));
    }
    for (k, v) in &r.headers {
        let v = v.strip_prefix(&prefix).unwrap_or(v);
        s.push_str(&format!(" +{k}: {v}"));
    }
    s
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The outcomes as a table: result, case, caller, request, expected, got,
/// and the identity header the upstream received. Failures follow it.
pub fn table(ruleset: &Ruleset, file: &CasesFile, outcomes: &[Outcome]) -> String {
    let header_name = &ruleset.mesh.identity_header.name;
    let td = &ruleset.mesh.trust_domain;
    let mut rows: Vec<[String; 7]> = vec![[
        String::new(),
        "case".into(),
        "caller".into(),
        "request".into(),
        "expected".into(),
        "got".into(),
        format!("upstream {header_name}"),
    ]];
    for (case, o) in file.cases.iter().zip(outcomes) {
        let mut expected = match case.expect {
            Expect::Allow => "allow".to_string(),
            Expect::Deny => "deny".to_string(),
        };
        if case.expect_audit == Some(true) {
            expected.push_str(", audit");
        }
        let mut got = o.got.clone();
        if o.audited == Some(true) {
            got.push_str(", audit");
        }
        let upstream = if !o.reached_upstream {
            "-".to_string()
        } else {
            o.upstream_identity
                .clone()
                .unwrap_or_else(|| "(absent)".into())
        };
        rows.push([
            if o.result.passed() { "ok" } else { "FAIL" }.into(),
            clip(&case.name, 52),
            clip(&caller(case, td), 44),
            clip(&request_text(case, td), 84),
            expected,
            got,
            upstream,
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (j, (cell, w)) in row.iter().zip(widths).enumerate() {
            if j > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if j + 1 < row.len() {
                line.push_str(&" ".repeat(w - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    for o in outcomes.iter().filter(|o| !o.result.passed()) {
        out.push_str(&o.result.line());
        out.push('\n');
    }
    out
}

/// Runs every case with the evaluator.
pub fn run_cases(ruleset: &Ruleset, file: &CasesFile) -> Vec<CaseResult> {
    run_cases_outcomes(ruleset, file)
        .into_iter()
        .map(|o| o.result)
        .collect()
}

/// Runs every case with the evaluator, with what a table shows of each.
pub fn run_cases_outcomes(ruleset: &Ruleset, file: &CasesFile) -> Vec<Outcome> {
    file.cases
        .iter()
        .map(|case| {
            if let Some(why) = case.refused_by_tls() {
                return Outcome {
                    result: CaseResult {
                        name: case.name.clone(),
                        failures: check_refused(case, why),
                    },
                    got: "deny: TLS refused".into(),
                    reached_upstream: false,
                    upstream_identity: None,
                    audited: Some(false),
                };
            }
            explain::decide_with(ruleset, &file.workload, &case.request, |d| {
                let failures = check(ruleset, case, d);
                let upstream_identity = if d.allowed {
                    let name = &ruleset.mesh.identity_header.name;
                    let up = upstream_headers(ruleset, &case.request.headers, d);
                    let copies: Vec<&str> = up
                        .iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.as_str())
                        .collect();
                    (!copies.is_empty()).then(|| copies.join(","))
                } else {
                    None
                };
                Outcome {
                    result: CaseResult {
                        name: case.name.clone(),
                        failures,
                    },
                    got: if d.allowed { "allow" } else { "deny" }.into(),
                    reached_upstream: d.allowed,
                    upstream_identity,
                    audited: Some(d.audit.is_some()),
                }
            })
        })
        .collect()
}

/// A case whose TLS handshake fails: a deny that no filter, audit or
/// dry-run policy sees, and nothing reaches the upstream.
fn check_refused(case: &Case, why: &str) -> Vec<String> {
    let mut failures = Vec::new();
    if case.expect == Expect::Allow {
        failures.push(format!("expected allow, got deny (TLS handshake: {why})"));
    }
    if case.expect_audit == Some(true) {
        failures.push(format!(
            "expected audit, got no audit (TLS handshake: {why})"
        ));
    }
    if case.expect_dry_run == Some(Expect::Deny) {
        failures.push(format!(
            "expected dry-run deny, got no decision (TLS handshake: {why})"
        ));
    }
    failures.extend(unreached_header_failures(case));
    failures
}

/// `expectUpstreamHeaders` of a request that never reached the upstream:
/// "absent" holds; a value cannot.
fn unreached_header_failures(case: &Case) -> Vec<String> {
    let path = case.expect_upstream_path.as_ref().map(|want| {
        format!("upstream path: expected `{want}`, but the request never reaches the upstream")
    });
    path.into_iter()
        .chain(unreached_value_failures(case))
        .collect()
}

fn unreached_value_failures(case: &Case) -> Vec<String> {
    case.expect_upstream_headers
        .iter()
        .filter_map(|(name, want)| {
            want.as_ref().map(|v| {
                format!(
                    "upstream header {name}: expected `{v}`, but the request never reaches the upstream"
                )
            })
        })
        .collect()
}

/// Runs every case through a real Envoy running the built filter, with the
/// defaults of [`envoy_run::Options`] (the `.wasm` and Envoy found as
/// `meshfence test --envoy` finds them).
pub fn run_cases_envoy(ruleset_bytes: &[u8], file: &CasesFile) -> Result<Vec<CaseResult>, String> {
    let ruleset = meshfence_ruleset::format::from_bytes(ruleset_bytes)
        .map_err(|e| format!("not a valid ruleset: {e:?}"))?;
    let outcomes = envoy_run::run(
        ruleset_bytes,
        &ruleset,
        file,
        &envoy_run::Options::default(),
        &mut |_| {},
    )?;
    Ok(outcomes.into_iter().map(|o| o.result).collect())
}

fn check(ruleset: &Ruleset, case: &Case, d: &Decision<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let got = if d.allowed { "allow" } else { "deny" };
    let want = match case.expect {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
    };
    if got != want {
        failures.push(format!(
            "expected {want}, got {got} ({})",
            explain::describe_cause(ruleset, &d.cause)
        ));
    }
    if let Some(want_audit) = case.expect_audit {
        let audited = d.audit.is_some();
        if audited != want_audit {
            failures.push(match d.audit {
                Some(at) => format!(
                    "expected no audit, got audit ({})",
                    explain::describe_rule(ruleset, at)
                ),
                None => "expected audit, got no audit".to_string(),
            });
        }
    }
    if let Some(want) = case.expect_dry_run {
        let would_deny = d.dry_run.would_deny();
        if would_deny != (want == Expect::Deny) {
            failures.push(format!(
                "expected dry-run {}, got dry-run {}",
                if want == Expect::Deny {
                    "deny"
                } else {
                    "allow"
                },
                if would_deny { "deny" } else { "allow" }
            ));
        }
    }
    if let Some(want) = &case.expect_upstream_path {
        if !d.allowed {
            failures.push(format!(
                "upstream path: expected `{want}`, but the request never reaches the upstream"
            ));
        } else if want != &case.request.path {
            failures.push(format!(
                "upstream path: expected `{want}`, got `{}` (nothing normalizes paths without --envoy)",
                case.request.path
            ));
        }
    }
    if !case.expect_upstream_headers.is_empty() {
        if !d.allowed {
            failures.extend(unreached_value_failures(case));
        } else {
            let upstream = upstream_headers(ruleset, &case.request.headers, d);
            for (name, want) in &case.expect_upstream_headers {
                let copies: Vec<&str> = upstream
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .collect();
                let got = (!copies.is_empty()).then(|| copies.join(","));
                if &got != want {
                    failures.push(format!(
                        "upstream header {name}: expected {}, got {}",
                        show(want.as_deref()),
                        show(got.as_deref())
                    ));
                }
            }
        }
    }
    failures
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("`{v}`"),
        None => "absent".into(),
    }
}

/// The headers the upstream receives after the identity rewrite.
pub fn upstream_headers(
    ruleset: &Ruleset,
    headers: &[(String, String)],
    d: &Decision<'_>,
) -> Vec<(String, String)> {
    let name = &ruleset.mesh.identity_header.name;
    let rw = d.identity.rewrite;
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !(rw.strip && k.eq_ignore_ascii_case(name)))
        .cloned()
        .collect();
    if let Some(v) = rw.set {
        out.push((name.clone(), v.to_string()));
    }
    out
}
