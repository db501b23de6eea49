//! A proxy-wasm ABI 0.2.1 host on [wasmi], for testing the real filter `.wasm`
//! in `cargo test`.
//!
//! [`Host::load`] instantiates a module and starts its VM and root context;
//! [`Host::configure`] hands it a plugin configuration; [`Host::request`]
//! drives one HTTP stream through `proxy_on_request_headers` and reports what
//! the filter did ([`Outcome`]): its action, local reply, the headers the
//! upstream would get, its header mutations, logs and host calls. A trap is an
//! `Err(`[`HostError::Trap`]`)`, never a panic of the test.
//!
//! The header map behaves as Envoy's does for lookups (names compare ignoring
//! ASCII case, `get` returns the first copy, `remove` removes every copy), but
//! keeps names as the test wrote them, so a filter that assumed lower case
//! would be caught. `replace` is Envoy's older, weaker `setCopy`: it rewrites
//! the first copy and leaves the others.
//!
//! Any import the module declares that is not implemented here answers
//! `Unimplemented` (12) instead of failing instantiation or trapping; every
//! call is recorded. [`Host::fail_call`] makes a named host call return a
//! chosen status, to check the filter fails closed without trapping.

mod abi;
pub mod pairs;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wasmi::{Config, Engine, Instance, Linker, Module, Store, TypedFunc};

pub use abi::status;

/// Default fuel (about one unit per instruction) for one call into the
/// module: ample for the filter, a bound on a runaway loop. See
/// [`Host::set_fuel_per_call`].
pub const DEFAULT_FUEL_PER_CALL: u64 = 200_000_000;

const ROOT_CONTEXT_ID: i32 = 1;

/// Why the host could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The module could not be read, compiled or instantiated.
    Load(String),
    /// The module trapped (a panic, an out-of-bounds access, no fuel left).
    Trap(String),
    /// An export the ABI needs is missing or has the wrong type.
    MissingExport(String),
    /// An earlier trap left the VM unusable (Envoy would reload it).
    Poisoned,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Load(e) => write!(f, "cannot load module: {e}"),
            HostError::Trap(e) => write!(f, "module trapped: {e}"),
            HostError::MissingExport(e) => write!(f, "missing export: {e}"),
            HostError::Poisoned => f.write_str("the VM trapped earlier"),
        }
    }
}

impl std::error::Error for HostError {}

/// One log line the module wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// proxy-wasm level: 0 trace, 1 debug, 2 info, 3 warn, 4 error, 5 critical.
    pub level: u32,
    pub message: String,
}

/// A local reply the module sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl LocalReply {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A change the module made to the request headers, in call order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Add(String, Vec<u8>),
    Replace(String, Vec<u8>),
    Remove(String),
    SetAll(Vec<(String, Vec<u8>)>),
}

/// What `proxy_on_request_headers` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
    Other(i32),
}

/// One HTTP request: the connection facts and the request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// The peer certificate's first URI SAN, byte for byte; `None` without a
    /// client certificate.
    pub san: Option<Vec<u8>>,
    pub method: Vec<u8>,
    pub path: Vec<u8>,
    pub authority: Vec<u8>,
    /// Headers after the pseudo-headers, in order; names may repeat and may
    /// use any letter case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `source.address`, e.g. `10.0.0.1:50000`.
    pub source_address: Option<String>,
    /// `destination.address`, e.g. `10.0.0.2:8080`.
    pub destination_address: Option<String>,
    /// `destination.port`, delivered as 8 little-endian bytes.
    pub destination_port: Option<u16>,
    /// `connection.requested_server_name`.
    pub sni: Option<String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            san: None,
            method: b"GET".to_vec(),
            path: b"/".to_vec(),
            authority: b"example.com".to_vec(),
            headers: Vec::new(),
            source_address: Some(String::from("10.0.0.1:50000")),
            destination_address: Some(String::from("10.0.0.2:8080")),
            destination_port: Some(8080),
            sni: None,
        }
    }
}

impl RequestSpec {
    /// `GET path` with no client certificate.
    pub fn get(path: &str) -> Self {
        RequestSpec {
            path: path.as_bytes().to_vec(),
            ..RequestSpec::default()
        }
    }

