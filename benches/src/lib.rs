//! Workloads for meshfence's benchmarks: a mesh of N tenants shaped like the
//! seeds' examples, as Istio `AuthorizationPolicy` YAML, and the requests that
//! cross it.
//!
//! Every tenant `tenant-NNNNN` has the seeds' api-gateway policy in its own
//! namespace, and one rule in the shared log collector's ingestion policy
//! (`platform-logging`, `app: log-collector`): POST `/ingest/<tenant>/*` from
//! the tenant's namespace with `x-tenant-id: <tenant id>`. A mesh-wide
//! `spec: {}` closes everything else. The benchmarked workload is the log
//! collector: its policies (512 rules each, Istio's limit) have one rule per tenant, the shape where Envoy's RBAC
//! filter checks rules one by one.

use std::fmt::Write;

/// The name of tenant `i`.
pub fn tenant_name(i: usize) -> String {
    format!("tenant-{i:05}")
}

/// The id a tenant writes in `x-tenant-id`.
pub fn tenant_id(i: usize) -> String {
    format!("t{i:05}")
}

/// The SPIFFE ID of the log-shipping workload of tenant `i`.
pub fn tenant_caller(i: usize) -> String {
    format!(
        "spiffe://cluster.local/ns/{}/sa/log-shipper",
        tenant_name(i)
    )
}

/// The path tenant `i` ingests to.
pub fn tenant_ingest_path(i: usize) -> String {
    format!("/ingest/{}/app-logs", tenant_name(i))
}

/// The benchmarked workload.
pub const WORKLOAD_NAMESPACE: &str = "platform-logging";
pub const WORKLOAD_LABELS: &[(&str, &str)] = &[("app", "log-collector")];

/// The whole mesh's policies for `tenants` tenants, as multi-document YAML.
pub fn mesh_policies_yaml(tenants: usize) -> String {
    let mut y = String::with_capacity(tenants * 1200);
    y.push_str(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-all\n  namespace: istio-system\nspec: {}\n",
    );
    for i in 0..tenants {
        if i % MAX_RULES_PER_POLICY == 0 {
            let _ = write!(
                y,
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {}\n  namespace: platform-logging\nspec:\n  selector:\n    matchLabels:\n      app: log-collector\n  action: ALLOW\n  rules:\n",
                ingestion_policy_name(i)
            );
        }
        let t = tenant_name(i);
        let id = tenant_id(i);
        let _ = write!(
            y,
            "    - from:\n        - source:\n            namespaces: [\"{t}\"]\n      to:\n        - operation:\n            methods: [\"POST\"]\n            paths: [\"/ingest/{t}/*\"]\n      when:\n        - key: request.headers[x-tenant-id]\n          values: [\"{id}\"]\n"
        );
    }
    for i in 0..tenants {
        let t = tenant_name(i);
        let _ = write!(
            y,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: api-gateway-policy\n  namespace: {t}\nspec:\n  selector:\n    matchLabels:\n      app: api-gateway\n  action: ALLOW\n  rules:\n    - from:\n        - source:\n            namespaces: [\"{t}\"]\n            principals: [\"cluster.local/ns/{t}/sa/frontend-service\"]\n      to:\n        - operation:\n            methods: [\"GET\", \"POST\"]\n            paths: [\"/api/v1/orders/*\", \"/api/v1/products/*\"]\n    - from:\n        - source:\n            namespaces: [\"{t}\"]\n            principals: [\"cluster.local/ns/{t}/sa/admin-service\"]\n      to:\n        - operation:\n            methods: [\"GET\", \"POST\", \"DELETE\"]\n            paths: [\"/api/v1/*\", \"/admin/*\"]\n"
        );
    }
    y
}

/// Istio's CRD allows at most 512 rules in one AuthorizationPolicy (and the
/// compiler enforces it), so the log collector's ingestion rules are split
/// into policies of 512 tenants: `logging-ingestion-policy` holds tenants
/// 0..512, `logging-ingestion-policy-1` the next 512, and so on.
pub const MAX_RULES_PER_POLICY: usize = 512;

/// The ingestion policy that holds tenant `i`'s rule.
pub fn ingestion_policy_name(i: usize) -> String {
    match i / MAX_RULES_PER_POLICY {
        0 => "logging-ingestion-policy".to_string(),
        k => format!("logging-ingestion-policy-{k}"),
    }
}

/// The name istiod gives the Envoy RBAC policy for tenant `i`'s rule of the
/// log collector's ingestion policies.
pub fn istio_rbac_policy_name(i: usize) -> String {
    format!(
        "ns[{WORKLOAD_NAMESPACE}]-policy[{}]-rule[{}]",
        ingestion_policy_name(i),
        i % MAX_RULES_PER_POLICY
    )
}

/// The tenants in the order Envoy's RBAC filter checks their policies: it
/// keeps policies in a map sorted by name, so `rule[10]` comes before
/// `rule[9]`, `policy[logging-ingestion-policy-1]` before
/// `policy[logging-ingestion-policy]`, and tenant 9 is checked last (for any
/// `tenants` ≥ 10).
pub fn rbac_check_order(tenants: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tenants).collect();
    order.sort_by_cached_key(|&i| istio_rbac_policy_name(i));
    order
}

/// The tenant whose request Envoy's RBAC filter matches last.
pub fn rbac_last_tenant(tenants: usize) -> usize {
    rbac_check_order(tenants).last().copied().unwrap_or(0)
}

/// The tenant Envoy's RBAC filter reaches half way through its policies.
pub fn rbac_middle_tenant(tenants: usize) -> usize {
    let order = rbac_check_order(tenants);
    order.get(order.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_order_is_by_name() {
        assert_eq!(rbac_last_tenant(10), 9);
        assert_eq!(rbac_last_tenant(1_000), 9);
        assert_eq!(rbac_last_tenant(10_000), 9);
        assert_eq!(rbac_check_order(12)[..4], [0, 10, 11, 1]);
        assert_eq!(rbac_check_order(1_000)[0], 512);
        assert_eq!(
            istio_rbac_policy_name(513),
            "ns[platform-logging]-policy[logging-ingestion-policy-1]-rule[1]"
        );
    }
}
