//! Caller identity: the SPIFFE ID in the peer certificate, and what becomes of
//! the identity header (DESIGN §4).
//!
//! The principal is the peer's first URI SAN without `spiffe://`, exactly as
//! Istio derives it. Only a well-formed `spiffe://<td>/ns/<ns>/sa/<sa>` may
//! become the value of the identity header; every copy a caller sent is removed
//! unless the caller is a trusted forwarder passing a well-formed value on.

use crate::ir::{IdentityValue, MeshSettings};

/// The parts of a well-formed workload SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    pub trust_domain: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
}

/// The URI scheme prefix Istio strips to form a principal.
pub const SPIFFE_PREFIX: &str = "spiffe://";

impl<'a> SpiffeId<'a> {
    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` and nothing else: a trust domain of
    /// lower-case letters, digits, `.`, `-`, `_`; segments of letters, digits,
    /// `.`, `-`, `_` that are neither `.` nor `..`; no query, fragment, port or
    /// user info; at most 2048 bytes (the SPIFFE limit).
    pub fn parse(uri: &'a str) -> Option<Self> {
        if uri.len() > 2048 {
            return None;
        }
        let rest = uri.strip_prefix(SPIFFE_PREFIX)?;
        // One pass: each part runs to the next '/' and holds only its bytes.
        let (td, rest) = take_part(rest, TRUST_DOMAIN_BYTE)?;
        let (ns, rest) = take_part(rest?.strip_prefix("ns/")?, SEGMENT_BYTE)?;
        let (sa, rest) = take_part(rest?.strip_prefix("sa/")?, SEGMENT_BYTE)?;
        if rest.is_some() || [ns, sa].iter().any(|s| *s == "." || *s == "..") {
            return None;
        }
        Some(SpiffeId {
            trust_domain: td,
            namespace: ns,
            service_account: sa,
        })
    }
}

/// A non-empty run of `class` bytes at the start of `s`, and what follows the
/// '/' that ends it (`None` when the run ends the string). `None` when the run
/// is empty or stops at a byte that is neither of the class nor '/'.
fn take_part(s: &str, class: u8) -> Option<(&str, Option<&str>)> {
    let mut end = s.len();
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b == b'/' {
            end = i;
            break;
        }
        if !byte_is(b, class) {
            return None;
        }
    }
    if end == 0 {
        return None;
    }
    let part = s.get(..end)?;
    let rest = if end == s.len() {
        None
    } else {
        Some(s.get(end + 1..)?)
    };
    Some((part, rest))
}

/// Bit flags per byte: which bytes a trust domain and a path segment may hold.
const TRUST_DOMAIN_BYTE: u8 = 1;
const SEGMENT_BYTE: u8 = 2;
// Built at compile time: an index out of range would fail the build, not a request.
#[allow(clippy::indexing_slicing)]
const SPIFFE_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let common = c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'_';
        if common || c.is_ascii_lowercase() {
            t[b] |= TRUST_DOMAIN_BYTE;
        }
        if common || c.is_ascii_alphabetic() {
            t[b] |= SEGMENT_BYTE;
        }
        b += 1;
    }
    t
};

fn byte_is(b: u8, class: u8) -> bool {
    SPIFFE_BYTES
        .get(usize::from(b))
        .is_some_and(|&f| f & class != 0)
}

/// The Istio principal for a peer URI SAN: the URI without `spiffe://`.
/// A SAN of another scheme has no principal.
pub fn principal_of(uri: &str) -> Option<&str> {
    uri.strip_prefix(SPIFFE_PREFIX)
}

/// What the filter does to the identity header of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRewrite<'a> {
    /// Remove every incoming copy (any letter case) before anything else.
    pub strip: bool,
    /// Then set the header to this value.
    pub set: Option<&'a str>,
}

impl IdentityRewrite<'_> {
    /// Nothing to do: the request keeps its headers as they are.
    pub const KEEP: IdentityRewrite<'static> = IdentityRewrite {
        strip: false,
        set: None,
    };

    pub fn changes_headers(&self) -> bool {
        self.strip || self.set.is_some()
    }
}

