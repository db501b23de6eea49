//! Requests derived from a policy's own literals.
//!
//! The generator reads Istio `AuthorizationPolicy` documents as plain YAML (not
//! through meshfence's front end, so it shares no code with what it judges),
//! collects every literal value of every field, and builds requests from each
//! value, its wildcard expansions and its near neighbours: a method of each kind,
//! paths with and without a query and with prefix, suffix and template edge
//! cases, hosts in other letter cases and with ports, each header present,
//! absent and different, callers from every named namespace, service account and
//! trust domain (and their aliases) plus plaintext. Combinations are sampled
//! with a fixed seed, so a run is reproducible.

use std::collections::BTreeSet;

use serde_yaml::Value;

/// Who sends a request, and how.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Caller {
    /// Plain HTTP, no TLS (Istio PERMISSIVE lets it in).
    Plaintext,
    /// TLS without a client certificate.
    TlsNoCert,
    /// TLS with a client certificate whose only URI SAN is this.
    Uri(String),
}

impl Caller {
    pub fn uri(&self) -> Option<&str> {
        match self {
            Caller::Uri(u) => Some(u),
            _ => None,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Plaintext => f.write_str("plaintext"),
            Caller::TlsNoCert => f.write_str("TLS without a client certificate"),
            Caller::Uri(u) => write!(f, "TLS, client certificate with URI SAN {u}"),
        }
    }
}

/// One request to send to both listeners.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenRequest {
    pub from: Caller,
    pub method: String,
    pub path: String,
    pub host: String,
    /// The destination port (selects the listener pair).
    pub port: u16,
    pub headers: Vec<(String, String)>,
}

/// The literal values found in a set of policies, grouped by what they feed.
#[derive(Debug, Default)]
pub struct Literals {
    pub callers: BTreeSet<Caller>,
    pub methods: BTreeSet<String>,
    pub paths: BTreeSet<String>,
    pub hosts: BTreeSet<String>,
    pub ports: BTreeSet<u16>,
    /// Header name (lower case) → values to try; the empty set means absent only.
    pub headers: std::collections::BTreeMap<String, BTreeSet<Option<String>>>,
}

/// The default destination port of a generated request.
pub const DEFAULT_PORT: u16 = 8080;

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Concrete strings a pattern value stands for: the value itself with each `*`
/// filled in, plus near misses.
fn expand(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value == "*" {
        out.extend(["x".to_string(), "anything".to_string()]);
        return out;
    }
    if let Some(p) = value.strip_suffix('*') {
        out.push(format!("{p}x"));
        out.push(p.to_string());
        if let Some(shorter) = p.get(..p.len().saturating_sub(1)) {
            out.push(format!("{shorter}x"));
        }
    } else if let Some(s) = value.strip_prefix('*') {
        out.push(format!("x{s}"));
        out.push(s.to_string());
        out.push(format!("x{s}x"));
    } else {
        out.push(value.to_string());
        out.push(format!("{value}x"));
        if value.len() > 1 {
            if let Some(shorter) = value.get(..value.len() - 1) {
                out.push(shorter.to_string());
            }
        }
    }
    out
}

fn principal_uris(p: &str, trust_domains: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for e in expand(p) {
        out.push(format!("spiffe://{e}"));
        // The same identity in every known trust domain.
        if let Some((td, rest)) = e.split_once('/') {
            for other in trust_domains {
                if other != td {
                    out.push(format!("spiffe://{other}/{rest}"));
                }
            }
        }
    }
    out
}

fn path_values(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    if p.contains('{') {
        // Templates: fill each operator with one segment, none, two segments.
        for fill in ["a", "", "a/b", "a.b", "%20", "a%2Fb", "*", "{*}"] {
            out.push(p.replace("{**}", fill).replace("{*}", fill));
        }
        out.push(p.replace("{**}", "a/b").replace("{*}", "a"));
        return out;
    }
    for e in expand(p) {
        out.push(e.clone());
        out.push(format!("{e}?q=1"));
        out.push(format!("{e}/"));
        // Envoy 1.40 refuses a fragment with 400 before any filter; the
        // runner lists such paths as not exercised.
        out.push(format!("{e}#frag"));
        out.push(e.to_ascii_uppercase());
        out.push(format!("{e};x=1"));
        out.push(format!("/{e}"));
        out.push(format!("{e}/../{}", e.rsplit('/').next().unwrap_or("")));
        if let Some((head, tail)) = e.rsplit_once('/') {
            if !head.is_empty() {
                out.push(format!("{head}%2F{tail}"));
                out.push(format!("{head}%2f{tail}"));
            }
        }
        if !e.starts_with('/') {
            out.push(format!("/{e}"));
        }
    }
    out
}

