//! The mesh setting `requestAuthentication` (issue 5: found by the
//! differential against Envoy's RBAC, Istio builder cases `single-policy` and
//! `multiple-policies`): `refuse` (the default) refuses JWT fields; `none`
//! lowers them to `Attribute::RequestAuth` clauses that never have a value.

use std::path::{Path, PathBuf};

use meshfence_compiler::mesh::{self, RequestAuthentication};
use meshfence_compiler::{cases, compile_paths, CompileOptions};
use meshfence_ruleset::ir::Attribute;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/request-authentication")
}

#[test]
fn mesh_setting_parses() {
    let m = mesh::parse_str_file("m.yaml", "requestAuthentication: none\n").unwrap();
    assert_eq!(m.request_authentication, RequestAuthentication::None);
    let m = mesh::parse_str_file("m.yaml", "trustDomain: td\n").unwrap();
    assert_eq!(m.request_authentication, RequestAuthentication::Refuse);
    assert_eq!(m.settings.trust_domain, "td");
    let m = mesh::parse_str_file("m.yaml", "requestAuthentication: refuse\n").unwrap();
    assert_eq!(m.request_authentication, RequestAuthentication::Refuse);
    let e = mesh::parse_str_file("m.yaml", "requestAuthentication: jwks\n").unwrap_err();
    assert_eq!(
        e.to_string().trim_end(),
        "m.yaml:1:24: requestAuthentication: `jwks` is not one of refuse, none"
    );
    // The ruleset's own settings are unchanged by it.
    assert!(mesh::parse_str("m.yaml", "requestAuthentication: none\n").is_ok());
}

#[test]
fn refused_by_default() {
    let e = compile_paths(&[here().join("policies.yaml")], &CompileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`requestPrincipals` needs JWT request authentication"),
        "{e}"
    );
    assert!(e.contains("`request.auth.claims[groups]` needs JWT"), "{e}");
}

fn none() -> CompileOptions {
    CompileOptions {
        request_authentication: RequestAuthentication::None,
        ..Default::default()
    }
}

#[test]
fn none_lowers_to_request_auth_clauses() {
    let c = compile_paths(&[here().join("policies.yaml")], &none()).unwrap();
    let p = &c.ruleset.policies;
    let clause = &p[0].rules[0].from[0][0];
    assert_eq!(
        clause.attribute,
        Attribute::RequestAuth("request.auth.principal".into())
    );
    assert!(!clause.negated);
    assert!(p[1].rules[0].from[0][0].negated);
    assert_eq!(
        p[2].rules[0].when[0].attribute,
        Attribute::RequestAuth("request.auth.claims[groups]".into())
    );
    // Survives the wire format.
    let bytes = meshfence_ruleset::format::to_bytes(&c.ruleset);
    assert_eq!(
        meshfence_ruleset::format::from_bytes(&bytes).unwrap(),
        c.ruleset
    );
}

#[test]
fn unknown_jwt_keys_are_refused_even_under_none() {
    let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules:\n  - when:\n    - key: request.auth.whatever\n      values: [x]\n";
    let e = meshfence_compiler::compile_str("p.yaml", text, &none())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown condition key `request.auth.whatever`"),
        "{e}"
    );
    let ok = text.replace("request.auth.whatever", "request.auth.claims[a][b]");
    assert!(meshfence_compiler::compile_str("p.yaml", &ok, &none()).is_ok());
    let bad = text.replace("request.auth.whatever", "request.auth.claims[]");
    assert!(meshfence_compiler::compile_str("p.yaml", &bad, &none()).is_err());
}

#[test]
fn cases_decide_as_envoy_rbac_without_jwt_metadata() {
    let c = compile_paths(&[here().join("policies.yaml")], &none()).unwrap();
    let file = cases::load(&here().join("cases.yaml")).unwrap();
    let results = cases::run_cases(&c.ruleset, &file);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.line())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(results.len(), 4);
}