/// The identity header the upstream (and the rules) will see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanitizedIdentity<'a> {
    pub rewrite: IdentityRewrite<'a>,
    /// The header's value after the rewrite, or `None` when it is absent.
    pub value: Option<&'a str>,
    /// Whether the caller sent a copy that was removed.
    pub stripped_incoming: bool,
}

/// The value of the identity header for a verified peer, in the mesh's form.
pub fn header_value_for<'a>(mesh: &MeshSettings, uri: &'a str) -> Option<&'a str> {
    SpiffeId::parse(uri)?;
    value_in_mesh_form(mesh, uri)
}

/// A well-formed SPIFFE URI in the form the mesh's identity header carries.
fn value_in_mesh_form<'a>(mesh: &MeshSettings, uri: &'a str) -> Option<&'a str> {
    match mesh.identity_header.value {
        IdentityValue::Spiffe => Some(uri),
        IdentityValue::Principal => principal_of(uri),
        IdentityValue::Off => None,
    }
}

/// A trusted forwarder is a workload of a trusted-forwarder namespace in the
/// mesh's own trust domain (or an alias of it): a federated trust domain's
/// `ns/shared-services` is somebody else's namespace.
fn is_trusted_forwarder(mesh: &MeshSettings, id: &SpiffeId<'_>) -> bool {
    let own_domain = id.trust_domain == mesh.trust_domain
        || mesh
            .trust_domain_aliases
            .iter()
            .any(|a| a == id.trust_domain);
    own_domain && mesh.trusted_forwarders.iter().any(|ns| ns == id.namespace)
}

fn incoming_is_well_formed(mesh: &MeshSettings, value: &str) -> bool {
    match mesh.identity_header.value {
        IdentityValue::Spiffe => SpiffeId::parse(value).is_some(),
        IdentityValue::Principal => {
            // A principal is a SPIFFE ID without its scheme: check it as one.
            value.len() <= 2048 - SPIFFE_PREFIX.len() && parse_principal(value).is_some()
        }
        IdentityValue::Off => false,
    }
}

fn parse_principal(value: &str) -> Option<()> {
    let mut buf = [0u8; 2048];
    let total = SPIFFE_PREFIX.len() + value.len();
    let dst = buf.get_mut(..total)?;
    let (head, tail) = dst.split_at_mut(SPIFFE_PREFIX.len());
    head.copy_from_slice(SPIFFE_PREFIX.as_bytes());
    tail.copy_from_slice(value.as_bytes());
    let s = core::str::from_utf8(dst).ok()?;
    SpiffeId::parse(s).map(|_| ())
}

