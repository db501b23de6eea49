//! What the filter's Envoy tests share: the built filter, and rulesets made
//! from the IR (the compiler is not needed to test the data plane).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use meshfence_ruleset::format::to_bytes;
use meshfence_ruleset::{
    Action, Attribute, Clause, MeshSettings, Policy, Rule, Ruleset, StrMatch, ValueMatch,
};
use wasm_test_harness::envoy::{filter_wasm, EnvoyConfig, PluginConfigFormat, Workload};

pub const TD: &str = "cluster.local";
pub const ALICE: &str = "spiffe://cluster.local/ns/tenant-a/sa/app";
pub const ALICE_2: &str = "spiffe://cluster.local/ns/tenant-a/sa/worker";
pub const BOB: &str = "spiffe://cluster.local/ns/tenant-b/sa/app";
pub const SHARED: &str = "spiffe://cluster.local/ns/shared-services/sa/gateway";

/// The built filter. Built here (release, wasm32) when it is missing.
pub fn wasm() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        if let Some(p) = filter_wasm() {
            return p;
        }
        wasm_test_harness::filter_build::build_filter().unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

/// The workload the filter runs for in these tests.
pub fn workload() -> Workload {
    Workload {
        namespace: "backend".into(),
        labels: vec![("app".into(), "api".into())],
    }
}

fn exact(attribute: Attribute, values: &[&str]) -> Clause {
    Clause::new(
        attribute,
        values
            .iter()
            .map(|v| ValueMatch::Str(StrMatch::exact(*v)))
            .collect(),
    )
}

fn prefix(attribute: Attribute, values: &[&str]) -> Clause {
    Clause::new(
        attribute,
        values
            .iter()
            .map(|v| ValueMatch::Str(StrMatch::prefix(*v)))
            .collect(),
    )
}

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        namespace: "backend".into(),
        action,
        dry_run: false,
        selector: vec![("app".into(), "api".into())],
        rules,
    }
}

/// The rules the filter tests enforce on `backend/app=api`:
/// - ALLOW the callers `allowed` (by URI SAN), any path;
/// - DENY `/api/admin` (prefix) to everyone;
/// - AUDIT `/audited` (prefix);
/// - DENY `/shadow` (prefix) in dry-run: counted, never enforced.
///
/// The shared-services namespace is a trusted forwarder.
pub fn ruleset(allowed: &[&str]) -> Ruleset {
    let mesh = MeshSettings {
        trusted_forwarders: vec!["shared-services".into()],
        ..MeshSettings::default()
    };
    Ruleset {
        mesh,
        policies: vec![
            policy(
                "allow-callers",
                Action::Allow,
                vec![Rule {
                    from: vec![vec![exact(Attribute::PeerUri, allowed)]],
                    to: vec![],
                    when: vec![],
                }],
            ),
            policy(
                "deny-admin",
                Action::Deny,
                vec![Rule {
                    from: vec![],
                    to: vec![vec![prefix(Attribute::Path, &["/api/admin"])]],
                    when: vec![],
                }],
            ),
            Policy {
                dry_run: true,
                ..policy(
                    "shadow-deny",
                    Action::Deny,
                    vec![Rule {
                        from: vec![],
                        to: vec![vec![prefix(Attribute::Path, &["/shadow"])]],
                        when: vec![],
                    }],
                )
            },
            policy(
                "audit",
                Action::Audit,
                vec![Rule {
                    from: vec![],
                    to: vec![vec![prefix(Attribute::Path, &["/audited"])]],
                    when: vec![],
                }],
            ),
        ],
    }
}

pub fn ruleset_bytes(allowed: &[&str]) -> Vec<u8> {
    to_bytes(&ruleset(allowed))
}

/// Envoy with the filter, enforcing `ruleset_bytes(allowed)` for `workload()`.
/// The plugin configuration is JSON naming the workload (Istio's
/// `WasmPlugin.pluginConfig` shape); `config_bytes` is the raw-bytes form.
pub fn config(allowed: &[&str]) -> EnvoyConfig {
    let mut c = config_bytes(allowed);
    c.plugin_config = PluginConfigFormat::Json;
    c
}

/// Envoy with the raw ruleset as a BytesValue; the filter reads its workload
/// from node metadata.
pub fn config_bytes(allowed: &[&str]) -> EnvoyConfig {
    let mut c = EnvoyConfig::with_filter(wasm(), ruleset_bytes(allowed));
    c.workload = workload();
    c
}
