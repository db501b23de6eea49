//! The meshfence proxy-wasm filter: a thin shell over the ruleset evaluator.
//!
//! `on_configure` decodes the ruleset once (raw bytes or JSON, [`config`]),
//! selects the workload's policies and shares them with every HTTP context.
//! Per request the filter reads the peer's URI SAN and the request header map
//! (one host call each, plus the connection properties the rules read, if any),
//! asks [`WorkloadPolicy::decide`], rewrites the identity header only when that
//! changes something, and on deny sends the local reply and stops.
//!
//! Nothing here may trap: a trap is a 503 for the request and, under the wrong
//! failure policy, a bypass (DESIGN §10). Host calls go through [`ffi`], which
//! turns every status into a `Result`; anything unexpected fails closed.
//!
//! The proxy-wasm ABI entry points are our own ([`abi`], ~100 lines) rather
//! than the proxy-wasm SDK's dispatcher: the SDK's exports for every callback
//! of every context kind cost ~65 KB of a 200 KiB budget, its dispatcher
//! `panic!`s on an unknown context id, and its `hostcalls` on any status it
//! does not expect.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod abi;
pub mod config;
mod ffi;
pub mod json;
pub mod pairs;

use alloc::borrow::Cow;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use meshfence_ruleset::eval::Cause;
use meshfence_ruleset::identity::principal_of;
use meshfence_ruleset::request::{join_copies, parse_ip};
use meshfence_ruleset::{
    format as wire, Attribute, Decision, Headers, IdentityValue, Request, RuleRef, Ruleset,
    Workload, WorkloadPolicy,
};

use crate::config::WorkloadSpec;
use crate::pairs::Pairs;

/// What `proxy_on_request_headers` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    /// Stop iteration: the request was answered locally.
    Pause = 1,
}

// Property paths, serialized as the ABI wants them (segments joined by NUL).
const PEER_URI_SAN: &[u8] = b"connection\0uri_san_peer_certificate";
const SOURCE_ADDRESS: &[u8] = b"source\0address";
const DESTINATION_ADDRESS: &[u8] = b"destination\0address";
const DESTINATION_PORT: &[u8] = b"destination\0port";
const SNI: &[u8] = b"connection\0requested_server_name";
/// Where Istio's `NAMESPACE` and `LABELS` node metadata are: Envoy 1.40 has
/// the node under `xds.node` (`node.*` is NotFound there, as measured by
/// `envoy_host_facts.rs`); older Envoys under `node`.
const NODE_METADATA: [(&str, &[u8], &[u8]); 2] = [
    (
        "xds.node.metadata",
        b"xds\0node\0metadata\0NAMESPACE",
        b"xds\0node\0metadata\0LABELS",
    ),
    (
        "node.metadata",
        b"node\0metadata\0NAMESPACE",
        b"node\0metadata\0LABELS",
    ),
];

/// Details string of our local replies (Envoy's `%RESPONSE_CODE_DETAILS%`).
const REPLY_DETAILS: &str = "meshfence_access_denied";

/// The filter's counters, in Envoy's stats under the `meshfence` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Allowed,
    Denied,
    Audited,
    DryRunWouldDeny,
    IdentityStripped,
    Unauthenticated,
    PathRefused,
    ConfigRejected,
}

impl Counter {
    pub const ALL: [Counter; 8] = [
        Counter::Allowed,
        Counter::Denied,
        Counter::Audited,
        Counter::DryRunWouldDeny,
        Counter::IdentityStripped,
        Counter::Unauthenticated,
        Counter::PathRefused,
        Counter::ConfigRejected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Allowed => "meshfence.allowed",
            Counter::Denied => "meshfence.denied",
            Counter::Audited => "meshfence.audited",
            Counter::DryRunWouldDeny => "meshfence.dry_run_would_deny",
            Counter::IdentityStripped => "meshfence.identity_stripped",
            Counter::Unauthenticated => "meshfence.unauthenticated",
            Counter::PathRefused => "meshfence.path_refused",
            Counter::ConfigRejected => "meshfence.config_rejected",
        }
    }
}

