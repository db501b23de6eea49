//! The mesh settings file (`--mesh`, DESIGN §11): trust domain and aliases,
//! root namespace, identity header, trusted forwarders, path and spoofing
//! policies, and the deny reply. Every key is optional; unknown keys are refused.

use std::path::Path;

use meshfence_ruleset::ir::{IdentityValue, MeshSettings, PathPolicy, SpoofPolicy};

use crate::diagnostics::{Error, Errors};
use crate::source::{self, Node, Reader, Value};

const KEYS: &[&str] = &[
    "trustDomain",
    "trustDomainAliases",
    "rootNamespace",
    "identityHeader",
    "trustedForwarders",
    "pathPolicy",
    "spoofedIdentity",
    "denyStatus",
    "denyBody",
    "requestAuthentication",
];

/// Whether the mesh has JWT request authentication (Istio
/// `RequestAuthentication`), which decides what JWT policy fields mean. A
/// compile-time setting: it changes how policies lower, not what the filter
/// does, so the ruleset does not carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestAuthentication {
    /// `refuse` (the default): policies that use `requestPrincipals`,
    /// `notRequestPrincipals` or `request.auth.*` do not compile, because they
    /// need a verified JWT the filter does not have.
    #[default]
    Refuse,
    /// `none`: this mesh has no RequestAuthentication, so no request carries a
    /// verified JWT. JWT fields lower to clauses on
    /// [`Attribute::RequestAuth`](meshfence_ruleset::ir::Attribute::RequestAuth),
    /// which never has a value: their values never match and their `not`
    /// forms always do, as Envoy's RBAC metadata matcher behaves without
    /// `jwt_authn` metadata.
    None,
}

/// A whole mesh settings file: what the ruleset carries, and the
/// compile-time settings beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshFile {
    pub settings: MeshSettings,
    pub request_authentication: RequestAuthentication,
}

/// Reads a mesh settings file, compile-time settings included.
pub fn load_file(path: &Path) -> Result<MeshFile, Errors> {
    let docs = source::parse_file(path)?;
    parse_docs_file(docs)
}

/// Parses a mesh settings file from text, compile-time settings included.
pub fn parse_str_file(file: &str, text: &str) -> Result<MeshFile, Errors> {
    let docs = source::parse_str(file, text)?;
    parse_docs_file(docs)
}

fn parse_docs_file(docs: Vec<source::Document>) -> Result<MeshFile, Errors> {
    match docs.as_slice() {
        [] => Ok(MeshFile::default()),
        [doc] => from_node_file(&doc.root),
        [_, second, ..] => Err(Error::new(
            second.root.at.clone(),
            "",
            "a mesh settings file holds one document",
        )
        .into()),
    }
}

/// Reads a mesh settings file: the settings the ruleset carries
/// ([`load_file`] also returns the compile-time ones).
pub fn load(path: &Path) -> Result<MeshSettings, Errors> {
    load_file(path).map(|m| m.settings)
}

/// Parses mesh settings from text (`file` names it in errors).
pub fn parse_str(file: &str, text: &str) -> Result<MeshSettings, Errors> {
    parse_str_file(file, text).map(|m| m.settings)
}

/// Reads mesh settings from a parsed node (the settings the ruleset carries;
/// [`from_node_file`] also returns the compile-time ones).
pub fn from_node(root: &Node) -> Result<MeshSettings, Errors> {
    from_node_file(root).map(|m| m.settings)
}

