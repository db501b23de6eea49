//! Certificates made at run time: a CA, Envoy's server certificate and one
//! client certificate per caller, the way a mesh's SPIFFE X.509-SVIDs look
//! (DESIGN §4: the only URI SAN is the caller's SPIFFE ID).
//!
//! Keys are ECDSA P-256 made by rcgen on ring. Nothing is written anywhere but
//! the run's own temporary directory, and nothing outlives it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::{Error, Result};

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Exactly one URI SAN, e.g. `spiffe://cluster.local/ns/a/sa/b` (the
    /// normal case), or any other URI (`https://evil.example/ns/a/sa/b`).
    Uri(String),
    /// Several URI SANs, in this order (Envoy's property reports the first).
    Uris(Vec<String>),
    /// No URI SAN at all: a DNS SAN only.
    NoUriSan,
    /// One URI SAN, but signed by a CA that Envoy does not trust.
    OtherCa(String),
}

impl Identity {
    /// The SPIFFE ID of a workload: `spiffe://{td}/ns/{ns}/sa/{sa}`.
    pub fn spiffe(trust_domain: &str, namespace: &str, service_account: &str) -> Identity {
        Identity::Uri(format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }
}

impl From<&str> for Identity {
    fn from(uri: &str) -> Identity {
        Identity::Uri(uri.to_string())
    }
}

/// A client certificate and its key, ready for a TLS client.
#[derive(Clone)]
pub struct CallerCert {
    pub identity: Identity,
    pub cert_pem: String,
    pub key_pem: String,
    pub(crate) cert_der: CertificateDer<'static>,
    pub(crate) key_der: Arc<Vec<u8>>,
}

impl std::fmt::Debug for CallerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerCert")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl CallerCert {
    /// The certificate chain a client presents (the leaf alone).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone()]
    }

    /// The leaf's private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.as_ref().clone()))
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Result<Ca> {
        let key = KeyPair::generate().map_err(|e| Error::certs(format!("CA key: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::certs(format!("CA certificate: {e}")))?;
        Ok(Ca { cert, key })
    }

    fn issue(
        &self,
        sans: Vec<SanType>,
        server: bool,
        cn: &str,
    ) -> Result<(rcgen::Certificate, KeyPair)> {
        let key = KeyPair::generate().map_err(|e| Error::certs(format!("leaf key: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| Error::certs(format!("certificate for {cn}: {e}")))?;
        Ok((cert, key))
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshfence test");
    dn.push(DnType::CommonName, cn);
    dn
}

fn uri(s: &str) -> Result<SanType> {
    let v = s
        .try_into()
        .map_err(|e| Error::certs(format!("URI SAN {s:?} is not IA5: {e}")))?;
    Ok(SanType::URI(v))
}

/// The run's PKI: one trusted CA, Envoy's server certificate, client
/// certificates on demand (cached per identity), and a second, untrusted CA for
/// [`Identity::OtherCa`].
pub struct Pki {
    dir: PathBuf,
    ca: Ca,
    ca_der: CertificateDer<'static>,
    other_ca: Mutex<Option<Arc<Ca>>>,
    clients: Mutex<HashMap<Identity, CallerCert>>,
}

impl Pki {
    /// Makes the CA and a server certificate for `localhost` and `127.0.0.1`,
    /// and writes `ca.pem`, `server.pem` and `server.key` into `dir`.
    pub fn create(dir: &Path) -> Result<Pki> {
        let ca = Ca::new("meshfence test CA")?;
        let (server, server_key) = ca.issue(
            vec![
                SanType::DnsName(
                    "localhost"
                        .try_into()
                        .map_err(|e| Error::certs(format!("{e}")))?,
                ),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            true,
            "localhost",
        )?;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("create the certificate directory", e))?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| Error::io("write certificates", e))
        };
        write("ca.pem", ca.cert.pem())?;
        write("server.pem", server.pem())?;
        write("server.key", server_key.serialize_pem())?;
        let ca_der = ca.cert.der().clone();
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_der,
            other_ca: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The directory holding `ca.pem`, `server.pem` and `server.key`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trusted CA, DER, for a TLS client's root store.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A client certificate for `identity`, made once and then reused.
    pub fn client(&self, identity: impl Into<Identity>) -> Result<CallerCert> {
        let identity = identity.into();
        if let Some(c) = lock(&self.clients).get(&identity) {
            return Ok(c.clone());
        }
        let made = self.make_client(&identity)?;
        lock(&self.clients).insert(identity, made.clone());
        Ok(made)
    }

    fn make_client(&self, identity: &Identity) -> Result<CallerCert> {
        let (sans, other) = match identity {
            Identity::Uri(u) => (vec![uri(u)?], false),
            Identity::Uris(us) => (us.iter().map(|u| uri(u)).collect::<Result<_>>()?, false),
            Identity::NoUriSan => (
                vec![SanType::DnsName(
                    "client.localhost"
                        .try_into()
                        .map_err(|e| Error::certs(format!("{e}")))?,
                )],
                false,
            ),
            Identity::OtherCa(u) => (vec![uri(u)?], true),
        };
        let (cert, key) = if other {
            let ca = {
                let mut slot = lock(&self.other_ca);
                match slot.as_ref() {
                    Some(ca) => ca.clone(),
                    None => {
                        let ca = Arc::new(Ca::new("untrusted CA")?);
                        *slot = Some(ca.clone());
                        ca
                    }
                }
            };
            ca.issue(sans, false, "client")?
        } else {
            self.ca.issue(sans, false, "client")?
        };
        Ok(CallerCert {
            identity: identity.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: Arc::new(key.serialize_der()),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