impl Literals {
    /// Collects the literals of every `AuthorizationPolicy` in `docs`.
    pub fn collect(docs: &[Value], namespace: &str, trust_domains: &[String]) -> Literals {
        let mut l = Literals::default();
        let td0 = trust_domains
            .first()
            .cloned()
            .unwrap_or_else(|| "cluster.local".into());
        l.callers.insert(Caller::Plaintext);
        l.callers.insert(Caller::TlsNoCert);
        l.callers.insert(Caller::Uri(format!(
            "spiffe://{td0}/ns/{namespace}/sa/default"
        )));
        l.callers
            .insert(Caller::Uri("spiffe://other.td/ns/other/sa/default".into()));
        // Envoy's HTTP/1 codec refuses lower-case standard methods (`get`)
        // and unknown ones (`FOO`) with 400 before any filter, so they are
        // not in the set.
        l.methods
            .extend(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"].map(String::from));
        l.paths.extend(
            [
                "/",
                "/other",
                "/a/b?c=d",
                "/a//b",
                "/a/./b/../c",
                "/a;b",
                "/A%2Fb",
            ]
            .map(String::from),
        );
        l.hosts.extend(
            [
                "example.com",
                "EXAMPLE.com:8080",
                "example.com:80",
                "example.com.",
            ]
            .map(String::from),
        );
        // URI SANs an attacker could hold: not SPIFFE, a longer path, no
        // service account, upper case.
        for u in [
            format!("https://{td0}/ns/{namespace}/sa/default"),
            format!("spiffe://{td0}/ns/{namespace}/sa/default/extra"),
            format!("spiffe://{td0}/ns/{namespace}"),
            format!("spiffe://{td0}"),
            format!("SPIFFE://{td0}/ns/{namespace}/sa/default"),
            format!(
                "spiffe://{}/ns/{namespace}/sa/default",
                td0.to_ascii_uppercase()
            ),
        ] {
            l.callers.insert(Caller::Uri(u));
        }
        l.ports.insert(DEFAULT_PORT);
        for doc in docs {
            let rules = doc
                .get("spec")
                .and_then(|s| s.get("rules"))
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for rule in &rules {
                for from in rule
                    .get("from")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    let Some(src) = from.get("source") else {
                        continue;
                    };
                    l.source(src, namespace, &td0, trust_domains);
                }
                for to in rule
                    .get("to")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    let Some(op) = to.get("operation") else {
                        continue;
                    };
                    l.operation(op);
                }
                for cond in rule
                    .get("when")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    l.condition(cond, &td0, trust_domains);
                }
            }
        }
        l
    }

    fn source(&mut self, src: &Value, namespace: &str, td0: &str, tds: &[String]) {
        for key in ["principals", "notPrincipals"] {
            for p in strings(src.get(key)) {
                self.callers
                    .extend(principal_uris(&p, tds).into_iter().map(Caller::Uri));
            }
        }
        for key in ["namespaces", "notNamespaces"] {
            for ns in strings(src.get(key)) {
                for e in expand(&ns) {
                    self.callers
                        .insert(Caller::Uri(format!("spiffe://{td0}/ns/{e}/sa/default")));
                    self.callers
                        .insert(Caller::Uri(format!("spiffe://{td0}/ns/{e}/sa/x/extra")));
                    // Istio's `.*/ns/<ns>/.*` needs a slash after the name.
                    self.callers
                        .insert(Caller::Uri(format!("spiffe://{td0}/ns/{e}")));
                    self.callers
                        .insert(Caller::Uri(format!("spiffe://{td0}/ns/{e}/")));
                    self.callers
                        .insert(Caller::Uri(format!("spiffe://{td0}/x/ns/{e}/sa/y")));
                }
            }
        }
        for key in ["serviceAccounts", "notServiceAccounts"] {
            for sa in strings(src.get(key)) {
                let (ns, name) = sa.split_once('/').unwrap_or((namespace, sa.as_str()));
                for td in tds.iter().map(String::as_str).chain([td0]) {
                    self.callers
                        .insert(Caller::Uri(format!("spiffe://{td}/ns/{ns}/sa/{name}")));
                }
                self.callers
                    .insert(Caller::Uri(format!("spiffe://{td0}/ns/{ns}/sa/{name}x")));
                self.callers
                    .insert(Caller::Uri(format!("spiffe://{td0}/ns/{ns}/x/sa/{name}")));
                self.callers
                    .insert(Caller::Uri(format!("spiffe://{td0}/ns/{ns}x/sa/{name}")));
                // `spiffe://.+/ns/NS/(.+/|)sa/SA(/.+)?`: edges of each part.
                self.callers
                    .insert(Caller::Uri(format!("spiffe:///ns/{ns}/sa/{name}")));
                self.callers
                    .insert(Caller::Uri(format!("spiffe://{td0}/ns/{ns}/sa/{name}/")));
                self.callers
                    .insert(Caller::Uri(format!("spiffe://{td0}/ns/{ns}/sa/{name}/x")));
                self.callers
                    .insert(Caller::Uri(format!("spiffe://{td0}/ns/{ns}//sa/{name}")));
            }
        }
        for key in ["trustDomains", "notTrustDomains"] {
            for td in strings(src.get(key)) {
                for e in expand(&td) {
                    self.callers.insert(Caller::Uri(format!(
                        "spiffe://{e}/ns/{namespace}/sa/default"
                    )));
                }
            }
        }
    }

    fn operation(&mut self, op: &Value) {
        for key in ["methods", "notMethods"] {
            for m in strings(op.get(key)) {
                self.methods.extend(expand(&m));
            }
        }
        for key in ["paths", "notPaths"] {
            for p in strings(op.get(key)) {
                self.paths.extend(path_values(&p));
            }
        }
        for key in ["hosts", "notHosts"] {
            for h in strings(op.get(key)) {
                for e in expand(&h) {
                    self.hosts.insert(e.to_ascii_uppercase());
                    self.hosts.insert(format!("{e}:8080"));
                    self.hosts.insert(e);
                }
            }
        }
        for key in ["ports", "notPorts"] {
            for p in strings(op.get(key)) {
                if let Ok(n) = p.parse::<u16>() {
                    self.ports.insert(n);
                }
            }
        }
    }

    fn condition(&mut self, cond: &Value, td0: &str, tds: &[String]) {
        let Some(key) = cond.get("key").and_then(Value::as_str) else {
            return;
        };
        let values: Vec<String> = strings(cond.get("values"))
            .into_iter()
            .chain(strings(cond.get("notValues")))
            .collect();
        if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            let entry = self.headers.entry(name.to_ascii_lowercase()).or_default();
            entry.insert(None);
            entry.insert(Some("other".into()));
            entry.insert(Some(String::new()));
            for v in values {
                entry.extend(expand(&v).into_iter().map(Some));
            }
            return;
        }
        match key {
            "source.principal" => {
                for v in values {
                    self.callers
                        .extend(principal_uris(&v, tds).into_iter().map(Caller::Uri));
                }
            }
            "source.namespace" => {
                for v in values {
                    for e in expand(&v) {
                        self.callers
                            .insert(Caller::Uri(format!("spiffe://{td0}/ns/{e}/sa/default")));
                    }
                }
            }
            "destination.port" => {
                for v in values {
                    if let Ok(n) = v.parse::<u16>() {
                        self.ports.insert(n);
                    }
                }
            }
            "connection.sni" => {}
            _ => {}
        }
    }

    /// Builds the requests: every value of every dimension once against a
    /// base request, then `samples` random combinations (fixed seed).
    pub fn requests(&self, samples: usize, seed: u64) -> Vec<GenRequest> {
        let callers: Vec<_> = self.callers.iter().cloned().collect();
        let methods: Vec<_> = self.methods.iter().cloned().collect();
        let paths: Vec<_> = self.paths.iter().cloned().collect();
        let hosts: Vec<_> = self.hosts.iter().cloned().collect();
        let ports: Vec<_> = self.ports.iter().copied().collect();
        let headers: Vec<(String, Vec<Option<String>>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect();
        let base = GenRequest {
            from: callers
                .iter()
                .find(|c| matches!(c, Caller::Uri(_)))
                .cloned()
                .unwrap_or(Caller::Plaintext),
            method: "GET".into(),
            path: "/".into(),
            host: "example.com".into(),
            port: DEFAULT_PORT,
            headers: Vec::new(),
        };
        let mut out = BTreeSet::new();
        for c in &callers {
            out.insert(GenRequest {
                from: c.clone(),
                ..base.clone()
            });
        }
        for m in &methods {
            out.insert(GenRequest {
                method: m.clone(),
                ..base.clone()
            });
        }
        for p in &paths {
            out.insert(GenRequest {
                path: p.clone(),
                ..base.clone()
            });
        }
        for h in &hosts {
            out.insert(GenRequest {
                host: h.clone(),
                ..base.clone()
            });
        }
        for &p in &ports {
            out.insert(GenRequest {
                port: p,
                ..base.clone()
            });
        }
        for (name, values) in &headers {
            for v in values.iter().flatten() {
                out.insert(GenRequest {
                    headers: vec![(name.clone(), v.clone())],
                    ..base.clone()
                });
                // Two copies: Envoy's header matcher reads them joined by `,`.
                out.insert(GenRequest {
                    headers: vec![(name.clone(), v.clone()), (name.clone(), "other".into())],
                    ..base.clone()
                });
                out.insert(GenRequest {
                    headers: vec![
                        (name.to_ascii_uppercase(), "other".into()),
                        (name.clone(), v.clone()),
                    ],
                    ..base.clone()
                });
            }
        }
        let mut rng = SplitMix(seed);
        for _ in 0..samples {
            let mut hs = Vec::new();
            for (name, values) in &headers {
                if let Some(Some(v)) = rng.pick(values) {
                    hs.push((name.clone(), v.clone()));
                }
            }
            out.insert(GenRequest {
                from: rng.pick(&callers).cloned().unwrap_or(Caller::Plaintext),
                method: rng.pick(&methods).cloned().unwrap_or_else(|| "GET".into()),
                path: rng.pick(&paths).cloned().unwrap_or_else(|| "/".into()),
                host: rng
                    .pick(&hosts)
                    .cloned()
                    .unwrap_or_else(|| "example.com".into()),
                port: rng.pick(&ports).copied().unwrap_or(DEFAULT_PORT),
                headers: hs,
            });
        }
        out.into_iter().collect()
    }
}

