//! `meshfence wasmplugin`: the manifest validates against Istio's own CRD
//! schema (shared/istio/crds/wasmplugins.extensions.istio.io.yaml), carries
//! what a fail-closed AUTHZ plugin needs, and its pluginConfig is read by the
//! filter's own configuration reader.
//!
//! The schema checker below covers what that CRD uses: `type`, `enum`,
//! `required`, `properties`, `additionalProperties`, `items`, lengths and
//! counts, `minimum`/`maximum`, `anyOf`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-list-type: map` keys, and the
//! CRD's `pattern`s and `x-kubernetes-validations` rules, each listed by its
//! exact text and evaluated here. A keyword, pattern or rule it does not know,
//! met on the way, is an error: nothing is skipped silently.

use std::path::Path;
use std::process::Output;

use base64::Engine as _;
use meshfence_compiler::source::{self, Node, Value as Y};
use serde_json::{json, Value};

mod support;
use support::run_in_repo;

const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/crds/wasmplugins.extensions.istio.io.yaml"
);

fn run(args: &[&str]) -> Output {
    run_in_repo(args)
}

fn to_json(n: &Node) -> Value {
    match &n.value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Int(i) => json!(i),
        Y::Float(f) => json!(f),
        Y::Str(s) => Value::String(s.clone()),
        Y::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Y::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match &k.value {
                        Y::Str(s) => s.clone(),
                        other => panic!("non-string key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

fn yaml(text: &str) -> Value {
    let docs = source::parse_str("manifest", text).expect("YAML");
    assert_eq!(docs.len(), 1, "one document");
    to_json(&docs[0].root)
}

/// The CRD's group, kind, and the openAPIV3Schema of v1alpha1.
fn crd() -> (String, String, Value) {
    let text = std::fs::read_to_string(CRD).expect("read the WasmPlugin CRD");
    let crd = yaml(&text);
    let spec = &crd["spec"];
    let version = spec["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .expect("v1alpha1 in the CRD");
    assert_eq!(version["served"], true);
    (
        spec["group"].as_str().unwrap().to_string(),
        spec["names"]["kind"].as_str().unwrap().to_string(),
        version["schema"]["openAPIV3Schema"].clone(),
    )
}

fn sha256_pattern(s: &str) -> bool {
    s.is_empty()
        || (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`
fn kind_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// `^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
fn group_pattern(s: &str) -> bool {
    s.is_empty()
        || s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn pattern(p: &str, s: &str) -> Option<bool> {
    match p {
        "(^$|^[a-f0-9]{64}$)" => Some(sha256_pattern(s)),
        "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$" => Some(kind_pattern(s)),
        r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" => {
            Some(group_pattern(s))
        }
        _ => None,
    }
}

/// The URL rule: the scheme, if any, is one of "", http, https, oci, file.
fn url_scheme_ok(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => ["http", "https", "oci", "file"].contains(&scheme),
        // No scheme: CEL tries "http://" + self, whose scheme is http.
        None => !s.contains(':') || s.split_once(':').is_some_and(|(h, _)| !h.contains('/')),
    }
}

/// The CRD's CEL rules, by their exact text.
fn rule(r: &str, v: &Value) -> Option<bool> {
    let has = |k: &str| v.get(k).is_some();
    Some(match r {
        r#"!self.contains("*")"# => !v.as_str()?.contains('*'),
        r#"self.all(key, !key.contains("*"))"# => v.as_object()?.keys().all(|k| !k.contains('*')),
        "self.all(key, key.size() != 0)" => v.as_object()?.keys().all(|k| !k.is_empty()),
        "self.size() == 0" => v.as_str()?.is_empty(),
        r#"(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)"# => {
            v.get("valueFrom").and_then(Value::as_str).unwrap_or("") != "HOST" || !has("value")
        }
        "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1" => {
            [has("selector"), has("targetRef"), has("targetRefs")]
                .iter()
                .filter(|b| **b)
                .count()
                <= 1
        }
        r if r.starts_with("isURL(self) ? (url(self).getScheme() in [\"\", \"http\", \"https\", \"oci\", \"file\"])") => {
            url_scheme_ok(v.as_str()?)
        }
        _ => return None,
    })
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Checks `v` against `schema`; every violation goes into `errs`.
fn check(schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let s = schema.as_object().expect("a schema is an object");
    for key in s.keys() {
        let known = [
            "type",
            "description",
            "enum",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "minLength",
            "maxLength",
            "maxProperties",
            "maxItems",
            "minimum",
            "maximum",
            "format",
            "pattern",
            "anyOf",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-int-or-string",
            "x-kubernetes-validations",
            "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys",
        ];
        if !known.contains(&key.as_str()) {
            errs.push(format!("{at}: the checker does not know the keyword {key}"));
        }
    }
    let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        if !type_ok(t, v) && !(int_or_string && (v.is_string() || v.is_i64())) {
            errs.push(format!("{at}: expected {t}, found {v}"));
            return;
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let ok = any.iter().any(|alt| {
            let mut e = Vec::new();
            check(alt, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(format!("{at}: matches none of anyOf"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!(
                "{at}: {v} is not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(str) = v.as_str() {
        let len = str.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if len < min {
                errs.push(format!("{at}: shorter than {min}"));
            }
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                errs.push(format!("{at}: longer than {max}"));
            }
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            match pattern(p, str) {
                Some(true) => {}
                Some(false) => errs.push(format!("{at}: `{str}` does not match {p}")),
                None => errs.push(format!("{at}: the checker does not know the pattern {p}")),
            }
        }
    }
    if let Some(n) = v.as_i64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_i64) {
            if n < min {
                errs.push(format!("{at}: below {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_i64) {
            if n > max {
                errs.push(format!("{at}: above {max}"));
            }
        }
    }
    if let Some(rules) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
        for r in rules {
            let text = r["rule"].as_str().unwrap_or_default();
            match rule(text, v) {
                Some(true) => {}
                Some(false) => {
                    errs.push(format!("{at}: {}", r["message"].as_str().unwrap_or(text)))
                }
                None => errs.push(format!("{at}: the checker does not know the rule {text}")),
            }
        }
    }
    if let Some(obj) = v.as_object() {
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
            if obj.len() as u64 > max {
                errs.push(format!("{at}: more than {max} properties"));
            }
        }
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                errs.push(format!("{at}: `{r}` is required"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        for (k, val) in obj {
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if let Some(p) = props.and_then(|p| p.get(k)) {
                check(p, val, &here, errs);
            } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                check(ap, val, &here, errs);
            } else if !preserve && props.is_some() {
                errs.push(format!("{here}: unknown field"));
            }
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if items.len() as u64 > max {
                errs.push(format!("{at}: more than {max} items"));
            }
        }
        if let Some(item) = s.get("items") {
            for (i, it) in items.iter().enumerate() {
                check(item, it, &format!("{at}[{i}]"), errs);
            }
        }
        if s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            let keys: Vec<&str> = s["x-kubernetes-list-map-keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let ids: Vec<Vec<&Value>> = items
                .iter()
                .map(|it| keys.iter().map(|k| &it[*k]).collect())
                .collect();
            for (i, id) in ids.iter().enumerate() {
                if ids[..i].contains(id) {
                    errs.push(format!("{at}[{i}]: duplicate list-map key"));
                }
            }
        }
    }
}

/// Validates a manifest as the API server would: group/version and kind,
/// then the schema.
fn validate(manifest: &Value) -> Vec<String> {
    let (group, kind, schema) = crd();
    let mut errs = Vec::new();
    if manifest["apiVersion"] != format!("{group}/v1alpha1") {
        errs.push(format!(
            "apiVersion {} is not {group}/v1alpha1",
            manifest["apiVersion"]
        ));
    }
    if manifest["kind"] != kind.as_str() {
        errs.push(format!("kind {} is not {kind}", manifest["kind"]));
    }
    for k in ["name", "namespace"] {
        if manifest["metadata"][k]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            errs.push(format!("metadata.{k} is missing"));
        }
    }
    // apiVersion, kind and metadata are the API server's own (every object
    // has them; a CRD schema does not list them).
    let mut body = manifest.clone();
    if let Some(o) = body.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            o.remove(k);
        }
    }
    check(&schema, &body, "", &mut errs);
    errs
}

fn wasm_file() -> (std::path::PathBuf, Vec<u8>) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmplugin");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("module.wasm");
    let bytes = b"\0asm\x01\0\0\0 a stand-in module".to_vec();
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

#[test]
fn the_manifest_validates_against_istios_crd() {
    let (wasm, bytes) = wasm_file();
    let o = run(&[
        "wasmplugin",
        "examples/policies",
        "--mesh",
        "examples/mesh.yaml",
        "--url",
        "oci://ghcr.io/acme/meshfence-filter:0.1.0",
        "--wasm",
        wasm.to_str().unwrap(),
        "--name",
        "meshfence-tenant-beta",
        "--namespace",
        "tenant-beta",
        "--selector",
        "app=api-service,version=v1",
        "--workload",
        "tenant-beta,app=api-service",
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = yaml(&text);
    assert_eq!(validate(&m), Vec::<String>::new(), "{text}");

    let spec = &m["spec"];
    assert_eq!(spec["phase"], "AUTHZ");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["url"], "oci://ghcr.io/acme/meshfence-filter:0.1.0");
    let d = ring_sha256(&bytes);
    assert_eq!(spec["sha256"], d.as_str());
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"app": "api-service", "version": "v1"}})
    );
    assert_eq!(
        m["metadata"],
        json!({"name": "meshfence-tenant-beta", "namespace": "tenant-beta"})
    );

    // The ruleset in pluginConfig is the one `meshfence compile` writes.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmplugin");
    let out = dir.join("ruleset.bin");
    let c = run(&[
        "compile",
        "examples/policies",
        "--mesh",
        "examples/mesh.yaml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(c.status.code(), Some(0));
    let compiled = std::fs::read(&out).unwrap();
    let config = &spec["pluginConfig"];
    let b64 = config["ruleset"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        compiled
    );
    assert_eq!(
        config["workload"],
        json!({"namespace": "tenant-beta", "labels": {"app": "api-service"}})
    );

    // Istio hands pluginConfig (a Struct) to the plugin as its JSON text; the
    // filter's own reader takes it, ruleset and workload.
    let as_istio_sends = serde_json::to_vec(config).unwrap();
    let read = meshfence_filter::config::parse(&as_istio_sends).expect("the filter reads it");
    assert_eq!(read.ruleset, compiled);
    let w = read.workload.expect("the workload");
    assert_eq!(w.namespace, "tenant-beta");
    assert_eq!(
        w.labels,
        vec![("app".to_string(), "api-service".to_string())]
    );

    // From a compiled ruleset, with a given sha256 and no selector or
    // workload: the filter takes its workload from node metadata.
    let sha = "a".repeat(64);
    let o = run(&[
        "wasmplugin",
        out.to_str().unwrap(),
        "--url",
        "https://example.com/meshfence_filter.wasm",
        "--sha256",
        &sha,
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = yaml(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(validate(&m), Vec::<String>::new());
    assert_eq!(
        m["metadata"],
        json!({"name": "meshfence", "namespace": "istio-system"})
    );
    assert!(m["spec"].get("selector").is_none());
    assert!(m["spec"]["pluginConfig"].get("workload").is_none());
    let read =
        meshfence_filter::config::parse(&serde_json::to_vec(&m["spec"]["pluginConfig"]).unwrap())
            .unwrap();
    assert_eq!(read.ruleset, compiled);
    assert_eq!(read.workload, None);
}

fn ring_sha256(bytes: &[u8]) -> String {
    meshfence_compiler::wasmplugin::sha256_hex(bytes)
}

/// The checker is not vacuous: it refuses what the API server refuses.
#[test]
fn the_checker_refuses_what_the_crd_refuses() {
    let good = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "m", "namespace": "istio-system"},
        "spec": {
            "url": "oci://x/y:1",
            "sha256": "a".repeat(64),
            "phase": "AUTHZ",
            "failStrategy": "FAIL_CLOSE",
            "pluginConfig": {"ruleset": "AAAA", "anything": {"goes": [1]}},
            "selector": {"matchLabels": {"app": "x"}},
        }
    });
    assert_eq!(validate(&good), Vec::<String>::new());
    let bad = |f: &dyn Fn(&mut Value), want: &str| {
        let mut m = good.clone();
        f(&mut m);
        let errs = validate(&m);
        assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:?}");
    };
    bad(
        &|m| m["spec"]["failStrategy"] = json!("FAIL_SOMETIMES"),
        "spec.failStrategy",
    );
    bad(&|m| m["spec"]["phase"] = json!("authz"), "spec.phase");
    bad(
        &|m| m["spec"]["sha256"] = json!("A".repeat(64)),
        "does not match",
    );
    bad(
        &|m| m["spec"]["url"] = json!("ftp://x/y"),
        "url must have schema",
    );
    bad(
        &|m| m["spec"]["selector"]["matchLabels"]["app"] = json!("a*"),
        "wildcard",
    );
    bad(
        &|m| m["spec"]["selector"]["matchLabels"] = json!({"": "x"}),
        "key must not be empty",
    );
    bad(
        &|m| m["spec"]["selctor"] = json!({}),
        "spec.selctor: unknown field",
    );
    bad(
        &|m| m["spec"]["targetRefs"] = json!([{"kind": "Gateway", "name": "g"}]),
        "only one of targetRefs or selector",
    );
    bad(
        &|m| {
            m["spec"].as_object_mut().unwrap().remove("url");
        },
        "`url` is required",
    );
    bad(
        &|m| m["spec"]["priority"] = json!("high"),
        "spec.priority: expected integer",
    );
    bad(&|m| m["kind"] = json!("WasmPlugins"), "kind");
}

/// Bad flags are bad input (exit 2) with a message naming the flag.
#[test]
fn bad_flags_exit_2() {
    let (wasm, _) = wasm_file();
    let w = wasm.to_str().unwrap();
    for (args, want) in [
        (vec!["--url", "ftp://x/y", "--wasm", w], "--url `ftp://x/y`"),
        (
            vec!["--url", "oci://x/y", "--sha256", "ABC"],
            "--sha256 `ABC`",
        ),
        (
            vec!["--url", "oci://x/y", "--wasm", w, "--selector", "app"],
            "--selector: `app` is not key=value",
        ),
        (
            vec!["--url", "oci://x/y", "--wasm", w, "--selector", "app=*"],
            "no wildcard",
        ),
        (
            vec!["--url", "oci://x/y", "--wasm", w, "--name", "Bad_Name"],
            "--name `Bad_Name`",
        ),
        (
            vec!["--url", "oci://x/y", "--wasm", "/nonexistent.wasm"],
            "/nonexistent.wasm: cannot read",
        ),
    ] {
        let mut all = vec!["wasmplugin", "examples/policies"];
        all.extend(args);
        let o = run(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{all:?}: {err}");
        assert!(o.stdout.is_empty());
    }
}
