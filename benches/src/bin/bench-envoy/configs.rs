//! The Envoy configuration: one listener per variant (and tenant count), all in
//! one Envoy, every route a `direct_response` so the filters' cost dominates.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use meshfence_benches as mesh;
use serde_json::{json, Value};

/// What a listener runs in front of the direct response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variant {
    /// No extra HTTP filter: the limit.
    None,
    /// An empty proxy-wasm filter (`benches/wasm-noop`).
    WasmNoop,
    /// Envoy's RBAC filter with the policies istiod generates, after a
    /// `header_mutation` filter that removes and sets the identity header.
    Rbac,
    /// The seed's Lua identity injection, plus the same checks in Lua.
    Lua,
    /// The meshfence filter, configured with JSON (ruleset in base64, workload).
    Meshfence,
    /// `benches/wasm-probe` doing only these host calls (comma-separated
    /// steps): where meshfence's time goes (`BENCH_BREAKDOWN=1`).
    Probe(&'static str),
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::None,
        Variant::WasmNoop,
        Variant::Rbac,
        Variant::Lua,
        Variant::Meshfence,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::WasmNoop => "wasm-noop",
            Variant::Rbac => "rbac",
            Variant::Lua => "lua",
            Variant::Meshfence => "meshfence",
            Variant::Probe(steps) => match *steps {
                "san" => "probe:san",
                "san,headers" => "probe:san+headers",
                "san,headers,add" => "probe:san+headers+add",
                "san,hget,add" => "probe:san+4-header-gets+add",
                _ => "probe:san+headers+add+counter",
            },
        }
    }

    /// Whether the variant enforces the tenants' rules (and so has a listener
    /// per tenant count).
    pub fn enforces(&self) -> bool {
        matches!(self, Variant::Rbac | Variant::Lua | Variant::Meshfence)
    }
}

/// One listener to render.
pub struct ListenerSpec<'a> {
    pub name: String,
    pub port: u16,
    pub variant: Variant,
    pub tenants: usize,
    /// For `Meshfence`: the compiled ruleset.
    pub ruleset: &'a [u8],
}

pub struct Paths<'a> {
    pub cert_dir: &'a Path,
    pub meshfence_wasm: &'a Path,
    pub noop_wasm: &'a Path,
    pub probe_wasm: &'a Path,
}

/// The probes of `BENCH_BREAKDOWN=1`, cumulative: each adds one of the host
/// calls meshfence makes on an allowed request.
pub const PROBES: [&str; 5] = [
    "san",
    "san,headers",
    "san,headers,add",
    "san,headers,add,counter",
    "san,hget,add",
];

pub const IDENTITY_HEADER: &str = "x-tenant-identity";
/// The direct response echoes the identity header the filters left, so a
/// sample request shows that each variant set it from the certificate.
pub const SEEN_IDENTITY: &str = "x-seen-identity";

pub fn bootstrap(listeners: &[ListenerSpec<'_>], paths: &Paths<'_>) -> Value {
    json!({
        "node": {
            "id": "bench-envoy",
            "cluster": "bench-envoy",
            // The keys istio-proxy sets; meshfence reads its workload here.
            "metadata": {
                "NAMESPACE": mesh::WORKLOAD_NAMESPACE,
                "LABELS": mesh::WORKLOAD_LABELS.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            }
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners.iter().map(|l| listener(l, paths)).collect::<Vec<_>>()
        }
    })
}

fn listener(l: &ListenerSpec<'_>, paths: &Paths<'_>) -> Value {
    let cert = |f: &str| paths.cert_dir.join(f).to_string_lossy().into_owned();
    let mut filters = http_filters(l, paths);
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
        "name": l.name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": l.port}},
        "filter_chains": [{
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                        "tls_certificates": [{
                            "certificate_chain": {"filename": cert("server.pem")},
                            "private_key": {"filename": cert("server.key")}
                        }],
                        "validation_context": {"trusted_ca": {"filename": cert("ca.pem")}}
                    }
                }
            },
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": l.name,
                    "codec_type": "HTTP1",
                    // What envoy-configs/listeners.yaml ships (DESIGN §8).
                    "normalize_path": true,
                    "merge_slashes": true,
                    "path_with_escaped_slashes_action": "REJECT_REQUEST",
                    "route_config": {
                        "name": l.name,
                        "virtual_hosts": [{
                            "name": "direct",
                            "domains": ["*"],
                            "routes": [{
                                "match": {"prefix": "/"},
                                "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                                "response_headers_to_add": [{
                                    "header": {"key": SEEN_IDENTITY, "value": format!("%REQ({IDENTITY_HEADER})%")}
                                }]
                            }]
                        }]
                    },
                    "http_filters": filters
                }
            }]
        }]
    })
}

fn http_filters(l: &ListenerSpec<'_>, paths: &Paths<'_>) -> Vec<Value> {
    match l.variant {
        Variant::None => vec![],
        Variant::WasmNoop => vec![wasm_filter(&l.name, "noop", paths.noop_wasm, None)],
        Variant::Probe(steps) => vec![wasm_filter(
            &l.name,
            "probe",
            paths.probe_wasm,
            Some(Plugin::Text(steps)),
        )],
        Variant::Meshfence => vec![wasm_filter(
            &l.name,
            "meshfence",
            paths.meshfence_wasm,
            Some(Plugin::Ruleset(l.ruleset)),
        )],
        Variant::Rbac => vec![header_mutation(), rbac(l.tenants)],
        Variant::Lua => vec![json!({
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": lua_source(l.tenants)}
            }
        })],
    }
}

