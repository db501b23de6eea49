//! Suites of Istio's authorization integration test, instantiated by hand in
//! `tests/integration-cases/<suite>/` (see its README): each `policy.yaml`
//! compiled with `pathPolicy: istio`, each `cases.yaml` run by the library's
//! cases runner, every row as Istio's integration test expects it.

use std::path::Path;

use meshfence_compiler::{cases, compile_paths, CompileOptions};
use meshfence_ruleset::ir::{MeshSettings, PathPolicy};

#[test]
fn integration_suites_decide_as_istio() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration-cases");
    let mut suites: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    suites.sort();
    assert!(suites.len() >= 7, "{} suites", suites.len());
    let opts = CompileOptions {
        mesh: MeshSettings {
            path_policy: PathPolicy::Istio,
            ..MeshSettings::default()
        },
        skip_custom: false,
        ..Default::default()
    };
    let mut failures = Vec::new();
    for suite in &suites {
        let compiled = compile_paths(&[suite.join("policy.yaml")], &opts)
            .unwrap_or_else(|e| panic!("{}: {e}", suite.display()));
        let file = cases::load(&suite.join("cases.yaml")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!file.cases.is_empty());
        for r in cases::run_cases(&compiled.ruleset, &file) {
            if !r.passed() {
                failures.push(format!("{}: {}", suite.display(), r.line()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn strict_path_policy_refuses_what_istio_would_match() {
    // Under the default `strict` policy the ambiguous `/store//cart` is refused
    // before any rule is read, although Istio's template would allow it.
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration-cases/path-templating");
    let compiled = compile_paths(&[root.join("policy.yaml")], &CompileOptions::default()).unwrap();
    let file = cases::parse_str(
        "strict.yaml",
        "workload: {namespace: ns1, labels: {app: b}}\ncases:\n- {name: double slash, from: spiffe://cluster.local/ns/ns1/sa/a, path: /store//cart, expect: allow}\n",
    )
    .unwrap();
    let r = cases::run_cases(&compiled.ruleset, &file);
    assert_eq!(
        r[0].line(),
        "FAIL double slash: expected allow, got deny (path refused: path has an empty segment)"
    );
}
