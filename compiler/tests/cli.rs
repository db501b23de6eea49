//! The `meshfence` binary, run as users run it.

use std::path::{Path, PathBuf};

use meshfence_ruleset::format;

mod support;
use support::{run, stderr, stdout, write};

const BUILDER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/testdata/builder/http"
);

fn scratch(name: &str) -> PathBuf {
    support::scratch("cli", name)
}

const TENANTS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: foo
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin*"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-tenant-a
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - from:
    - source:
        namespaces: ["tenant-a"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: audit-posts
  namespace: istio-system
spec:
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: ["POST"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: shadow-deny-b
  namespace: foo
  annotations:
    istio.io/dry-run: "true"
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/tenant-a/sa/b"]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin
"#;

#[test]
fn compile_writes_a_ruleset_that_decodes() {
    let dir = scratch("compile_ok");
    let policy = write(&dir, "p.yaml", TENANTS);
    let out = dir.join("out.bin");
    let o = run(&["compile", &policy, "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("note: skipping Deployment httpbin: not an AuthorizationPolicy"));
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(&format::LABEL));
    let rs = format::from_bytes(&bytes).unwrap();
    let names: Vec<_> = rs
        .policies
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    assert_eq!(
        names,
        [
            "foo/deny-admin",
            "foo/allow-tenant-a",
            "istio-system/audit-posts",
            "foo/shadow-deny-b"
        ]
    );
    assert!(rs.policies[3].dry_run);
    // Nothing else was left in the folder (no temporary file).
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert_eq!(files, ["out.bin", "p.yaml"]);
}

#[test]
fn compile_refuses_bad_input_with_every_error_and_writes_nothing() {
    let dir = scratch("compile_bad");
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad/many-errors.yaml");
    let good = write(&dir, "good.yaml", TENANTS);
    let out = dir.join("out.bin");
    let o = run(&[
        "compile",
        &good,
        bad.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let shown = bad.display().to_string();
    for want in [
        format!(
            "{shown}:11:34: spec.rules[0].from[0].source.namespaces[1]: empty value is not allowed"
        ),
        format!("{shown}:17:9: spec.rules[0].to[0].operation.verbs: unknown field `verbs`"),
        format!("{shown}:30:3: spec: only one of targetRefs or selector can be set"),
    ] {
        assert!(
            err.lines().any(|l| l == want),
            "missing `{want}` in:\n{err}"
        );
    }
    assert!(err.contains("6 errors found; nothing written"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "only good.yaml is left"
    );
}

#[test]
fn compile_keeps_an_existing_output_when_input_is_bad() {
    let dir = scratch("compile_keep");
    let bad = write(&dir, "bad.yaml", "kind: AuthorizationPolicy\napiVersion: security.istio.io/v1\nmetadata: {name: x}\nspec: {action: DENY}\n");
    let out = write(&dir, "out.bin", "previous");
    let o = run(&["compile", &bad, "-o", &out]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).lines().next().unwrap(),
        format!("{bad}:4:16: spec.rules: a DENY policy must have at least one rule")
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");
}

#[test]
fn compile_base64_and_inspect_and_explain_it() {
    let dir = scratch("base64");
    let policy = write(&dir, "p.yaml", TENANTS);
    let out = dir.join("out.b64");
    let o = run(&[
        "compile",
        &policy,
        "-o",
        out.to_str().unwrap(),
        "--encoding",
        "base64",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "{text}"
    );
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap();
    assert_eq!(format::from_bytes(&bytes).unwrap().policies.len(), 4);

    let o = run(&["inspect", out.to_str().unwrap(), "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["totalBytes"].as_u64().unwrap() as usize, bytes.len());
    assert_eq!(
        j["sections"].as_array().unwrap().len(),
        format::Section::ALL.len()
    );
    assert_eq!(j["policies"][0]["name"], "deny-admin");
    assert_eq!(
        j["policies"][0]["rules"][0][0],
        "to:   path in [prefix \"/admin\"]"
    );

    let o = run(&["inspect", out.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("policy foo/allow-tenant-a ALLOW selector: app=httpbin (1 rule)"),
        "{}",
        stdout(&o)
    );

    let o = run(&[
        "explain",
        out.to_str().unwrap(),
        "--workload",
        "foo,app=httpbin",
        "--from",
        "spiffe://cluster.local/ns/tenant-a/sa/b",
        "--path",
        "/admin/x",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["decision"], "deny");
    assert_eq!(j["policy"], "foo/deny-admin");
    assert_eq!(j["rule"], 0);
}

#[test]
fn explain_json_reports_decision_audit_dry_run_and_identity() {
    let dir = scratch("explain");
    let policy = write(&dir, "p.yaml", TENANTS);
    let o = run(&[
        "explain",
        &policy,
        "--workload",
        "foo,app=httpbin,version=v1",
        "--from",
        "spiffe://cluster.local/ns/tenant-a/sa/b",
        "--method",
        "POST",
        "--path",
        "/ingest",
        "-H",
        "x-tenant-identity: spiffe://cluster.local/ns/tenant-b/sa/x",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["decision"], "allow");
    assert_eq!(j["policy"], "foo/allow-tenant-a");
    assert_eq!(j["rule"], 0);
    assert_eq!(j["audit"]["policy"], "istio-system/audit-posts");
    assert_eq!(j["dryRun"]["wouldDeny"], true);
    assert_eq!(j["dryRun"]["deny"]["policy"], "foo/shadow-deny-b");
    assert_eq!(j["identity"]["header"], "x-tenant-identity");
    assert_eq!(j["identity"]["stripIncoming"], true);
    assert_eq!(
        j["identity"]["set"],
        "spiffe://cluster.local/ns/tenant-a/sa/b"
    );

    // Plaintext from another namespace: denied by the missing ALLOW match.
    let o = run(&[
        "explain",
        &policy,
        "--workload",
        "foo,app=httpbin",
        "--path",
        "/x",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(
        text.starts_with("decision: deny (403)\nby: no ALLOW rule matched\n"),
        "{text}"
    );

    // A bad workload is bad input.
    let o = run(&["explain", &policy, "--workload", ",app=x"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn test_exit_codes_and_lines() {
    let dir = scratch("test");
    let policy = write(&dir, "p.yaml", TENANTS);
    let good = write(
        &dir,
        "good.yaml",
        r#"
workload: {namespace: foo, labels: {app: httpbin}}
cases:
  - name: tenant-a reads
    from: spiffe://cluster.local/ns/tenant-a/sa/curl
    expect: allow
    expectUpstreamHeaders:
      x-tenant-identity: spiffe://cluster.local/ns/tenant-a/sa/curl
  - name: forged header is replaced
    from: spiffe://cluster.local/ns/tenant-a/sa/curl
    headers:
      - [X-Tenant-Identity, spiffe://cluster.local/ns/tenant-b/sa/curl]
    expect: allow
    expectUpstreamHeaders:
      x-tenant-identity: spiffe://cluster.local/ns/tenant-a/sa/curl
  - name: admin is denied
    from: spiffe://cluster.local/ns/tenant-a/sa/curl
    path: /admin
    expect: deny
  - name: posts are audited
    from: spiffe://cluster.local/ns/tenant-a/sa/curl
    method: POST
    expect: allow
    expectAudit: true
"#,
    );
    let o = run(&["test", &policy, "--cases", &good]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().last(), Some("4 passed, 0 failed"));
    assert!(out
        .lines()
        .next()
        .unwrap()
        .starts_with("ok   tenant-a reads"));

    let failing = write(
        &dir,
        "failing.yaml",
        r#"
workload: {namespace: foo, labels: {app: httpbin}}
cases:
  - name: plaintext is allowed
    expect: allow
  - name: tenant-b is allowed
    from: spiffe://cluster.local/ns/tenant-a/sa/x
    path: /admin
    expect: allow
  - name: header absent
    from: spiffe://cluster.local/ns/tenant-a/sa/x
    expect: allow
    expectUpstreamHeaders:
      x-tenant-identity: null
"#,
    );
    let o = run(&["test", &policy, "--cases", &failing]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "FAIL plaintext is allowed: expected allow, got deny (no ALLOW rule matched)\n\
         FAIL tenant-b is allowed: expected allow, got deny (policy foo/deny-admin rule 0)\n\
         FAIL header absent: upstream header x-tenant-identity: expected absent, got `spiffe://cluster.local/ns/tenant-a/sa/x`\n\
         0 passed, 3 failed\n"
    );

    let bad = write(
        &dir,
        "bad.yaml",
        "workload: {namespace: foo}\ncases:\n  - name: x\n    expect: maybe\n",
    );
    let o = run(&["test", &policy, "--cases", &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!("{bad}:4:13: cases[0].expect: `maybe` is not allow or deny\n")
    );

    // --envoy with a filter that is not there: bad input, before any Envoy
    // starts (tests/envoy_cases.rs runs the real thing).
    let o = run(&[
        "test",
        &policy,
        "--cases",
        &good,
        "--envoy",
        "--wasm",
        "/nonexistent/filter.wasm",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--wasm /nonexistent/filter.wasm"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn test_table_format_without_envoy() {
    let dir = scratch("table");
    let policy = write(&dir, "p.yaml", TENANTS);
    let cases = write(
        &dir,
        "cases.yaml",
        r#"
workload: {namespace: foo, labels: {app: httpbin}}
cases:
  - name: forged header replaced
    from: spiffe://cluster.local/ns/tenant-a/sa/curl
    headers: [[X-Tenant-Identity, spiffe://cluster.local/ns/tenant-b/sa/curl]]
    expect: allow
  - name: admin denied
    from: spiffe://cluster.local/ns/tenant-a/sa/curl
    path: /admin
    expect: deny
  - name: untrusted CA refused
    from: spiffe://cluster.local/ns/tenant-a/sa/curl
    certificate: untrusted-ca
    expect: deny
    expectUpstreamHeaders: {x-tenant-identity: null}
"#,
    );
    let o = run(&["test", &policy, "--cases", &cases, "--format", "table"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "case",
            "caller",
            "request",
            "expected",
            "got",
            "upstream",
            "x-tenant-identity"
        ]
    );
    assert_eq!(
        rows[2],
        [
            "ok",
            "forged",
            "header",
            "replaced",
            "ns/tenant-a/sa/curl",
            "GET",
            "/",
            "+X-Tenant-Identity:",
            "ns/tenant-b/sa/curl",
            "allow",
            "allow",
            "spiffe://cluster.local/ns/tenant-a/sa/curl"
        ]
    );
    assert_eq!(
        rows[3],
        [
            "ok",
            "admin",
            "denied",
            "ns/tenant-a/sa/curl",
            "GET",
            "/admin",
            "deny",
            "deny",
            "-"
        ]
    );
    assert_eq!(
        rows[4],
        [
            "ok",
            "untrusted",
            "CA",
            "refused",
            "ns/tenant-a/sa/curl",
            "(untrusted",
            "CA)",
            "GET",
            "/",
            "deny",
            "deny:",
            "TLS",
            "refused",
            "-"
        ]
    );
    assert_eq!(out.lines().last(), Some("3 passed, 0 failed"));
}

#[test]
fn check_reads_folders_and_skips_what_it_must() {
    let dir = scratch("check");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write(&dir, "a.yaml", TENANTS);
    write(&dir.join("sub"), "b.yml", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: gw, namespace: foo}\nspec:\n  targetRefs:\n  - {kind: Gateway, name: gw}\n  rules: [{}]\n");
    write(&dir, "ignored.txt", "not yaml: [");
    let custom = write(&dir.join("sub"), "c.yaml", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: foo}\nspec:\n  action: CUSTOM\n  provider: {name: x}\n  rules: [{}]\n");
    let o = run(&["check", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{custom}:5:11: spec.action: policy foo/ext: CUSTOM (ext_authz) policies are not supported")), "{}", stderr(&o));
    let o = run(&["check", dir.to_str().unwrap(), "--skip-custom"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("note: skipping CUSTOM policy foo/ext"),
        "{err}"
    );
    assert!(err.contains("note: skipping policy foo/gw: policies with targetRef/targetRefs do not apply to sidecars"), "{err}");
    assert_eq!(stdout(&o), "ok: 4 policies, 4 rules\n");
}

#[test]
fn mesh_file_errors_are_bad_input() {
    let dir = scratch("mesh");
    let mesh = write(
        &dir,
        "mesh.yaml",
        "trustDomain: cluster.local\nidentityHeadr: {name: x}\n",
    );
    let o = run(&[
        "check",
        &format!("{BUILDER}/deny-and-allow-in.yaml"),
        "--mesh",
        &mesh,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).lines().next().unwrap(),
        format!("{mesh}:2:1: identityHeadr: unknown field `identityHeadr`")
    );
}

#[test]
fn test_accepts_a_compiled_ruleset() {
    let dir = scratch("test_ruleset");
    let policy = format!("{BUILDER}/deny-and-allow-in.yaml");
    let out = dir.join("r.b64");
    let o = run(&[
        "compile",
        &policy,
        "-o",
        out.to_str().unwrap(),
        "--encoding",
        "base64",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cases = write(&dir, "cases.yaml", "workload: {namespace: foo}\ncases:\n- {name: allowed, from: spiffe://allow, expect: allow}\n- {name: denied, from: spiffe://deny, expect: deny}\n");
    let o = run(&["test", out.to_str().unwrap(), "--cases", &cases]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o),
        "ok   allowed\nok   denied\n2 passed, 0 failed\n"
    );
}
