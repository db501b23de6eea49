//! `meshfence test --envoy`: every case of a cases file sent through a real
//! Envoy running the built filter (DESIGN §11).
//!
//! One Envoy per run, on free loopback ports, started from the shipped
//! `envoy-configs` templates (strict path normalization) with the compiled
//! ruleset and the file's workload in the plugin configuration. Each case goes over TLS
//! on a new connection, with a client certificate whose only URI SAN is its
//! `from` (none: the permissive listener, without a certificate), its
//! request line and headers written byte for byte. A case holds when:
//!
//! - `allow`: a 2xx came from the upstream;
//! - `deny`: the upstream never saw the request and the client got no 2xx
//!   (a 403, a 400, a refused handshake);
//! - `expectAudit` / `expectDryRun`: the filter's `meshfence.audited` /
//!   `meshfence.dry_run_would_deny` counters in Envoy's stats moved (or not)
//!   while the case ran;
//! - `expectUpstreamHeaders`: the upstream received exactly that value (every
//!   copy joined with `,`), or no such header for `null`;
//! - `expectUpstreamPath`: the upstream received exactly that request target.
//!
//! A local Envoy cannot present every request a mesh sees: the destination
//! port is the listener's, addresses are 127.0.0.1 and the SNI is
//! `localhost`. When a case names other values and the evaluator decides the
//! case differently with the values Envoy really carries, the case fails and
//! says so, rather than passing or failing for the wrong reason.

use std::path::{Path, PathBuf};

use meshfence_ruleset::ir::Ruleset;

use super::envoy::{
    self, Envoy, EnvoyConfig, Identity, Listener, Observation, PluginConfigFormat, Probe, Workload,
};
use super::{Case, CaseResult, CasesFile, Certificate, Expect, ListenerKind, Outcome};
use crate::explain::{self, RequestSpec};

/// The filter's counters (Envoy shows them under `wasmcustom.`).
const AUDITED: &str = "meshfence.audited";
const DRY_RUN_WOULD_DENY: &str = "meshfence.dry_run_would_deny";

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The filter's `.wasm`; `None`: found or built by [`find_wasm`].
    pub wasm: Option<PathBuf>,
    /// The command that runs Envoy; `None`: found by [`find_envoy`].
    pub envoy_command: Option<Vec<String>>,
    /// Envoy's path normalization: the shipped strict one, or Istio's
    /// default (`BASE`: `//`, `%2F`, `%5C` pass through to the filter).
    pub istio_normalization: bool,
}

/// Where the repository is, if we run inside a checkout of it: the current
/// directory or one of its parents, else the checkout this binary was built
/// from if it is still there. A checkout has `filter/Cargo.toml` and
/// `envoy-configs/`.
pub fn repo_root() -> Option<PathBuf> {
    let is_repo =
        |p: &Path| p.join("filter/Cargo.toml").is_file() && p.join("envoy-configs").is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(p) = cwd.ancestors().find(|p| is_repo(p)) {
            return Some(p.to_path_buf());
        }
    }
    Some(envoy::repo_root()).filter(|p| is_repo(p))
}

const WASM_REL: &str = "wasm32-unknown-unknown/release/meshfence_filter.wasm";