/// Metric ids, defined once per VM root; a counter the host refused is skipped.
#[derive(Debug, Clone, Copy, Default)]
struct Metrics {
    defined: bool,
    ids: [Option<u32>; 8],
}

impl Metrics {
    fn define() -> Self {
        let mut ids = [None; 8];
        for (slot, counter) in ids.iter_mut().zip(Counter::ALL) {
            *slot = ffi::define_counter(counter.name()).ok();
        }
        Metrics { defined: true, ids }
    }

    fn bump(&self, counter: Counter) {
        if let Some(Some(id)) = self.ids.get(counter as usize) {
            ffi::increment(*id);
        }
    }
}

self_cell::self_cell!(
    /// The decoded ruleset and the workload's policy, which borrows from it.
    struct Loaded {
        owner: Ruleset,
        #[covariant]
        dependent: WorkloadPolicy,
    }
);

/// The connection properties the workload's rules read; the rest are never
/// asked for.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    source_address: bool,
    destination_address: bool,
    destination_port: bool,
    sni: bool,
}

impl Needs {
    fn of(ruleset: &Ruleset, workload: &Workload<'_>) -> Needs {
        let mut needs = Needs::default();
        let applying = ruleset
            .policies
            .iter()
            .filter(|p| p.applies_to(workload, &ruleset.mesh.root_namespace));
        for rule in applying.flat_map(|p| p.rules.iter()) {
            for clause in rule.clauses() {
                match clause.attribute {
                    Attribute::SourceIp | Attribute::RemoteIp => needs.source_address = true,
                    Attribute::DestinationIp => needs.destination_address = true,
                    Attribute::DestinationPort => needs.destination_port = true,
                    Attribute::Sni => needs.sni = true,
                    _ => {}
                }
            }
        }
        needs
    }
}

/// What every HTTP context of a configured root shares.
struct Shared {
    loaded: Loaded,
    /// `namespace` or `namespace/app`, for log lines.
    workload: String,
    needs: Needs,
    metrics: Metrics,
}

/// The plugin's root context.
#[derive(Default)]
pub struct Root {
    metrics: Metrics,
    shared: Option<Rc<Shared>>,
}

impl Root {
    /// `proxy_on_configure`: loads the ruleset, or refuses the configuration
    /// (and keeps what it had).
    pub fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        if !self.metrics.defined {
            self.metrics = Metrics::define();
        }
        match load(plugin_configuration_size, self.metrics) {
            Ok(shared) => {
                let policy = shared.loaded.borrow_dependent();
                let (always, keys) = policy.index_stats();
                ffi::log(
                    ffi::LOG_INFO,
                    &format!(
                        "meshfence: ruleset loaded for workload {}: {} policies apply, \
                         {} rules checked for every caller, {} caller namespaces indexed",
                        shared.workload,
                        shared.loaded.borrow_owner().policies.len(),
                        always,
                        keys
                    ),
                );
                self.shared = Some(Rc::new(shared));
                true
            }
            Err(why) => {
                ffi::log(
                    ffi::LOG_ERROR,
                    &format!("meshfence: configuration rejected: {why}"),
                );
                self.metrics.bump(Counter::ConfigRejected);
                false
            }
        }
    }

    /// A stream context for one HTTP request, sharing the loaded ruleset.
    pub fn new_stream(&self) -> Stream {
        Stream {
            shared: self.shared.clone(),
            metrics: self.metrics,
        }
    }
}

