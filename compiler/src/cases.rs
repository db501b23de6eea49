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
    })
}

/// Runs every case with the evaluator.
pub fn run_cases(ruleset: &Ruleset, file: &CasesFile) -> Vec<CaseResult> {
    file.cases
        .iter()
        .map(|case| {
            let failures = explain::decide_with(ruleset, &file.workload, &case.request, |d| {
                check(ruleset, case, d)
            });
            CaseResult {
                name: case.name.clone(),
                failures,
            }
        })
        .collect()
}

/// Runs every case through a real Envoy running the built filter.
///
/// Not available in this build: it reports why, and `meshfence test --envoy`
/// exits with status 2.
pub fn run_cases_envoy(
    _ruleset_bytes: &[u8],
    _file: &CasesFile,
) -> Result<Vec<CaseResult>, String> {
    Err(
        "`--envoy` is not available yet: the real-Envoy runner (wasm-test-harness) \
         has not been wired into this build; run without --envoy to decide with the evaluator"
            .to_string(),
    )
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
    if !case.expect_upstream_headers.is_empty() {
        if !d.allowed {
            failures.push(
                "expected upstream headers, but the request never reaches the upstream".into(),
            );
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