fn built_wasm(root: Option<&Path>) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("MESHFENCE_WASM") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        let t = match root {
            Some(root) if t.is_relative() => root.join(t),
            _ => t,
        };
        candidates.push(t.join(WASM_REL));
    }
    candidates.push(PathBuf::from("target").join(WASM_REL));
    if let Some(root) = root {
        candidates.push(root.join("target").join(WASM_REL));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The newest modification time of the files below `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        best = best.max(t);
    }
    best
}

/// Warns when a found `.wasm` is older than the sources it is built from.
fn warn_if_stale(wasm: &Path, root: Option<&Path>) {
    let (Some(root), Ok(built)) = (root, std::fs::metadata(wasm).and_then(|m| m.modified())) else {
        return;
    };
    let sources = ["filter/src", "ruleset/src"]
        .iter()
        .filter_map(|d| newest(&root.join(d)))
        .max();
    if sources.is_some_and(|s| s > built) {
        eprintln!(
            "meshfence: warning: {} is older than the filter's sources; `make wasm` rebuilds it",
            wasm.display()
        );
    }
}

/// The filter's `.wasm`: `explicit` (`--wasm`), else `$MESHFENCE_WASM`, else
/// `wasm32-unknown-unknown/release/meshfence_filter.wasm` under
/// `$CARGO_TARGET_DIR`, `./target` or the repository's `target`, else, inside
/// the repository, built with cargo. A found one older than the filter's
/// sources is used with a warning.
pub fn find_wasm(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("--wasm {}: no such file", p.display()))
        };
    }
    let root = repo_root();
    if let Some(p) = built_wasm(root.as_deref()) {
        warn_if_stale(&p, root.as_deref());
        return Ok(p);
    }
    let Some(root) = root else {
        return Err(
            "no filter .wasm found: pass --wasm PATH (the release build of \
                    meshfence-filter for wasm32-unknown-unknown), or run inside the \
                    meshfence repository to have it built"
                .into(),
        );
    };
    eprintln!("meshfence: building the filter (cargo build -p meshfence-filter --target wasm32-unknown-unknown --release)");
    wasm_test_harness::filter_build::build_filter()?;
    built_wasm(Some(&root))
        .ok_or_else(|| "cargo built the filter, but its .wasm is not where expected".into())
}

/// The command that runs Envoy (see [`envoy::envoy_command`]).
pub fn find_envoy() -> Result<Vec<String>, String> {
    envoy::envoy_command().map_err(|e| e.to_string())
}

/// The request as the local Envoy really carries it to the filter.
fn as_sent(case: &Case, port: u16) -> RequestSpec {
    RequestSpec {
        port,
        source_ip: Some("127.0.0.1".into()),
        remote_ip: case.request.remote_ip.as_ref().map(|_| "127.0.0.1".into()),
        destination_ip: Some("127.0.0.1".into()),
        sni: Some("localhost".into()),
        ..case.request.clone()
    }
}

/// Whether the evaluator decides `a` and `b` alike (decision, audit,
/// dry-run, identity rewrite).
fn same_decision(ruleset: &Ruleset, file: &CasesFile, a: &RequestSpec, b: &RequestSpec) -> bool {
    let key = |spec: &RequestSpec| {
        explain::decide_with(ruleset, &file.workload, spec, |d| {
            (
                d.allowed,
                d.audit.is_some(),
                d.dry_run.would_deny(),
                d.identity.rewrite.strip,
                d.identity.rewrite.set.map(str::to_string),
            )
        })
    };
    key(a) == key(b)
}

/// What the local Envoy cannot reproduce of a case, if it matters for its
/// decision.
fn unfaithful(ruleset: &Ruleset, file: &CasesFile, case: &Case, port: u16) -> Option<String> {
    let sent = as_sent(case, port);
    if same_decision(ruleset, file, &case.request, &sent) {
        return None;
    }
    let r = &case.request;
    let mut what = Vec::new();
    if r.port != port {
        what.push(format!(
            "destination port {} (Envoy listens on {port})",
            r.port
        ));
    }
    if r.source_ip != sent.source_ip {
        what.push(format!(
            "source IP {}",
            r.source_ip.as_deref().unwrap_or("none")
        ));
    }
    if r.remote_ip != sent.remote_ip {
        what.push(format!(
            "remote IP {}",
            r.remote_ip.as_deref().unwrap_or("none")
        ));
    }
    if r.destination_ip != sent.destination_ip {
        what.push(format!(
            "destination IP {}",
            r.destination_ip.as_deref().unwrap_or("none")
        ));
    }
    if r.sni != sent.sni {
        what.push(format!("SNI {}", r.sni.as_deref().unwrap_or("none")));
    }
    Some(format!(
        "cannot be sent faithfully: its decision depends on {}, which a local Envoy \
         cannot present (it carries 127.0.0.1 and SNI localhost); check it without --envoy",
        what.join(", ")
    ))
}

fn delta(before: Option<u64>, after: Option<u64>) -> u64 {
    after.unwrap_or(0).saturating_sub(before.unwrap_or(0))
}

/// Runs every case through one Envoy, calling `each` as each case finishes.
pub fn run(
    ruleset_bytes: &[u8],
    ruleset: &Ruleset,
    file: &CasesFile,
    opts: &Options,
    each: &mut dyn FnMut(&Outcome),
) -> Result<Vec<Outcome>, String> {
    let wasm = find_wasm(opts.wasm.as_deref())?;
    let command = match &opts.envoy_command {
        Some(c) => c.clone(),
        None => find_envoy()?,
    };
    let mut config = EnvoyConfig::with_filter(wasm, ruleset_bytes.to_vec());
    config.workload = Workload {
        namespace: file.workload.namespace.clone(),
        labels: file.workload.labels.clone(),
    };
    // The workload travels in the plugin configuration (JSON, the shape of
    // an Istio WasmPlugin's pluginConfig), as `meshfence wasmplugin
    // --workload` ships it.
    config.plugin_config = PluginConfigFormat::Json;
    config.envoy_command = Some(command);
    if opts.istio_normalization {
        config.normalization = envoy::Normalization::IstioDefault;
    }
    config.log_level = "warning".into();
    let envoy = Envoy::start(config).map_err(|e| e.to_string())?;
    let header = ruleset.mesh.identity_header.name.clone();
    let mut out = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let outcome = run_one(&envoy, ruleset, file, case, &header)?;
        each(&outcome);
        out.push(outcome);
    }
    envoy.stop();
    Ok(out)
}

fn counter(envoy: &Envoy, name: &str) -> Result<Option<u64>, String> {
    envoy
        .counter(name)
        .map_err(|e| format!("reading Envoy's stats: {e}"))
}

