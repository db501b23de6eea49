//! The upstream behind Envoy: a small HTTP/1.1 server on a loopback port that
//! answers every request with 200 and a JSON body of what it received, and
//! keeps a record of it so a test can ask what reached the application.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::error::{Error, Result};

/// The header the runner adds to every probe so that the upstream's record
/// can be matched to the probe that caused it.
pub const PROBE_ID_HEADER: &str = "x-meshfence-probe-id";

/// One request as the upstream received it (after Envoy and the filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The request target, byte for byte as Envoy forwarded it (lossy UTF-8).
    pub path: String,
    /// Header names as received (Envoy sends them in lower case) and values,
    /// in order; a name may repeat.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of header `name` (ASCII case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`; `None` if absent. Several copies are
    /// joined with `,` as a reader of the header would see them.
    pub fn header(&self, name: &str) -> Option<String> {
        let vs = self.header_values(name);
        if vs.is_empty() {
            None
        } else {
            Some(vs.join(","))
        }
    }

    fn to_json(&self) -> String {
        let headers: Vec<serde_json::Value> = self
            .headers
            .iter()
            .map(|(n, v)| serde_json::json!([n, v]))
            .collect();
        serde_json::json!({
            "method": self.method,
            "path": self.path,
            "headers": headers,
        })
        .to_string()
    }
}

pub(crate) struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Upstream {
    pub(crate) fn start() -> Result<Upstream> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind the upstream", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("read the upstream's address", e))?
            .port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let seen = seen.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name("upstream".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let seen = seen.clone();
                        let _ = thread::Builder::new()
                            .name("upstream-conn".into())
                            .spawn(move || serve(conn, &seen));
                    }
                })
                .map_err(|e| Error::io("spawn the upstream", e))?
        };
        Ok(Upstream {
            port,
            seen,
            stop,
            accept: Some(accept),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The request that carried probe id `id`, if it reached the upstream.
    pub(crate) fn take(&self, id: &str) -> Option<Seen> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let at = seen
            .iter()
            .position(|s| s.header_values(PROBE_ID_HEADER).contains(&id))?;
        Some(seen.remove(at))
    }

    /// Everything received and not yet taken.
    pub(crate) fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection: HTTP/1.1 with keep-alive, as Envoy's pool uses it.
fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some((req, close)) = read_request(&mut reader) {
        let body = req.to_json();
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(req);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-meshfence-upstream: 1\r\n{}\r\n",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(body.as_bytes()).is_err() {
            break;
        }
        if close {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).ok()?;
    if n == 0 {
        return None;
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads one request; the bool says the client asked to close afterwards.
fn read_request(r: &mut impl BufRead) -> Option<(Seen, bool)> {
    let line = read_line(r)?;
    let mut parts = line.splitn(3, ' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut headers = Vec::new();
    loop {
        let l = read_line(r)?;
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.to_string(), v.trim().to_string()));
        }
    }
    let seen = Seen {
        method,
        path,
        headers,
    };
    let chunked = seen
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let size = read_line(r)?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).ok()?;
        }
    } else if let Some(len) = seen.header("content-length") {
        let len: u64 = len.trim().parse().ok()?;
        std::io::copy(&mut r.take(len), &mut std::io::sink()).ok()?;
    }
    let close = version == "HTTP/1.0"
        || seen
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Some((seen, close))
}
