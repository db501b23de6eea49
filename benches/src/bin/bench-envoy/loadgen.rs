//! The load generator: closed loop, HTTP/1.1 keep-alive over rustls with a
//! client certificate, one thread per connection.
//!
//! Why our own rather than `oha` (the only crates.io load tool that presents
//! client certificates; `wrk` and `h2load` cannot):
//!
//! - no extra build: `cargo install oha` compiles a large dependency tree
//!   (tokio, hyper, ratatui, ...) for minutes on a 2-core machine; this file
//!   reuses the rustls/ring the Envoy test runner already builds;
//! - every connection keeps one fixed client certificate (one SPIFFE ID per
//!   connection, like a sidecar's), and is opened and warmed before the
//!   measured window, so no TLS handshake is measured;
//! - the request bytes are exactly what we wrote (no extra headers, no
//!   normalization), the same for every variant;
//! - latencies are kept in-process, per request, so p50/p99 are exact for the
//!   window, and the window is the same one in which Envoy's CPU is sampled;
//! - every response's status is checked: a 403 would be counted as an error
//!   and fail the run, so denied traffic can never pass for throughput.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use wasm_test_harness::envoy::CallerCert;

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS client configuration trusting `ca` and presenting `cert`.
pub fn tls_config(
    ca: &CertificateDer<'static>,
    cert: &CallerCert,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("trust the CA: {e}"))?;
    let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .map_err(|e| format!("client certificate PEM: {e}"))?];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| format!("client key PEM: {e}"))?;
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?;
    Ok(Arc::new(config))
}

pub fn connect(port: u16, tls: &Arc<ClientConfig>) -> Result<Tls, String> {
    let tcp =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect to :{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(tls.clone(), name).map_err(|e| format!("TLS client: {e}"))?;
    Ok(StreamOwned::new(conn, tcp))
}

/// A response: status, head (lower-cased), body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub close: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }
}

/// Sends `request` on `tls` and reads one response (content-length framed, as
/// Envoy's direct responses and local replies are). `buf` is reused.
pub fn roundtrip(tls: &mut Tls, request: &[u8], buf: &mut Vec<u8>) -> Result<Response, String> {
    tls.write_all(request).map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {head:?}"))?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let close = head.contains("\r\nconnection: close");
                let body = buf[end + 4..end + 4 + len].to_vec();
                return Ok(Response {
                    status,
                    head,
                    body,
                    close,
                });
            }
        }
        match tls.read(&mut chunk) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One measured slice of one configuration.
#[derive(Debug, Default, Clone)]
pub struct Slice {
    /// Responses completed inside the window.
    pub requests: u64,
    /// Responses that were not 200, and failed connections.
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    /// Latency of each request completed in the window, µs.
    pub latencies_us: Vec<u32>,
    /// Envoy's CPU time (user + system) in the window.
    pub envoy_cpu: Duration,
    /// This process's CPU time in the window (the load generator's core).
    pub client_cpu: Duration,
}

impl Slice {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    pub fn quantile_us(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        let (_, v, _) = self.latencies_us.select_nth_unstable(i);
        f64::from(*v)
    }

    pub fn cpu_us_per_req(&self) -> f64 {
        self.envoy_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// Runs `connections` closed-loop connections against `port`: they connect,
/// warm up for `warmup`, then count for `measure`. `cpu` reads Envoy's CPU
/// time; it is sampled at the window's edges.
pub fn run_slice(
    port: u16,
    tls: &Arc<ClientConfig>,
    request: &Arc<Vec<u8>>,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    cpu: &dyn Fn() -> Duration,
) -> Slice {
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let tls = tls.clone();
            let request = request.clone();
            let stop = stop.clone();
            std::thread::spawn(move || worker(port, &tls, &request, begin, end, &stop))
        })
        .collect();
    sleep_until(begin);
    let (envoy0, client0) = (cpu(), self_cpu());
    sleep_until(end);
    let (envoy1, client1) = (cpu(), self_cpu());
    stop.store(true, Ordering::Relaxed);
    let mut slice = Slice {
        window: measure,
        envoy_cpu: envoy1.saturating_sub(envoy0),
        client_cpu: client1.saturating_sub(client0),
        ..Slice::default()
    };
    for t in threads {
        match t.join() {
            Ok(w) => {
                slice.requests += w.requests;
                slice.errors += w.errors;
                if slice.first_error.is_none() {
                    slice.first_error = w.first_error;
                }
                slice.latencies_us.extend_from_slice(&w.latencies_us);
            }
            Err(_) => {
                slice.errors += 1;
                slice
                    .first_error
                    .get_or_insert_with(|| "a load thread panicked".into());
            }
        }
    }
    slice
}

#[derive(Default)]
struct WorkerResult {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

fn worker(
    port: u16,
    tls: &Arc<ClientConfig>,
    request: &[u8],
    begin: Instant,
    end: Instant,
    stop: &AtomicBool,
) -> WorkerResult {
    let mut out = WorkerResult {
        latencies_us: Vec::with_capacity(1 << 16),
        ..WorkerResult::default()
    };
    let mut buf = Vec::with_capacity(4096);
    let mut conn: Option<Tls> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let tls_stream = match conn.as_mut() {
            Some(c) => c,
            None => match connect(port, tls) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let result = roundtrip(tls_stream, request, &mut buf);
        let done = Instant::now();
        let counted = done >= begin && done < end;
        match result {
            Ok(r) if r.status == 200 => {
                if counted {
                    out.requests += 1;
                    let us = done.duration_since(sent).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                if r.close {
                    conn = None;
                }
            }
            Ok(r) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!(
                        "status {} body {:?}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )
                });
                if r.close {
                    conn = None;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
                conn = None;
            }
        }
    }
    out
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// This process's CPU time (all threads).
pub fn self_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