    /// From a peer whose certificate's URI SAN is `san`.
    pub fn from(mut self, san: &str) -> Self {
        self.san = Some(san.as_bytes().to_vec());
        self
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = method.as_bytes().to_vec();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    /// The request header map as the host hands it to the module.
    pub fn header_map(&self) -> Vec<(String, Vec<u8>)> {
        let mut map = vec![
            (String::from(":authority"), self.authority.clone()),
            (String::from(":path"), self.path.clone()),
            (String::from(":method"), self.method.clone()),
            (String::from(":scheme"), b"http".to_vec()),
        ];
        map.extend(self.headers.iter().cloned());
        map
    }
}

/// What the module did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    pub local_reply: Option<LocalReply>,
    /// The request headers after the module's mutations: what the upstream
    /// would receive (when the request continues).
    pub headers_after: Vec<(String, Vec<u8>)>,
    pub mutations: Vec<Mutation>,
    pub logs: Vec<LogLine>,
    /// The host calls the module made in `proxy_on_request_headers`, in order.
    pub host_calls: Vec<String>,
    /// Fuel (about one unit per wasm instruction) `proxy_on_request_headers`
    /// used, the host's work in the calls excluded.
    pub fuel: u64,
}

impl Outcome {
    /// The request went on to the upstream: `Continue` and no local reply.
    pub fn allowed(&self) -> bool {
        self.action == Action::Continue && self.local_reply.is_none()
    }

    /// The status of the local reply, if any.
    pub fn status(&self) -> Option<u32> {
        self.local_reply.as_ref().map(|r| r.status)
    }

    /// Every value of a header after the mutations, names compared ignoring
    /// ASCII case.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers_after
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// Host state the imports work on.
#[derive(Default)]
pub(crate) struct State {
    pub memory: Option<wasmi::Memory>,
    pub malloc: Option<TypedFunc<i32, i32>>,
    pub plugin_config: Option<Vec<u8>>,
    pub vm_config: Option<Vec<u8>>,
    /// Properties by path: per-request ones first, then long-lived ones.
    pub request_properties: HashMap<Vec<String>, Vec<u8>>,
    pub properties: HashMap<Vec<String>, Vec<u8>>,
    pub request_headers: Vec<(String, Vec<u8>)>,
    pub mutations: Vec<Mutation>,
    pub local_reply: Option<LocalReply>,
    /// Lines of the call in progress, then moved to `logs`.
    pub pending_logs: Vec<LogLine>,
    pub logs: Vec<LogLine>,
    pub calls: Vec<String>,
    pub metrics: Vec<(String, u32, i64)>,
    pub faults: HashMap<String, u32>,
    pub tick_period_ms: u32,
    pub log_level: u32,
}

/// A loaded module with its VM and root context started.
pub struct Host {
    store: Store<State>,
    instance: Instance,
    next_context_id: i32,
    poisoned: bool,
    fuel_per_call: u64,
    last_fuel: u64,
}

impl Host {
    /// Loads and starts the module at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Host, HostError> {
        let bytes = std::fs::read(path.as_ref())
            .map_err(|e| HostError::Load(format!("{}: {e}", path.as_ref().display())))?;
        Host::from_bytes(&bytes)
    }

    /// Loads and starts the module, with no node properties set.
    pub fn from_bytes(wasm: &[u8]) -> Result<Host, HostError> {
        Host::with_properties(wasm, Vec::new())
    }