/// `BENCH_MESHFENCE_CONFIG=bytes`: the raw ruleset in a BytesValue, the
/// workload from node metadata, instead of JSON.
fn raw_bytes_config() -> bool {
    std::env::var("BENCH_MESHFENCE_CONFIG").is_ok_and(|v| v == "bytes")
}

enum Plugin<'a> {
    Ruleset(&'a [u8]),
    Text(&'a str),
}

fn wasm_filter(plugin: &str, vm_id: &str, wasm: &Path, configuration: Option<Plugin<'_>>) -> Value {
    let mut config = json!({
        "name": plugin,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm.to_string_lossy()}}
        },
        "fail_open": false
    });
    if let Some(Plugin::Text(text)) = configuration {
        config["configuration"] =
            json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": text});
    }
    if let Some(Plugin::Ruleset(bytes)) = configuration.as_ref().filter(|_| raw_bytes_config()) {
        config["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.BytesValue",
            "value": base64::engine::general_purpose::STANDARD.encode(bytes)
        });
        return json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config}
        });
    }
    if let Some(Plugin::Ruleset(bytes)) = configuration {
        // The shape an Istio WasmPlugin's pluginConfig arrives in: JSON with
        // the ruleset in base64 and the workload. (Raw bytes in a BytesValue
        // with the workload from node metadata fail here: on a static
        // listener, configured at boot, the filter finds no node metadata.)
        let labels: serde_json::Map<_, _> = mesh::WORKLOAD_LABELS
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let plugin = json!({
            "ruleset": base64::engine::general_purpose::STANDARD.encode(bytes),
            "workload": {"namespace": mesh::WORKLOAD_NAMESPACE, "labels": labels}
        });
        config["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": plugin.to_string()
        });
    }
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config}
    })
}

/// The native identity injection: drop every incoming copy, set the verified
/// peer URI SAN (what Istio users do with `header_mutation`/Lua today).
fn header_mutation() -> Value {
    json!({
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [
                {"remove": IDENTITY_HEADER},
                {"append": {
                    "header": {"key": IDENTITY_HEADER, "value": "%DOWNSTREAM_PEER_URI_SAN%"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                }}
            ]}
        }
    })
}

/// The RBAC filter istiod generates for the log collector's ingestion policy
/// (shape from `istio/testdata/builder/http/*-out.yaml`): one policy per rule,
/// permissions `and(or(:method), or(url_path prefix))`, principals
/// `and(or(namespace regex), or(header x-tenant-id))` (istiod puts `when`
/// request-header conditions among the principals). The mesh-wide
/// `spec: {}` adds no policy to an ALLOW filter.
fn rbac(tenants: usize) -> Value {
    let mut policies = serde_json::Map::new();
    for i in 0..tenants {
        let t = mesh::tenant_name(i);
        policies.insert(
            mesh::istio_rbac_policy_name(i),
            json!({
                "permissions": [{"and_rules": {"rules": [
                    {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "POST"}}}]}},
                    {"or_rules": {"rules": [{"url_path": {"path": {"prefix": format!("/ingest/{t}/")}}}]}}
                ]}}],
                "principals": [{"and_ids": {"ids": [
                    {"or_ids": {"ids": [{"authenticated": {"principal_name": {"safe_regex": {"regex": format!(".*/ns/{t}/.*")}}}}]}},
                    {"or_ids": {"ids": [{"header": {"name": "x-tenant-id", "string_match": {"exact": mesh::tenant_id(i)}}}]}}
                ]}}]
            }),
        );
    }
    json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": policies}
        }
    })
}

/// The seed's Lua identity injection (`uriSanPeerCertificate()` into
/// `x-tenant-identity`), made safe (every incoming copy stripped first, only a
/// SPIFFE ID set), and the same checks as the RBAC policies through a table
/// keyed by namespace.
pub fn lua_source(tenants: usize) -> String {
    let mut s = String::with_capacity(tenants * 64 + 2048);
    s.push_str("local tenants = {\n");
    for i in 0..tenants {
        let t = mesh::tenant_name(i);
        let _ = writeln!(
            s,
            "  [\"{t}\"] = {{\"{}\", \"/ingest/{t}/\"}},",
            mesh::tenant_id(i)
        );
    }
    s.push_str(
        r#"}

local function deny(handle)
  handle:respond({[":status"] = "403"}, "RBAC: access denied")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("x-tenant-identity")
  local ssl = handle:streamInfo():downstreamSslConnection()
  local sans = ssl and ssl:uriSanPeerCertificate()
  local san = sans and sans[1]
  if san == nil then
    return deny(handle)
  end
  local ns = string.match(san, "^spiffe://[^/]+/ns/([^/]+)/sa/[^/]+$")
  if ns == nil then
    return deny(handle)
  end
  headers:add("x-tenant-identity", san)
  local t = tenants[ns]
  if t == nil or headers:get(":method") ~= "POST" or headers:get("x-tenant-id") ~= t[1] then
    return deny(handle)
  end
  local path = headers:get(":path") or ""
  local q = string.find(path, "[?#]")
  if q then
    path = string.sub(path, 1, q - 1)
  end
  if string.sub(path, 1, #t[2]) ~= t[2] then
    return deny(handle)
  end
end
"#,
    );
    s
}
