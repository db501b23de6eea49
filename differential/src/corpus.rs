//! Istio's builder corpus: `CASES.yaml` and the files it names.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// One HTTP case of the corpus.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The `*-in.yaml` policies.
    pub input: PathBuf,
    /// The expected Envoy HTTP filters, in order.
    pub want: Vec<PathBuf>,
    pub trust_domain: String,
    pub aliases: Vec<String>,
    /// Set for CUSTOM cases (an ext_authz provider).
    pub mesh_config: Option<String>,
}

/// What the manifest says besides the HTTP cases.
#[derive(Debug, Default)]
pub struct Corpus {
    pub http: Vec<Case>,
    /// TCP cases, by name (network filters: not exercised by HTTP requests).
    pub tcp: Vec<String>,
}

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Reads a `CASES.yaml`; file names in it are relative to its folder.
pub fn load(path: &Path) -> Result<Corpus, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root: Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut corpus = Corpus::default();
    for item in root
        .get("http")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let name =
            s(item, "name").ok_or_else(|| format!("{}: a case without name", path.display()))?;
        let input = s(item, "input").ok_or_else(|| format!("case {name}: no input"))?;
        let want = item
            .get("want")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|w| dir.join(w))
            .collect();
        let bundle = item.get("tdBundle");
        let trust_domain = bundle
            .and_then(|b| s(b, "trustDomain"))
            .unwrap_or_else(|| "cluster.local".into());
        let aliases = bundle
            .and_then(|b| b.get("aliases"))
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        corpus.http.push(Case {
            name,
            input: dir.join(input),
            want,
            trust_domain,
            aliases,
            mesh_config: s(item, "meshConfig"),
        });
    }
    for item in root
        .get("tcp")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        if let Some(n) = s(item, "name") {
            corpus.tcp.push(n);
        }
    }
    Ok(corpus)
}

/// Every YAML document of a file, as plain values.
pub fn documents(path: &Path) -> Result<Vec<Value>, String> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).map_err(|e| format!("{}: {e}", path.display())))
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

/// An expected filter file as JSON, the form the bootstrap is written in
/// (Envoy's loader takes protojson camelCase names as they are).
pub fn filter_json(path: &Path) -> Result<serde_json::Value, String> {
    let docs = documents(path)?;
    let [doc] = docs.as_slice() else {
        return Err(format!("{}: expected one document", path.display()));
    };
    serde_json::to_value(doc).map_err(|e| format!("{}: {e}", path.display()))
}
