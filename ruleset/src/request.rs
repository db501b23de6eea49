//! The request as the evaluator sees it: connection facts and a header lookup.
//!
//! The filter fills this from host calls, `explain` and `test` from the command
//! line or a cases file; the evaluator never asks for anything else.

use alloc::borrow::Cow;
use alloc::string::String;

/// One request to decide.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The peer certificate's first URI SAN; `None` on plaintext or without one.
    pub peer_uri: Option<&'a str>,
    pub method: &'a str,
    /// `:path` as received, query and fragment included.
    pub path: &'a str,
    /// `:authority` as received.
    pub host: &'a str,
    pub destination_port: u16,
    /// Addresses as 16 bytes, IPv4 mapped into IPv6.
    pub source_ip: Option<[u8; 16]>,
    pub remote_ip: Option<[u8; 16]>,
    pub destination_ip: Option<[u8; 16]>,
    pub sni: Option<&'a str>,
    pub headers: &'a dyn Headers,
}

/// Request headers by lower-case name.
pub trait Headers {
    /// The header's value as Envoy's header matcher reads it: every copy, in
    /// order, joined by `,`; `None` when absent.
    fn get(&self, name: &str) -> Option<Cow<'_, str>>;

    /// The first copy's value and how many copies there are.
    fn first_with_count(&self, name: &str) -> Option<(&str, usize)>;
}

/// Headers as a list of `(name, value)` pairs; names compare ignoring ASCII case.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderList<'a>(pub &'a [(&'a str, &'a str)]);

/// A header's copies as Envoy's header matcher reads them: joined by `,`, in
/// order; borrowed when there is one copy, `None` when there is none.
pub fn join_copies<'a>(mut copies: impl Iterator<Item = &'a str>) -> Option<Cow<'a, str>> {
    let first = copies.next()?;
    match copies.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = String::from(first);
            for v in core::iter::once(second).chain(copies) {
                joined.push(',');
                joined.push_str(v);
            }
            Some(Cow::Owned(joined))
        }
    }
}

impl Headers for HeaderList<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        join_copies(
            self.0
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v),
        )
    }

    fn first_with_count(&self, name: &str) -> Option<(&str, usize)> {
        let mut copies = self.0.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let (_, first) = copies.next()?;
        Some((first, 1 + copies.count()))
    }
}

/// Parses a dotted IPv4 or an IPv6 address into the 16-byte form.
pub fn parse_ip(s: &str) -> Option<[u8; 16]> {
    let ip: core::net::IpAddr = s.parse().ok()?;
    Some(match ip {
        core::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        core::net::IpAddr::V6(v6) => v6.octets(),
    })
}
