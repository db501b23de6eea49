//! One request, one connection: plain TCP or TLS (with or without a client
//! certificate) to an address on loopback, the request written byte for byte,
//! the response read until Envoy closes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use wasm_test_harness::envoy::CallerCert;

/// The response header the route adds: the request passed every filter and
/// reached the end of the chain (the "upstream").
pub const UPSTREAM_HEADER: &str = "x-differential-upstream";

/// What one listener answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 0 when no response came.
    pub status: u16,
    /// The response carries [`UPSTREAM_HEADER`].
    pub upstream: bool,
    pub body: String,
    /// Why no response came.
    pub error: Option<String>,
}

/// A decision read from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// Neither: a 400, a reset, a 2xx that did not come from the route...
    Other(String),
}

impl Answer {
    pub fn verdict(&self) -> Verdict {
        if (200..300).contains(&self.status) && self.upstream {
            Verdict::Allow
        } else if self.status == 403 && !self.upstream {
            Verdict::Deny
        } else if let Some(e) = &self.error {
            Verdict::Other(format!("no response ({e})"))
        } else {
            Verdict::Other(format!(
                "status {}{}",
                self.status,
                if self.upstream { " from the route" } else { "" }
            ))
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "no response: {e}"),
            None => write!(
                f,
                "{} {}, body {:?}",
                self.status,
                if self.upstream {
                    "(reached the route)"
                } else {
                    "(did not reach the route)"
                },
                self.body.chars().take(120).collect::<String>()
            ),
        }
    }
}

/// A TLS client configuration trusting `ca`, presenting `cert` if any, with
/// session resumption off (every connection is a full handshake, so each
/// listener sees the certificate itself).
pub fn tls_config(
    ca: &CertificateDer<'static>,
    cert: Option<&CallerCert>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("trust the CA: {e}"))?;
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain(), c.key())
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Sends `request` to `addr`, over TLS when `tls` is given.
pub fn exchange(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    request: &[u8],
    timeout: Duration,
) -> Answer {
    // A response to HEAD has a content-length but no body.
    let head = request.starts_with(b"HEAD ");
    let failed = |e: String| Answer {
        status: 0,
        upstream: false,
        body: String::new(),
        error: Some(e),
    };
    let tcp = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(t) => t,
        Err(e) => return failed(format!("connect to {addr}: {e}")),
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let _ = tcp.set_nodelay(true);
    let bytes = match tls {
        None => talk(tcp, request, head),
        Some(config) => {
            let name = match ServerName::try_from("localhost") {
                Ok(n) => n,
                Err(e) => return failed(e.to_string()),
            };
            let conn = match ClientConnection::new(config, name) {
                Ok(c) => c,
                Err(e) => return failed(format!("TLS client: {e}")),
            };
            talk(StreamOwned::new(conn, tcp), request, head)
        }
    };
    match bytes {
        Err(e) => failed(e),
        Ok(buf) => match parse(&buf) {
            Some(a) => a,
            None if buf.is_empty() => failed("closed without a response".into()),
            None => failed(format!(
                "unparsable response {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            )),
        },
    }
}

fn talk(mut s: impl Read + Write, request: &[u8], head: bool) -> Result<Vec<u8>, String> {
    s.write_all(request)
        .and_then(|_| s.flush())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // Done once the body is as long as content-length says:
                // Envoy would otherwise wait for us to close first (its
                // delayed close), a second per request.
                if complete(&buf, head) {
                    return Ok(buf);
                }
            }
            // Envoy may close without close_notify after `connection: close`.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(buf),
            Err(e) if !buf.is_empty() && e.kind() == ErrorKind::ConnectionReset => return Ok(buf),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn complete(buf: &[u8], head: bool) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    if head {
        return true;
    }
    let head = String::from_utf8_lossy(&buf[..end]);
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| buf.len() >= end + 4 + len)
}

fn parse(buf: &[u8]) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut upstream = false;
    let mut chunked = false;
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            let n = n.trim();
            if n.eq_ignore_ascii_case(UPSTREAM_HEADER) {
                upstream = true;
            }
            if n.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    let rest = &buf[end + 4..];
    let body = if chunked {
        // Only for display: the raw chunks are good enough.
        String::from_utf8_lossy(rest).into_owned()
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    Some(Answer {
        status,
        upstream,
        body,
        error: None,
    })
}
