//! `meshfence wasmplugin`: the Istio `WasmPlugin` (extensions.istio.io/v1alpha1)
//! that ships the filter and a compiled ruleset to sidecars.
//!
//! The plugin runs in the `AUTHZ` phase (before Istio's own RBAC filter, so
//! rules see the sanitized identity header, DESIGN §4) and fails closed
//! (`FAIL_CLOSE`: a module that cannot be fetched or a ruleset that does not
//! load stops traffic instead of skipping the filter, DESIGN §6). Its
//! `pluginConfig` is the JSON form the filter reads (filter/src/config.rs):
//!
//! ```yaml
//! pluginConfig:
//!   ruleset: <the ruleset, base64>
//!   workload:                 # optional; else Istio's node metadata
//!     namespace: foo
//!     labels: {app: httpbin}
//! ```

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::explain::WorkloadSpec;

pub const API_VERSION: &str = "extensions.istio.io/v1alpha1";
pub const KIND: &str = "WasmPlugin";

/// What goes into the manifest.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    pub name: String,
    pub namespace: String,
    /// Where sidecars fetch the module: `oci://`, `https://`, `http://`, `file://`.
    pub url: String,
    /// The module's sha256, 64 lower-case hex digits.
    pub sha256: String,
    /// `spec.selector.matchLabels`; empty: every workload of the namespace
    /// (of the mesh, in the root namespace).
    pub selector: Vec<(String, String)>,
    /// The workload the filter enforces for, when not from node metadata.
    pub workload: Option<WorkloadSpec>,
    /// The encoded ruleset.
    pub ruleset: Vec<u8>,
}

/// The lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `key=value[,key=value...]`.
pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("`{part}` is not key=value"));
        };
        let (k, v) = (k.trim(), v.trim());
        if out.iter().any(|(key, _)| key == k) {
            return Err(format!("`{k}` is given twice"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    if out.is_empty() {
        return Err("no key=value given".into());
    }
    Ok(out)
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_dns1123_label(s: &str) -> bool {
    is_dns1123_subdomain(s) && s.len() <= 63 && !s.contains('.')
}

impl WasmPlugin {
    /// What the CRD (and Kubernetes) would refuse, said before applying it.
    pub fn check(&self) -> Result<(), String> {
        if !is_dns1123_subdomain(&self.name) {
            return Err(format!(
                "--name `{}` is not a Kubernetes object name (lower-case letters, digits, `-`, `.`)",
                self.name
            ));
        }
        if !is_dns1123_label(&self.namespace) {
            return Err(format!(
                "--namespace `{}` is not a Kubernetes namespace name",
                self.namespace
            ));
        }
        let scheme = self.url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("oci" | "https" | "http" | "file") => {}
            Some(other) => {
                return Err(format!(
                    "--url `{}`: the scheme must be one of oci, https, http, file (not {other})",
                    self.url
                ))
            }
            None => {
                return Err(format!(
                    "--url `{}`: give the scheme (oci://, https://, http:// or file://)",
                    self.url
                ))
            }
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "--sha256 `{}` is not 64 lower-case hex digits",
                self.sha256
            ));
        }
        for (k, v) in &self.selector {
            if k.is_empty() {
                return Err("--selector: a key is empty".into());
            }
            if k.contains('*') || v.contains('*') {
                return Err(format!(
                    "--selector {k}={v}: Istio allows no wildcard in a selector"
                ));
            }
            if v.len() > 63 {
                return Err(format!(
                    "--selector {k}: a label value has at most 63 characters"
                ));
            }
        }
        if let Some(w) = &self.workload {
            if w.namespace.is_empty() {
                return Err("--workload: the namespace is empty".into());
            }
        }
        Ok(())
    }

    /// The manifest as a JSON value (the shape `kubectl` takes).
    pub fn to_value(&self) -> Value {
        let mut config = Map::new();
        config.insert(
            "ruleset".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(&self.ruleset)),
        );
        if let Some(w) = &self.workload {
            let labels: Map<String, Value> = w
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            config.insert(
                "workload".into(),
                json!({"namespace": w.namespace, "labels": labels}),
            );
        }
        let mut spec = Map::new();
        if !self.selector.is_empty() {
            let labels: Map<String, Value> = self
                .selector
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            spec.insert("selector".into(), json!({ "matchLabels": labels }));
        }
        spec.insert("url".into(), Value::String(self.url.clone()));
        spec.insert("sha256".into(), Value::String(self.sha256.clone()));
        spec.insert(
            "imagePullPolicy".into(),
            Value::String("IfNotPresent".into()),
        );
        spec.insert("phase".into(), Value::String("AUTHZ".into()));
        spec.insert("failStrategy".into(), Value::String("FAIL_CLOSE".into()));
        spec.insert("type".into(), Value::String("HTTP".into()));
        spec.insert("pluginName".into(), Value::String("meshfence".into()));
        spec.insert("pluginConfig".into(), Value::Object(config));
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": Value::Object(spec),
        })
    }

    /// The manifest as YAML, after [`WasmPlugin::check`].
    pub fn to_yaml(&self) -> Result<String, String> {
        self.check()?;
        let mut out = String::from(
            "# Generated by `meshfence wasmplugin`: the meshfence filter with its compiled\n\
             # ruleset, in Istio's AUTHZ phase, failing closed.\n",
        );
        yaml(&self.to_value(), 0, &mut out);
        Ok(out)
    }
}

/// A plain YAML key: letters, digits, `-`, `_`, `.`, `/`, starting with a letter.
fn plain_key(k: &str) -> bool {
    k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn key(k: &str) -> String {
    if plain_key(k) {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// A scalar: strings JSON-quoted (a valid YAML double-quoted scalar, never
/// read as a number, a boolean or null), except enum-like words.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                || s == "extensions.istio.io/v1alpha1"
                || s == "WasmPlugin"
                || s == "IfNotPresent" =>
        {
            s.clone()
        }
        other => other.to_string(),
    }
}

/// Block-style YAML for maps (objects) and sequences of scalars or maps.
fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        yaml(v, indent + 2, out);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        yaml(v, indent + 2, out);
                    }
                    Value::Object(_) => out.push_str(&format!("{pad}{}: {{}}\n", key(k))),
                    Value::Array(_) => out.push_str(&format!("{pad}{}: []\n", key(k))),
                    _ => out.push_str(&format!("{pad}{}: {}\n", key(k), scalar(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}-\n"));
                        yaml(item, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn selectors() {
        assert_eq!(
            parse_selector("app=api, version=v1").unwrap(),
            vec![
                ("app".into(), "api".into()),
                ("version".into(), "v1".into())
            ]
        );
        assert!(parse_selector("app").is_err());
        assert!(parse_selector("a=1,a=2").is_err());
        assert!(parse_selector("").is_err());
    }
}