/// A tiny deterministic generator (SplitMix64), so runs are reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let i = (self.next() % items.len() as u64) as usize;
        items.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_feed_requests() {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(
            "spec:\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/a/sa/b\"]\n    to:\n    - operation:\n        paths: [\"/x/*\"]\n        ports: [\"9000\"]\n    when:\n    - key: request.headers[X-Id]\n      values: [\"v1\"]\n",
        )
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
        let l = Literals::collect(&docs, "foo", &["cluster.local".into(), "td2".into()]);
        assert!(l
            .callers
            .contains(&Caller::Uri("spiffe://cluster.local/ns/a/sa/b".into())));
        assert!(l
            .callers
            .contains(&Caller::Uri("spiffe://td2/ns/a/sa/b".into())));
        assert!(l.paths.contains("/x/x"));
        assert!(l.ports.contains(&9000));
        assert!(l.headers["x-id"].contains(&Some("v1".into())));
        let reqs = l.requests(100, 7);
        assert!(reqs.len() > 50);
        // Every value reaches a request on its own, against the base request.
        assert!(reqs
            .iter()
            .any(|r| r.from.uri() == Some("spiffe://cluster.local/ns/a/sa/b")));
        assert!(reqs.iter().any(|r| r.path == "/x/x"));
        assert!(reqs.iter().any(|r| r.port == 9000));
        assert!(reqs
            .iter()
            .any(|r| r.headers.iter().any(|(_, v)| v == "v1")));
        assert!(reqs.iter().any(|r| r.from == Caller::Plaintext));
        assert!(reqs.iter().any(|r| r.from == Caller::TlsNoCert));
        // Two copies of a header, and the same request twice is one request.
        assert!(reqs.iter().any(|r| r.headers.len() == 2));
        assert_eq!(l.requests(100, 7), reqs, "a fixed seed is reproducible");
    }
}