/// Decides the identity header for one request.
///
/// `incoming` is the caller's header: `None` when absent, `Some((value,
/// copies))` otherwise, with the first copy's value and how many copies came.
pub fn sanitize<'a>(
    mesh: &MeshSettings,
    peer_uri: Option<&'a str>,
    incoming: Option<(&'a str, usize)>,
) -> SanitizedIdentity<'a> {
    if mesh.identity_header.value == IdentityValue::Off {
        return SanitizedIdentity {
            rewrite: IdentityRewrite::KEEP,
            value: incoming.map(|(v, _)| v),
            stripped_incoming: false,
        };
    }
    // The peer's SPIFFE ID, parsed once.
    let peer = peer_uri.and_then(|uri| SpiffeId::parse(uri).map(|id| (uri, id)));
    let verified = peer.and_then(|(uri, _)| value_in_mesh_form(mesh, uri));
    let forwarder = peer.is_some_and(|(_, id)| is_trusted_forwarder(mesh, &id));
    if forwarder {
        if let Some((value, 1)) = incoming {
            if incoming_is_well_formed(mesh, value) {
                return SanitizedIdentity {
                    rewrite: IdentityRewrite::KEEP,
                    value: Some(value),
                    stripped_incoming: false,
                };
            }
        }
    }
    let strip = incoming.is_some();
    // When the only incoming copy already equals the verified value, keep it:
    // the upstream sees the same thing and no header is rewritten.
    if let (Some((value, 1)), Some(v)) = (incoming, verified) {
        if value == v {
            return SanitizedIdentity {
                rewrite: IdentityRewrite::KEEP,
                value: Some(v),
                stripped_incoming: false,
            };
        }
    }
    SanitizedIdentity {
        rewrite: IdentityRewrite {
            strip,
            set: verified,
        },
        value: verified,
        stripped_incoming: strip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn parses_only_workload_ids() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        assert_eq!(
            (id.trust_domain, id.namespace, id.service_account),
            ("cluster.local", "a", "b")
        );
        for bad in [
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/a/",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/",
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/./sa/b",
            "spiffe://cluster.local/ns/a/sa/..",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x",
            "spiffe://cluster.local:8/ns/a/sa/b",
            "http://cluster.local/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns/a/sa/b\n",
        ] {
            assert!(SpiffeId::parse(bad).is_none(), "{bad}");
        }
    }

    fn mesh() -> MeshSettings {
        MeshSettings {
            trusted_forwarders: vec![String::from("shared-services")],
            ..MeshSettings::default()
        }
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn spoofed_header_is_replaced() {
        let m = mesh();
        let me = "spiffe://cluster.local/ns/tenant-a/sa/x";
        let s = sanitize(
            &m,
            Some(me),
            Some(("spiffe://cluster.local/ns/tenant-b/sa/y", 2)),
        );
        assert_eq!(
            s.rewrite,
            IdentityRewrite {
                strip: true,
                set: Some(me)
            }
        );
        assert_eq!(s.value, Some(me));
        assert!(s.stripped_incoming);
        // Plaintext: stripped and not set.
        let s = sanitize(&m, None, Some(("forged", 1)));
        assert_eq!(
            s.rewrite,
            IdentityRewrite {
                strip: true,
                set: None
            }
        );
        assert_eq!(s.value, None);
        // No header, verified peer: set only.
        let s = sanitize(&m, Some(me), None);
        assert_eq!(
            s.rewrite,
            IdentityRewrite {
                strip: false,
                set: Some(me)
            }
        );
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn trusted_forwarder_passes_well_formed_values() {
        let m = mesh();
        let fwd = "spiffe://cluster.local/ns/shared-services/sa/gw";
        let tenant = "spiffe://cluster.local/ns/tenant-a/sa/x";
        let s = sanitize(&m, Some(fwd), Some((tenant, 1)));
        assert_eq!(s.rewrite, IdentityRewrite::KEEP);
        assert_eq!(s.value, Some(tenant));
        // Malformed or duplicated: replaced by the forwarder's own identity.
        let s = sanitize(&m, Some(fwd), Some(("tenant-a", 1)));
        assert_eq!(s.value, Some(fwd));
        let s = sanitize(&m, Some(fwd), Some((tenant, 2)));
        assert_eq!(s.value, Some(fwd));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn principal_form() {
        let mut m = mesh();
        m.identity_header.value = IdentityValue::Principal;
        let me = "spiffe://cluster.local/ns/tenant-a/sa/x";
        let s = sanitize(&m, Some(me), None);
        assert_eq!(s.value, Some("cluster.local/ns/tenant-a/sa/x"));
        let fwd = "spiffe://cluster.local/ns/shared-services/sa/gw";
        let s = sanitize(&m, Some(fwd), Some(("cluster.local/ns/tenant-a/sa/x", 1)));
        assert_eq!(s.value, Some("cluster.local/ns/tenant-a/sa/x"));
    }

    #[test]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn forwarders_of_another_trust_domain_are_not_trusted() {
        let mut m = mesh();
        let tenant = "spiffe://cluster.local/ns/tenant-a/sa/x";
        let foreign = "spiffe://evil.example/ns/shared-services/sa/gw";
        let s = sanitize(&m, Some(foreign), Some((tenant, 1)));
        assert_eq!(s.value, Some(foreign));
        assert!(s.stripped_incoming);
        // An alias of the mesh's trust domain is the mesh's own.
        m.trust_domain_aliases.push(String::from("evil.example"));
        let s = sanitize(&m, Some(foreign), Some((tenant, 1)));
        assert_eq!(s.value, Some(tenant));
    }
}