    /// Loads the module and sets long-lived properties (node metadata, …)
    /// before the VM starts.
    pub fn with_properties(
        wasm: &[u8],
        properties: Vec<(Vec<String>, Vec<u8>)>,
    ) -> Result<Host, HostError> {
        let mut config = Config::default();
        config.consume_fuel(true);
        let engine = Engine::new(&config);
        let module = Module::new(&engine, wasm).map_err(|e| HostError::Load(e.to_string()))?;
        let mut linker = Linker::<State>::new(&engine);
        abi::define(&mut linker, &module).map_err(|e| HostError::Load(e.to_string()))?;
        let state = State {
            properties: properties.into_iter().collect(),
            log_level: 0,
            ..State::default()
        };
        let mut store = Store::new(&engine, state);
        store
            .set_fuel(DEFAULT_FUEL_PER_CALL)
            .map_err(|e| HostError::Load(e.to_string()))?;
        let instance = linker
            .instantiate_and_start(&mut store, &module)
            .map_err(|e| HostError::Load(e.to_string()))?;
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or_else(|| HostError::MissingExport("memory".into()))?;
        let malloc = instance
            .get_typed_func::<i32, i32>(&store, "malloc")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&store, "proxy_on_memory_allocate"))
            .map_err(|_| HostError::MissingExport("malloc or proxy_on_memory_allocate".into()))?;
        store.data_mut().memory = Some(memory);
        store.data_mut().malloc = Some(malloc);
        let mut host = Host {
            store,
            instance,
            next_context_id: ROOT_CONTEXT_ID + 1,
            poisoned: false,
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            last_fuel: 0,
        };
        for start in ["_initialize", "_start"] {
            if host.instance.get_func(&host.store, start).is_some() {
                host.call::<(), ()>(start, ())?;
            }
        }
        host.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT_CONTEXT_ID, 0))?;
        let started = host.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT_CONTEXT_ID, 0))?;
        if started == 0 {
            return Err(HostError::Load("proxy_on_vm_start returned false".into()));
        }
        Ok(host)
    }

    fn call<P, R>(&mut self, name: &str, params: P) -> Result<R, HostError>
    where
        P: wasmi::WasmParams,
        R: wasmi::WasmResults,
    {
        if self.poisoned {
            return Err(HostError::Poisoned);
        }
        let func = self
            .instance
            .get_typed_func::<P, R>(&self.store, name)
            .map_err(|e| HostError::MissingExport(format!("{name}: {e}")))?;
        self.store
            .set_fuel(self.fuel_per_call)
            .map_err(|e| HostError::Trap(e.to_string()))?;
        let result = func.call(&mut self.store, params);
        self.last_fuel = self
            .fuel_per_call
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        result.map_err(|e| {
            self.poisoned = true;
            HostError::Trap(format!("in {name}: {e}"))
        })
    }

    /// Sets the fuel each later call into the module gets (a call that runs
    /// out traps).
    pub fn set_fuel_per_call(&mut self, fuel: u64) {
        self.fuel_per_call = fuel;
    }

    /// Fuel (roughly, wasm instructions) the last call into the module used.
    pub fn last_call_fuel(&self) -> u64 {
        self.last_fuel
    }

    /// Whether the module exports a function of this name.
    pub fn exports(&self, name: &str) -> bool {
        self.instance.get_func(&self.store, name).is_some()
    }

    /// Sets a long-lived property (e.g. `["node", "metadata", "NAMESPACE"]`).
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        let key = path.iter().map(|s| s.to_string()).collect();
        self.store.data_mut().properties.insert(key, value.into());
    }

    /// Sets Istio's node metadata `NAMESPACE` and `LABELS` where Envoy 1.40
    /// shows them, under `xds.node.metadata` (the labels as a string map in
    /// the pairs encoding).
    pub fn set_node_workload(&mut self, namespace: &str, labels: &[(&str, &str)]) {
        self.set_property(&["xds", "node", "metadata", "NAMESPACE"], namespace);
        self.set_property(
            &["xds", "node", "metadata", "LABELS"],
            pairs::encode(labels),
        );
    }

    /// Makes the named host call (e.g. `proxy_send_local_response`) return
    /// `status` without doing anything, from now on.
    pub fn fail_call(&mut self, name: &str, status: u32) {
        self.store
            .data_mut()
            .faults
            .insert(name.to_string(), status);
    }

    /// Hands the module a plugin configuration; what `proxy_on_configure`
    /// returned.
    pub fn configure(&mut self, config: &[u8]) -> Result<bool, HostError> {
        self.store.data_mut().plugin_config = Some(config.to_vec());
        self.store.data_mut().pending_logs.clear();
        let ok = self
            .call::<(i32, i32), i32>("proxy_on_configure", (ROOT_CONTEXT_ID, config.len() as i32));
        let logs = std::mem::take(&mut self.store.data_mut().pending_logs);
        self.store.data_mut().logs.extend(logs);
        Ok(ok? != 0)
    }

    /// Drives one request: context create, request headers, done, log, delete.
    pub fn request(&mut self, spec: &RequestSpec) -> Result<Outcome, HostError> {
        let id = self.next_context_id;
        self.next_context_id += 1;
        {
            let state = self.store.data_mut();
            state.request_headers = spec.header_map();
            state.mutations.clear();
            state.local_reply = None;
            state.pending_logs.clear();
            state.calls.clear();
            let props = &mut state.request_properties;
            props.clear();
            let mut put = |path: &[&str], v: Vec<u8>| {
                props.insert(path.iter().map(|s| s.to_string()).collect(), v);
            };
            if let Some(san) = &spec.san {
                put(&["connection", "uri_san_peer_certificate"], san.clone());
                put(&["connection", "mtls"], vec![1]);
            } else {
                put(&["connection", "mtls"], vec![0]);
            }
            if let Some(a) = &spec.source_address {
                put(&["source", "address"], a.as_bytes().to_vec());
            }
            if let Some(a) = &spec.destination_address {
                put(&["destination", "address"], a.as_bytes().to_vec());
            }
            if let Some(p) = spec.destination_port {
                put(
                    &["destination", "port"],
                    u64::from(p).to_le_bytes().to_vec(),
                );
            }
            if let Some(s) = &spec.sni {
                put(
                    &["connection", "requested_server_name"],
                    s.as_bytes().to_vec(),
                );
            }
        }
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id, ROOT_CONTEXT_ID))?;
        self.store.data_mut().calls.clear();
        let num_headers = spec.header_map().len() as i32;
        let action =
            self.call::<(i32, i32, i32), i32>("proxy_on_request_headers", (id, num_headers, 1))?;
        let host_calls = std::mem::take(&mut self.store.data_mut().calls);
        let fuel = self.last_fuel;
        // Envoy ends every stream this way, replied to locally or not; a
        // module may leave any of these callbacks out.
        if self.exports("proxy_on_done") {
            self.call::<i32, i32>("proxy_on_done", id)?;
        }
        if self.exports("proxy_on_log") {
            self.call::<i32, ()>("proxy_on_log", id)?;
        }
        if self.exports("proxy_on_delete") {
            self.call::<i32, ()>("proxy_on_delete", id)?;
        }
        let state = self.store.data_mut();
        let logs = std::mem::take(&mut state.pending_logs);
        state.logs.extend(logs.iter().cloned());
        Ok(Outcome {
            action: match action {
                0 => Action::Continue,
                1 => Action::Pause,
                n => Action::Other(n),
            },
            local_reply: state.local_reply.take(),
            headers_after: std::mem::take(&mut state.request_headers),
            mutations: std::mem::take(&mut state.mutations),
            logs,
            host_calls,
            fuel,
        })
    }

    /// A metric's value by name (`meshfence.denied`); `None` if never defined.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.store
            .data()
            .metrics
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| (*v).max(0) as u64)
    }

    /// Every defined metric and its value.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        self.store
            .data()
            .metrics
            .iter()
            .map(|(n, _, v)| (n.clone(), (*v).max(0) as u64))
            .collect()
    }

    /// Every log line since load, configuration included.
    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    /// Whether the module trapped (later calls are refused).
    pub fn trapped(&self) -> bool {
        self.poisoned
    }
}

/// A module's imports (`module.name`) and exports, without running it.
pub fn interface(wasm: &[u8]) -> Result<(Vec<String>, Vec<String>), HostError> {
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).map_err(|e| HostError::Load(e.to_string()))?;
    let imports = module
        .imports()
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect();
    let exports = module.exports().map(|e| e.name().to_string()).collect();
    Ok((imports, exports))
}

/// The filter `.wasm`, built once per test process with
/// `cargo build -p meshfence-filter --target wasm32-unknown-unknown --release`
/// into the active target directory (`CARGO_TARGET_DIR` or the workspace's
/// `target/`), so tests never run a stale build. `MESHFENCE_WASM`
/// names a prebuilt file instead.
pub fn filter_wasm() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build_filter).clone()
}

fn build_filter() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MESHFENCE_WASM") {
        return Ok(PathBuf::from(path));
    }
    crate::filter_build::build_filter()
}
