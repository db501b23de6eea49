//! The IR that Istio's builder inputs lower to, in `inspect`'s readable form,
//! compared exactly with `tests/lowered/<case>.txt`. Each expected file was
//! checked by hand against the case's `*-out.yaml` (every RBAC matcher there
//! has its value here, in the same order). `MESHFENCE_BLESS=1` rewrites them.

use std::path::{Path, PathBuf};

use meshfence_compiler::{compile_paths, inspect, CompileOptions};
use meshfence_ruleset::ir::MeshSettings;

const BUILDER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/testdata/builder/http"
);

fn check(case: &str, input: PathBuf, td: Option<(&str, &[&str])>) {
    let mut mesh = MeshSettings::default();
    if let Some((td, aliases)) = td {
        mesh.trust_domain = td.to_string();
        mesh.trust_domain_aliases = aliases.iter().map(|a| a.to_string()).collect();
    }
    let opts = CompileOptions {
        mesh,
        skip_custom: false,
        ..Default::default()
    };
    let compiled = compile_paths(&[input], &opts).unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = inspect::policies_text(&compiled.ruleset);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/lowered/{case}.txt"));
    if std::env::var_os("MESHFENCE_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "{case}: lowering changed");
}

#[test]
fn allow_full_rule_without_jwt() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/istio-cases/inputs/allow-full-rule-in.yaml");
    check("allow-full-rule", input, None);
}

#[test]
fn trust_domains_field() {
    check(
        "trust-domains",
        format!("{BUILDER}/trust-domains-in.yaml").into(),
        None,
    );
}

#[test]
fn trust_domain_aliases() {
    check(
        "td-aliases-source-principal",
        format!("{BUILDER}/td-aliases-source-principal-in.yaml").into(),
        Some(("new-td", &["old-td", "some-trustdomain"])),
    );
    check(
        "simple-policy-principal-with-wildcard",
        format!("{BUILDER}/simple-policy-principal-with-wildcard-in.yaml").into(),
        Some(("td1", &["foobar"])),
    );
    check(
        "simple-policy-multiple-td-aliases",
        format!("{BUILDER}/simple-policy-multiple-td-aliases-in.yaml").into(),
        Some(("td1", &["cluster.local", "some-td"])),
    );
}

#[test]
fn allow_path() {
    check(
        "allow-path",
        format!("{BUILDER}/allow-path-in.yaml").into(),
        None,
    );
}