fn run_one(
    envoy: &Envoy,
    ruleset: &Ruleset,
    file: &CasesFile,
    case: &Case,
    header: &str,
) -> Result<Outcome, String> {
    let listener = match case.listener() {
        ListenerKind::Mtls => Listener::Mtls,
        ListenerKind::Permissive => Listener::Permissive,
    };
    let r = &case.request;
    let mut probe = Probe::new(&r.method, &r.path).host(&r.host).on(listener);
    for (k, v) in &r.headers {
        probe = probe.header(k, v);
    }
    let identity = match (case.certificate, &r.from) {
        (Certificate::Trusted, Some(from)) => Some(Identity::Uri(from.clone())),
        (Certificate::Trusted, None) => None,
        (Certificate::UntrustedCa, Some(from)) => Some(Identity::OtherCa(from.clone())),
        (Certificate::UntrustedCa, None) => None,
        (Certificate::NoUriSan, _) => Some(Identity::NoUriSan),
    };
    if let Some(id) = identity {
        let cert = envoy
            .caller(id)
            .map_err(|e| format!("{}: {e}", case.name))?;
        probe = probe.from(cert);
    }

    let mut failures = Vec::new();
    if let Some(why) = unfaithful(ruleset, file, case, envoy.port(listener)) {
        failures.push(why);
    }
    let counters = case.expect_audit.is_some() || case.expect_dry_run.is_some();
    let before = if counters {
        (
            counter(envoy, AUDITED)?,
            counter(envoy, DRY_RUN_WOULD_DENY)?,
        )
    } else {
        (None, None)
    };
    let seen = envoy
        .send(&probe)
        .map_err(|e| format!("{}: sending the request: {e}", case.name))?;
    let audited_delta = |b: Option<u64>, a: Option<u64>| delta(b, a) > 0;
    let after = if counters {
        (
            counter(envoy, AUDITED)?,
            counter(envoy, DRY_RUN_WOULD_DENY)?,
        )
    } else {
        (None, None)
    };

    let got = describe(&seen);
    match case.expect {
        Expect::Allow if !seen.allowed() => failures.push(format!("expected allow, got {got}")),
        Expect::Deny if !seen.denied() => failures.push(format!("expected deny, got {got}")),
        _ => {}
    }
    if let Some(want) = case.expect_audit {
        let audited = delta(before.0, after.0) > 0;
        if audited != want {
            failures.push(if want {
                format!("expected audit, but {AUDITED} did not move")
            } else {
                format!("expected no audit, but {AUDITED} moved")
            });
        }
    }
    if let Some(want) = case.expect_dry_run {
        let would_deny = delta(before.1, after.1) > 0;
        if would_deny != (want == Expect::Deny) {
            failures.push(if would_deny {
                format!("expected dry-run allow, but {DRY_RUN_WOULD_DENY} moved")
            } else {
                format!("expected dry-run deny, but {DRY_RUN_WOULD_DENY} did not move")
            });
        }
    }
    match &seen.upstream_saw {
        Some(up) => {
            if let Some(want) = &case.expect_upstream_path {
                if &up.path != want {
                    failures.push(format!(
                        "upstream path: expected `{want}`, got `{}`",
                        up.path
                    ));
                }
            }
            for (name, want) in &case.expect_upstream_headers {
                let got = up.header(name);
                if &got != want {
                    failures.push(format!(
                        "upstream header {name}: expected {}, got {}",
                        show(want.as_deref()),
                        show(got.as_deref())
                    ));
                }
            }
        }
        None => failures.extend(super::unreached_header_failures(case)),
    }
    Ok(Outcome {
        result: CaseResult {
            name: case.name.clone(),
            failures,
        },
        got: short(&seen),
        reached_upstream: seen.upstream_saw.is_some(),
        upstream_identity: seen.upstream_saw.as_ref().and_then(|u| u.header(header)),
        audited: case.expect_audit.map(|_| audited_delta(before.0, after.0)),
    })
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("`{v}`"),
        None => "absent".into(),
    }
}

/// `allow 200`, `deny 403`, `deny: TLS handshake refused`.
fn short(o: &Observation) -> String {
    if o.status == 0 {
        return "deny: TLS refused".into();
    }
    let verdict = if o.allowed() {
        "allow"
    } else if o.denied() {
        "deny"
    } else {
        "?"
    };
    format!("{verdict} {}", o.status)
}

/// A longer account for failure messages.
fn describe(o: &Observation) -> String {
    if o.status == 0 {
        let why = o.refused.as_deref().unwrap_or("no response");
        return if o.upstream_saw.is_some() {
            format!("no response, but the upstream saw the request ({why})")
        } else {
            format!("no response ({why})")
        };
    }
    let body: String = o.body.chars().take(80).collect();
    let body = body.trim();
    let reached = if o.upstream_saw.is_some() {
        "the upstream saw it"
    } else {
        "the upstream never saw it"
    };
    if body.is_empty() || o.upstream_saw.is_some() {
        format!("{} ({reached})", o.status)
    } else {
        format!("{} `{body}` ({reached})", o.status)
    }
}
