//! Lowering tests against Istio's golden RBAC output: for every HTTP,
//! non-CUSTOM case of `testdata/builder/CASES.yaml` there is a cases file
//! `tests/istio-cases/<case>.yaml` whose expectations were reasoned from the
//! case's `*-out.yaml` (each file says how). The case's input policy (or, when
//! it uses JWT fields meshfence refuses, the JWT-free copy in
//! `tests/istio-cases/inputs/`) is compiled with the case's trust-domain
//! bundle and `pathPolicy: istio`, and the cases are run through the library's
//! cases runner.

use std::path::{Path, PathBuf};

use meshfence_compiler::source::{self, Value};
use meshfence_compiler::{cases, compile_paths, CompileOptions};
use meshfence_ruleset::ir::{MeshSettings, PathPolicy};

const BUILDER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/testdata/builder"
);

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/istio-cases")
}

struct BuilderCase {
    name: String,
    input: String,
    trust_domain: Option<(String, Vec<String>)>,
}

fn http_cases() -> Vec<BuilderCase> {
    let docs = source::parse_file(Path::new(&format!("{BUILDER}/CASES.yaml"))).unwrap();
    let http = docs[0].root.get("http").expect("CASES.yaml has http cases");
    let Value::Seq(items) = &http.value else {
        panic!("http is a list")
    };
    items
        .iter()
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(|n| n.as_str()).map(str::to_string);
            let trust_domain = c.get("tdBundle").map(|b| {
                let td = b
                    .get("trustDomain")
                    .and_then(|n| n.as_str())
                    .unwrap()
                    .to_string();
                let aliases = match b.get("aliases").map(|n| &n.value) {
                    Some(Value::Seq(a)) => {
                        a.iter().map(|n| n.as_str().unwrap().to_string()).collect()
                    }
                    _ => Vec::new(),
                };
                (td, aliases)
            });
            BuilderCase {
                name: s("name").unwrap(),
                input: s("input").unwrap(),
                trust_domain,
            }
        })
        .collect()
}

#[test]
fn every_http_case_decides_as_istios_rbac() {
    let all = http_cases();
    let selected: Vec<&BuilderCase> = all
        .iter()
        .filter(|c| !c.name.starts_with("custom-"))
        .collect();
    assert_eq!(selected.len(), 17, "HTTP non-CUSTOM cases in CASES.yaml");
    let mut failures = Vec::new();
    let mut total = 0;
    for case in selected {
        let cases_path = here().join(format!("{}.yaml", case.name));
        assert!(
            cases_path.exists(),
            "no cases file for {}: {}",
            case.name,
            cases_path.display()
        );
        let file_name = Path::new(&case.input).file_name().unwrap();
        let local = here().join("inputs").join(file_name);
        let input = if local.exists() {
            local
        } else {
            PathBuf::from(format!("{BUILDER}/{}", case.input))
        };
        let mut mesh = MeshSettings {
            path_policy: PathPolicy::Istio,
            ..MeshSettings::default()
        };
        if let Some((td, aliases)) = &case.trust_domain {
            mesh.trust_domain = td.clone();
            mesh.trust_domain_aliases = aliases.clone();
        }
        let opts = CompileOptions {
            mesh,
            skip_custom: false,
            ..Default::default()
        };
        let compiled = compile_paths(std::slice::from_ref(&input), &opts).unwrap_or_else(|e| {
            panic!("{}: {} does not compile:\n{e}", case.name, input.display())
        });
        let file = cases::load(&cases_path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            file.cases.len() >= 2,
            "{}: a handful of requests",
            case.name
        );
        let results = cases::run_cases(&compiled.ruleset, &file);
        total += results.len();
        for r in results.iter().filter(|r| !r.passed()) {
            failures.push(format!("{}: {}", case.name, r.line()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_runner_reports_a_wrong_expectation() {
    // The same runner must fail a case whose expectation is wrong.
    let policy = format!("{BUILDER}/http/deny-and-allow-in.yaml");
    let compiled = compile_paths(&[PathBuf::from(policy)], &CompileOptions::default()).unwrap();
    let file = cases::parse_str(
        "wrong.yaml",
        "workload: {namespace: foo}\ncases:\n- name: wrong\n  from: spiffe://deny\n  expect: allow\n",
    )
    .unwrap();
    let results = cases::run_cases(&compiled.ruleset, &file);
    assert_eq!(
        results[0].line(),
        "FAIL wrong: expected allow, got deny (policy foo/httpbin-deny rule 0)"
    );
    assert_eq!(cases::summary(&results), "0 passed, 1 failed");
}