fn load(size: usize, metrics: Metrics) -> Result<Shared, String> {
    let raw = ffi::plugin_configuration(size)
        .map_err(|e| format!("the host refused the plugin configuration (status {})", e.0))?
        .ok_or_else(|| String::from("there is no plugin configuration"))?;
    let config::Config {
        ruleset: bytes,
        workload,
    } = config::parse(&raw).map_err(|e| format!("{e}"))?;
    drop(raw);
    let spec = match workload {
        Some(spec) => spec,
        None => workload_from_node()?,
    };
    let labels: Vec<(&str, &str)> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let workload = Workload {
        namespace: &spec.namespace,
        labels: &labels,
    };
    // Every record is validated; only this workload's policies are built, so
    // each VM of each worker holds its own rules and nothing else.
    let ruleset = wire::from_bytes_for_workload(&bytes, &workload)
        .map_err(|e| format!("the ruleset does not validate: {e}"))?;
    drop(bytes);
    let needs = Needs::of(&ruleset, &workload);
    let loaded = Loaded::new(ruleset, |rs| rs.for_workload(&workload));
    let mut name = spec.namespace.clone();
    if let Some((_, app)) = spec.labels.iter().find(|(k, _)| k == "app") {
        name.push('/');
        name.push_str(app);
    }
    Ok(Shared {
        loaded,
        workload: name,
        needs,
        metrics,
    })
}

/// The workload from Envoy node metadata, as Istio sets it: `NAMESPACE` a
/// string, `LABELS` a string map (which Envoy serializes in the pairs
/// encoding).
fn workload_from_node() -> Result<WorkloadSpec, String> {
    let mut found = None;
    for (root, namespace_path, labels_path) in NODE_METADATA {
        let value = ffi::get_property(namespace_path)
            .map_err(|e| format!("{root}.NAMESPACE: host status {}", e.0))?;
        if let Some(value) = value {
            found = Some((root, value, labels_path));
            break;
        }
    }
    let Some((root, namespace, labels_path)) = found else {
        return Err(String::from(
            "no workload: the configuration names none and node metadata has no NAMESPACE \
             (xds.node.metadata.NAMESPACE or node.metadata.NAMESPACE)",
        ));
    };
    let namespace =
        String::from_utf8(namespace).map_err(|_| format!("{root}.NAMESPACE is not UTF-8"))?;
    if namespace.is_empty() {
        return Err(format!("{root}.NAMESPACE is empty"));
    }
    let mut labels = Vec::new();
    let raw = ffi::get_property(labels_path)
        .map_err(|e| format!("{root}.LABELS: host status {}", e.0))?;
    if let Some(raw) = raw {
        let pairs = Pairs::parse(&raw).ok_or_else(|| {
            format!(
                "{root}.LABELS ({} bytes) is not a string map in the pairs encoding",
                raw.len()
            )
        })?;
        for (k, v) in pairs.iter() {
            match (core::str::from_utf8(k), core::str::from_utf8(v)) {
                (Ok(k), Ok(v)) => labels.push((String::from(k), String::from(v))),
                _ => return Err(format!("{root}.LABELS holds a non-UTF-8 label")),
            }
        }
    }
    Ok(WorkloadSpec { namespace, labels })
}

/// One HTTP stream.
pub struct Stream {
    shared: Option<Rc<Shared>>,
    metrics: Metrics,
}

impl Stream {
    /// Another handle on the same stream state (for use outside the context
    /// table's borrow).
    pub fn share(&self) -> Stream {
        Stream {
            shared: self.shared.clone(),
            metrics: self.metrics,
        }
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(&self) -> Action {
        match self.shared.as_deref() {
            Some(shared) => shared.on_request(),
            None => {
                // Unreachable under Envoy (a failed configure never serves), but
                // fail closed all the same.
                ffi::log(ffi::LOG_ERROR, "meshfence: denied: filter not configured");
                self.metrics.bump(Counter::Denied);
                let _ = ffi::send_local_response(403, REPLY_DETAILS, "RBAC: access denied");
                Action::Pause
            }
        }
    }
}

/// The request headers, read from the one pairs buffer the host returned.
/// Every copy of every header the evaluator asks for was checked to be UTF-8.
struct HostHeaders<'a> {
    pairs: Pairs<'a>,
    /// The identity header's name, first copy and number of copies, from the
    /// scan (the evaluator always asks for it).
    identity: Option<(&'a str, &'a str, usize)>,
}