/// Reads a whole mesh settings file from a parsed node.
pub fn from_node_file(root: &Node) -> Result<MeshFile, Errors> {
    let mut r = Reader::default();
    let mut mesh = MeshSettings::default();
    let mut request_authentication = RequestAuthentication::default();
    if let Some(f) = r.fields(root, "", KEYS) {
        if let Some(n) = f.get("requestAuthentication") {
            if let Some(v) = r.string(n, "requestAuthentication") {
                match v.as_str() {
                    "refuse" => request_authentication = RequestAuthentication::Refuse,
                    "none" => request_authentication = RequestAuthentication::None,
                    _ => r.error(
                        &n.at,
                        "requestAuthentication",
                        format!("`{v}` is not one of refuse, none"),
                    ),
                }
            }
        }
        if let Some(n) = f.get("trustDomain") {
            if let Some(td) = r.string(n, "trustDomain") {
                check_trust_domain(&mut r, n, "trustDomain", &td);
                mesh.trust_domain = td;
            }
        }
        if let Some(n) = f.get("trustDomainAliases") {
            let mut aliases = Vec::new();
            for (td, item, p) in r.strings(n, "trustDomainAliases") {
                check_trust_domain(&mut r, item, &p, &td);
                aliases.push(td);
            }
            mesh.trust_domain_aliases = aliases;
        }
        if let Some(n) = f.get("rootNamespace") {
            if let Some(ns) = r.string(n, "rootNamespace") {
                if ns.is_empty() {
                    r.error(&n.at, "rootNamespace", "must not be empty");
                }
                mesh.root_namespace = ns;
            }
        }
        if let Some(n) = f.get("identityHeader") {
            if let Some(h) = r.fields(n, "identityHeader", &["name", "value"]) {
                if let Some(name) = h.get("name") {
                    let p = "identityHeader.name";
                    if let Some(v) = r.string(name, p) {
                        if v.is_empty() || !v.bytes().all(is_token_byte) {
                            r.error(&name.at, p, format!("`{v}` is not a valid header name"));
                        } else if v.starts_with(':') || v.eq_ignore_ascii_case("host") {
                            r.error(&name.at, p, format!("`{v}` cannot be the identity header"));
                        }
                        mesh.identity_header.name = v.to_ascii_lowercase();
                    }
                }
                if let Some(value) = h.get("value") {
                    let p = "identityHeader.value";
                    if let Some(v) = r.string(value, p) {
                        match v.as_str() {
                            "spiffe" => mesh.identity_header.value = IdentityValue::Spiffe,
                            "principal" => mesh.identity_header.value = IdentityValue::Principal,
                            "off" => mesh.identity_header.value = IdentityValue::Off,
                            _ => r.error(
                                &value.at,
                                p,
                                format!("`{v}` is not one of spiffe, principal, off"),
                            ),
                        }
                    }
                }
            }
        }
        if let Some(n) = f.get("trustedForwarders") {
            let mut fw = Vec::new();
            for (ns, item, p) in r.strings(n, "trustedForwarders") {
                if ns.is_empty() {
                    r.error(&item.at, &p, "empty value is not allowed");
                }
                fw.push(ns);
            }
            mesh.trusted_forwarders = fw;
        }
        if let Some(n) = f.get("pathPolicy") {
            if let Some(v) = r.string(n, "pathPolicy") {
                match v.as_str() {
                    "strict" => mesh.path_policy = PathPolicy::Strict,
                    "istio" => mesh.path_policy = PathPolicy::Istio,
                    _ => r.error(
                        &n.at,
                        "pathPolicy",
                        format!("`{v}` is not one of strict, istio"),
                    ),
                }
            }
        }
        if let Some(n) = f.get("spoofedIdentity") {
            if let Some(v) = r.string(n, "spoofedIdentity") {
                match v.as_str() {
                    "strip" => mesh.spoofed_identity = SpoofPolicy::Strip,
                    "deny" => mesh.spoofed_identity = SpoofPolicy::Deny,
                    _ => r.error(
                        &n.at,
                        "spoofedIdentity",
                        format!("`{v}` is not one of strip, deny"),
                    ),
                }
            }
        }
        if let Some(n) = f.get("denyStatus") {
            match &n.value {
                Value::Int(s) if (300..=599).contains(s) => mesh.deny_status = *s as u16,
                Value::Int(s) => r.error(
                    &n.at,
                    "denyStatus",
                    format!("{s} is not an HTTP status between 300 and 599"),
                ),
                other => r.error(
                    &n.at,
                    "denyStatus",
                    format!("expected an integer, found {}", other.kind()),
                ),
            }
        }
        if let Some(n) = f.get("denyBody") {
            if let Some(v) = r.string(n, "denyBody") {
                mesh.deny_body = v;
            }
        }
    }
    if r.errors.is_empty() {
        Ok(MeshFile {
            settings: mesh,
            request_authentication,
        })
    } else {
        Err(Errors(r.into_sorted()))
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_trust_domain(r: &mut Reader, n: &Node, path: &str, td: &str) {
    let ok = !td.is_empty()
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
    if !ok {
        r.error(
            &n.at,
            path,
            format!("`{td}` is not a trust domain (lower-case letters, digits, `.`, `-`, `_`)"),
        );
    }
}
