//! Istio's own validation corpus (pkg/config/validation/testdata/crds):
//! every document of `authz-valid.yaml` is accepted and every document of
//! `authz-invalid.yaml` is refused with Istio's message.

use meshfence_compiler::{compile_str, CompileOptions};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/testdata/validation-crds"
);

/// Splits a YAML stream into its documents' text.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().unwrap();
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    docs
}

/// Drops what meshfence refuses on purpose (JWT fields, `request.auth.*` and
/// `experimental.*` condition keys), leaving the rest of the document intact.
fn without_deliberate_refusals(doc: &str) -> String {
    let mut out = String::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in doc.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skip_deeper_than {
            if indent > depth {
                continue;
            }
            skip_deeper_than = None;
        }
        let t = line.trim_start();
        if t.starts_with("requestPrincipals:") || t.starts_with("notRequestPrincipals:") {
            continue;
        }
        if t.starts_with("- key: \"request.auth.") || t.starts_with("- key: \"experimental.") {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn every_valid_document_is_accepted() {
    let text = std::fs::read_to_string(format!("{CORPUS}/authz-valid.yaml")).unwrap();
    let docs = documents(&text);
    assert_eq!(docs.len(), 2);
    for (i, doc) in docs.iter().enumerate() {
        let name = format!("authz-valid.yaml#{i}");
        match compile_str(&name, doc, &CompileOptions::default()) {
            Ok(c) => assert_eq!(c.ruleset.policies.len(), 1, "{name}"),
            Err(e) => {
                // Only the deliberate refusals may stand in the way ...
                for err in &e.0 {
                    let m = &err.message;
                    assert!(
                        m.contains("needs JWT request authentication")
                            || m.contains("condition key `experimental."),
                        "{name}: refused for a reason Istio does not have: {err}"
                    );
                }
                // ... and without them the document compiles.
                let stripped = without_deliberate_refusals(doc);
                assert_ne!(&stripped, doc);
                let c = compile_str(&name, &stripped, &CompileOptions::default())
                    .unwrap_or_else(|e| panic!("{name} without JWT fields: {e}"));
                assert_eq!(c.ruleset.policies.len(), 1);
                assert_eq!(c.ruleset.policies[0].rules.len(), 1);
            }
        }
    }
}

/// Invalid documents whose refusal depends on something outside an HTTP
/// sidecar (a gateway, a waypoint, the Kubernetes API server), by name, with
/// the reason. Today every document of the corpus is a sidecar matter.
const NOT_FOR_SIDECARS: &[(&str, &str)] = &[];

#[test]
fn every_invalid_document_is_refused_with_istios_message() {
    let text = std::fs::read_to_string(format!("{CORPUS}/authz-invalid.yaml")).unwrap();
    let docs = documents(&text);
    assert_eq!(docs.len(), 2);
    for (i, doc) in docs.iter().enumerate() {
        let expected = doc
            .lines()
            .find_map(|l| l.strip_prefix("_err:"))
            .expect("every invalid document has an _err key")
            .trim()
            .to_string();
        let policy: String = doc
            .lines()
            .filter(|l| !l.starts_with("_err:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let name = format!("authz-invalid.yaml#{i}");
        if NOT_FOR_SIDECARS
            .iter()
            .any(|(n, _)| doc.contains(&format!("name: {n}\n")))
        {
            continue;
        }
        let err = compile_str(&name, &policy, &CompileOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{name} accepted; Istio refuses it: {expected}"));
        assert!(
            err.0.iter().any(|e| e.message.contains(&expected)),
            "{name}: expected `{expected}`, got:\n{err}"
        );
    }
}

#[test]
fn stripping_keeps_everything_else() {
    let doc = "rules:\n- when:\n  - key: \"request.auth.claims[x]\"\n    values: [\"a\"]\n  - key: \"source.ip\"\n    values: [\"1.2.3.4\"]\n";
    assert_eq!(
        without_deliberate_refusals(doc),
        "rules:\n- when:\n  - key: \"source.ip\"\n    values: [\"1.2.3.4\"]\n"
    );
}