/// What one pass over the header map finds: the pseudo-headers, the identity
/// header's copies, and whether any copy of a header the rules read is not
/// text. One pass instead of one per name: the header map is scanned once
/// more only for each header a rule reads.
struct Scan<'a> {
    method: &'a [u8],
    path: &'a [u8],
    authority: &'a [u8],
    identity_first: Option<&'a [u8]>,
    identity_copies: usize,
    rule_header_not_text: bool,
}

impl<'a> Scan<'a> {
    fn of(pairs: &Pairs<'a>, identity: Option<&str>, rule_headers: &[&str]) -> Scan<'a> {
        let mut scan = Scan {
            method: b"",
            path: b"",
            authority: b"",
            identity_first: None,
            identity_copies: 0,
            rule_header_not_text: false,
        };
        let (mut method, mut path, mut authority) = (false, false, false);
        for (name, value) in pairs.iter() {
            if name.first() == Some(&b':') {
                // The first copy of each, as Envoy's by-name lookup returns.
                let slot = match name {
                    b":method" => Some((&mut method, &mut scan.method)),
                    b":path" => Some((&mut path, &mut scan.path)),
                    b":authority" => Some((&mut authority, &mut scan.authority)),
                    _ => None,
                };
                if let Some((seen, field)) = slot {
                    if !*seen {
                        *seen = true;
                        *field = value;
                    }
                }
                continue;
            }
            if identity.is_some_and(|id| name.eq_ignore_ascii_case(id.as_bytes())) {
                if scan.identity_first.is_none() {
                    scan.identity_first = Some(value);
                }
                scan.identity_copies += 1;
                if core::str::from_utf8(value).is_err() {
                    scan.rule_header_not_text = true;
                }
                continue;
            }
            if rule_headers
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
                && core::str::from_utf8(value).is_err()
            {
                scan.rule_header_not_text = true;
            }
        }
        scan
    }
}

impl Headers for HostHeaders<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        join_copies(
            self.pairs
                .values(name.as_bytes())
                .filter_map(|v| core::str::from_utf8(v).ok()),
        )
    }

    fn first_with_count(&self, name: &str) -> Option<(&str, usize)> {
        if let Some((id, first, copies)) = self.identity {
            if id == name {
                return Some((first, copies));
            }
        }
        let mut copies = self.pairs.values(name.as_bytes());
        let first = core::str::from_utf8(copies.next()?).ok()?;
        Some((first, 1 + copies.count()))
    }
}

