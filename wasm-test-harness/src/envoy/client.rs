//! Raw HTTP/1.1 clients: over rustls for probes (the request line and headers
//! are written exactly as given, nothing is normalized), and over plain TCP for
//! Envoy's admin interface.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::certs::CallerCert;
use super::error::{Error, Result};

/// A response as the client read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A TLS client configuration trusting `ca` and presenting `from`, if any.
pub(crate) fn tls_config(
    ca: &CertificateDer<'static>,
    from: Option<&CallerCert>,
) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| Error::certs(format!("trust the CA: {e}")))?;
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::certs(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
    let config = match from {
        Some(c) => builder
            .with_client_auth_cert(c.chain(), c.key())
            .map_err(|e| Error::certs(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What happened to one request over TLS.
pub(crate) enum Outcome {
    Response(RawResponse),
    /// The connection failed before a whole response arrived: a refused TLS
    /// handshake (an alert), a reset, or a close without a response.
    Failed(String),
}

/// Sends `request` (already framed, byte for byte) to 127.0.0.1:`port` over TLS
/// and reads the response until the server closes.
pub(crate) fn send_tls(
    port: u16,
    config: Arc<ClientConfig>,
    request: &[u8],
    timeout: Duration,
) -> Result<Outcome> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| Error::io(format!("connect to 127.0.0.1:{port}"), e))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost").map_err(|e| Error::certs(format!("{e}")))?;
    let conn = ClientConnection::new(config, name)
        .map_err(|e| Error::certs(format!("TLS client: {e}")))?;
    let mut tls = StreamOwned::new(conn, tcp);
    // With TLS 1.3 a refused client certificate shows up only on the first
    // read, as an alert; a write error or a read error both mean "refused".
    if let Err(e) = tls.write_all(request).and_then(|_| tls.flush()) {
        return Ok(Outcome::Failed(format!("write: {e}")));
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut error = None;
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(resp) = complete_response(&buf) {
                    return Ok(Outcome::Response(resp));
                }
            }
            // Envoy may close without close_notify after `connection: close`.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    match parse_response(&buf, true) {
        Some(resp) => Ok(Outcome::Response(resp)),
        None => Ok(Outcome::Failed(error.unwrap_or_else(|| {
            if buf.is_empty() {
                "connection closed without a response".to_string()
            } else {
                format!("incomplete response: {:?}", String::from_utf8_lossy(&buf))
            }
        }))),
    }
}

/// A GET on Envoy's admin interface (plain HTTP on loopback).
pub(crate) fn admin_request(port: u16, method: &str, path: &str) -> Result<RawResponse> {
    let step = || format!("admin {method} {path}");
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| Error::io(step(), e))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes())
        .map_err(|e| Error::io(step(), e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match tcp.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(resp) = complete_response(&buf) {
                    return Ok(resp);
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => return Err(Error::io(step(), e)),
        }
    }
    parse_response(&buf, true).ok_or_else(|| Error::Admin {
        path: path.to_string(),
        detail: format!("unparsable response {:?}", String::from_utf8_lossy(&buf)),
    })
}

/// A response is complete once its head has arrived and its body is as long
/// as content-length says, or its last chunk has arrived.
fn complete_response(buf: &[u8]) -> Option<RawResponse> {
    parse_response(buf, false)
}

/// Parses a response. With `at_eof`, a body without length runs to the end.
fn parse_response(buf: &[u8], at_eof: bool) -> Option<RawResponse> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let rest = &buf[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body =
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().ok()?;
            if rest.len() < len {
                return None;
            }
            rest[..len].to_vec()
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if at_eof {
            rest.to_vec()
        } else {
            return None;
        };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = parse_response(
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\n\r\nRBAC: access denied",
            false,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (403, &b"RBAC: access denied"[..])
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", false).is_none());
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.body, b"abc");
    }
}