/// Why a request was refused before the evaluator could decide it.
enum Refusal {
    Host(&'static str, u32),
    Malformed(&'static str),
    NotText(&'static str),
}

fn text<'b>(value: &'b [u8], what: &'static str) -> Result<&'b str, Refusal> {
    core::str::from_utf8(value).map_err(|_| Refusal::NotText(what))
}

/// `ip:port` or `[ip6]:port` (Envoy's address format) to the 16-byte form.
fn parse_address(raw: &[u8]) -> Option<[u8; 16]> {
    let s = core::str::from_utf8(raw).ok()?;
    let host = match s.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => s.rsplit_once(':').map_or(s, |(h, _)| h),
    };
    parse_ip(host)
}

fn parse_port(raw: &[u8]) -> u16 {
    let Ok(bytes) = <[u8; 8]>::try_from(raw) else {
        return 0;
    };
    u16::try_from(u64::from_le_bytes(bytes)).unwrap_or(0)
}

impl Shared {
    fn on_request(&self) -> Action {
        match self.decide_and_act() {
            Ok(action) => action,
            Err(refusal) => {
                let why = match refusal {
                    Refusal::Host(what, code) => format!("host refused {what} (status {code})"),
                    Refusal::Malformed(what) => format!("{what} is malformed"),
                    Refusal::NotText(what) => format!("{what} is not valid UTF-8"),
                };
                ffi::log(
                    ffi::LOG_WARN,
                    &format!("meshfence: denied workload={} cause={why}", self.workload),
                );
                self.metrics.bump(Counter::Denied);
                let mesh = &self.loaded.borrow_owner().mesh;
                let _ = ffi::send_local_response(mesh.deny_status, REPLY_DETAILS, &mesh.deny_body);
                Action::Pause
            }
        }
    }

    fn property(&self, needed: bool, path: &'static [u8]) -> Result<Option<Vec<u8>>, Refusal> {
        if !needed {
            return Ok(None);
        }
        ffi::get_property(path).map_err(|e| Refusal::Host("a connection property", e.0))
    }

    fn decide_and_act(&self) -> Result<Action, Refusal> {
        let policy = self.loaded.borrow_dependent();
        let mesh = &policy.ruleset().mesh;

        let san = ffi::get_property(PEER_URI_SAN)
            .map_err(|e| Refusal::Host("the peer certificate SAN", e.0))?;
        let header_buf =
            ffi::request_header_pairs().map_err(|e| Refusal::Host("the request headers", e.0))?;
        let pairs =
            Pairs::parse(&header_buf).ok_or(Refusal::Malformed("the header map from the host"))?;
        let peer_uri = match san.as_deref() {
            None => None,
            Some(b) => {
                Some(core::str::from_utf8(b).map_err(|_| Refusal::NotText("the peer URI SAN"))?)
            }
        };
        let identity_name = (mesh.identity_header.value != IdentityValue::Off)
            .then_some(mesh.identity_header.name.as_str());
        let scan = Scan::of(&pairs, identity_name, policy.header_names());
        if scan.rule_header_not_text {
            return Err(Refusal::NotText("a request header the rules read"));
        }
        let method = text(scan.method, ":method")?;
        let path = text(scan.path, ":path")?;
        let host = text(scan.authority, ":authority")?;
        let identity = match (identity_name, scan.identity_first) {
            (Some(name), Some(first)) => Some((
                name,
                text(first, "the identity header")?,
                scan.identity_copies,
            )),
            _ => None,
        };

        let needs = self.needs;
        let source_ip = self
            .property(needs.source_address, SOURCE_ADDRESS)?
            .and_then(|v| parse_address(&v));
        let destination_ip = self
            .property(needs.destination_address, DESTINATION_ADDRESS)?
            .and_then(|v| parse_address(&v));
        let destination_port = self
            .property(needs.destination_port, DESTINATION_PORT)?
            .map_or(0, |v| parse_port(&v));
        let sni_buf = self.property(needs.sni, SNI)?;
        let sni = sni_buf
            .as_deref()
            .and_then(|b| core::str::from_utf8(b).ok())
            .filter(|s| !s.is_empty());

        let headers = HostHeaders { pairs, identity };
        let request = Request {
            peer_uri,
            method,
            path,
            host,
            destination_port,
            source_ip,
            remote_ip: None,
            destination_ip,
            sni,
            headers: &headers,
        };
        let decision = policy.decide(&request);

        let m = &self.metrics;
        if peer_uri.is_none() {
            m.bump(Counter::Unauthenticated);
        }
        if decision.identity.stripped_incoming {
            m.bump(Counter::IdentityStripped);
        }
        if decision.audit.is_some() {
            m.bump(Counter::Audited);
        }
        if decision.dry_run.would_deny() {
            m.bump(Counter::DryRunWouldDeny);
            self.log_dry_run(&request, &decision);
        }

        if !decision.allowed {
            if matches!(decision.cause, Cause::PathRefused(_)) {
                m.bump(Counter::PathRefused);
            }
            m.bump(Counter::Denied);
            self.log_deny(&request, &decision);
            let status = decision.deny_status(mesh);
            if let Err(e) = ffi::send_local_response(status, REPLY_DETAILS, &mesh.deny_body) {
                ffi::log(
                    ffi::LOG_ERROR,
                    &format!("meshfence: local reply refused by host (status {})", e.0),
                );
            }
            return Ok(Action::Pause);
        }

        let rewrite = decision.identity.rewrite;
        if rewrite.changes_headers() {
            let name = mesh.identity_header.name.as_str();
            let copies = scan.identity_copies;
            let done = match (rewrite.strip, rewrite.set) {
                (true, Some(v)) if copies == 1 => ffi::replace_request_header(name, v),
                (true, Some(v)) => {
                    ffi::remove_request_header(name).and_then(|()| ffi::add_request_header(name, v))
                }
                (false, Some(v)) => ffi::add_request_header(name, v),
                (true, None) => ffi::remove_request_header(name),
                (false, None) => Ok(()),
            };
            // The upstream must never see an identity header we meant to
            // remove: if the host would not rewrite it, refuse the request.
            done.map_err(|e| Refusal::Host("the identity header rewrite", e.0))?;
        }
        m.bump(Counter::Allowed);
        Ok(Action::Continue)
    }

    fn describe(&self, out: &mut String, rule: RuleRef) {
        match self
            .loaded
            .borrow_owner()
            .policies
            .get(rule.policy as usize)
        {
            Some(p) => {
                let _ = write!(out, "policy={}/{} rule={}", p.namespace, p.name, rule.rule);
            }
            None => {
                let _ = write!(out, "policy=#{} rule={}", rule.policy, rule.rule);
            }
        }
    }

    /// One line: workload, principal, method, path (never its query, never a
    /// header value), and the policy and rule. Request text is `{:?}`-quoted
    /// so a caller cannot forge log lines.
    fn log_line(&self, out: &mut String, verb: &str, request: &Request<'_>) {
        let principal = request.peer_uri.map(|u| principal_of(u).unwrap_or(u));
        let _ = write!(
            out,
            "meshfence: {verb} workload={} principal={:?} method={:?} path={:?} ",
            self.workload,
            principal.unwrap_or("-"),
            request.method,
            meshfence_ruleset::path::path_for_matching(request.path),
        );
    }

    fn log_deny(&self, request: &Request<'_>, decision: &Decision<'_>) {
        let mut line = String::with_capacity(192);
        self.log_line(&mut line, "denied", request);
        match decision.cause {
            Cause::DeniedBy(rule) => self.describe(&mut line, rule),
            Cause::NoAllowMatched => line.push_str("cause=\"no ALLOW rule matched\""),
            Cause::PathRefused(p) => {
                let _ = write!(line, "cause={:?}", p.as_str());
            }
            Cause::SpoofedIdentity => line.push_str("cause=\"spoofed identity header\""),
            Cause::AllowedBy(_) | Cause::NoAllowPolicy => line.push_str("cause=-"),
        }
        ffi::log(ffi::LOG_INFO, &line);
    }

    fn log_dry_run(&self, request: &Request<'_>, decision: &Decision<'_>) {
        let mut line = String::with_capacity(192);
        self.log_line(&mut line, "dry-run would deny", request);
        match decision.dry_run.deny {
            Some(rule) => self.describe(&mut line, rule),
            None => line.push_str("cause=\"no dry-run ALLOW rule matched\""),
        }
        ffi::log(ffi::LOG_INFO, &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports() {
        let v4 = parse_address(b"10.1.2.3:8080").unwrap();
        assert_eq!(&v4[12..], &[10, 1, 2, 3]);
        let v6 = parse_address(b"[::1]:443").unwrap();
        assert_eq!(v6[15], 1);
        assert!(parse_address(b"nonsense").is_none());
        assert_eq!(parse_port(&8080u64.to_le_bytes()), 8080);
        assert_eq!(parse_port(&70000u64.to_le_bytes()), 0);
        assert_eq!(parse_port(b"80"), 0);
    }
}
