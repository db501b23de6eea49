//! The host calls meshfence makes per request, one step at a time, so that
//! `bench-envoy` (with `BENCH_BREAKDOWN=1`) can price each: the plugin
//! configuration is a comma-separated list of steps, done in this order on
//! every request's headers:
//!
//! - `san`: `get_property(connection.uri_san_peer_certificate)` (meshfence's
//!   identity read);
//! - `headers`: `get_http_request_headers_bytes` (the whole header map in the
//!   pairs encoding, one host call, as meshfence reads it);
//! - `hget`: instead of the map, `get_http_request_header` for each of the
//!   four headers the log collector's rules and the identity check read
//!   (`:method`, `:path`, `x-tenant-id`, `x-tenant-identity`): four host
//!   calls, each returning a small buffer;
//! - `add`: `add_http_request_header("x-tenant-identity", <san>)` (meshfence's
//!   rewrite when no identity header came in);
//! - `counter`: `increment_metric` on a counter defined at configure time
//!   (meshfence bumps `allowed` on every request).
//!
//! Built from the same SDK as `meshfence-noop`, so `probe(steps) − noop` is the
//! price of the steps. It uses only the SDK's `hostcalls`, never its
//! panicking convenience methods' error paths on real input (a bench tool).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

#[derive(Default, Clone, Copy)]
struct Steps {
    san: bool,
    headers: bool,
    hget: bool,
    add: bool,
    counter: Option<u32>,
}

#[derive(Default)]
struct ProbeRoot {
    steps: Steps,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        for step in text.split(',').map(str::trim) {
            match step {
                "san" => self.steps.san = true,
                "headers" => self.steps.headers = true,
                "hget" => self.steps.hget = true,
                "add" => self.steps.add = true,
                "counter" => {
                    self.steps.counter =
                        hostcalls::define_metric(MetricType::Counter, "probe.requests").ok()
                }
                _ => {}
            }
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp { steps: self.steps }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeHttp {
    steps: Steps,
}

impl Context for ProbeHttp {}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let s = self.steps;
        let san = if s.san {
            hostcalls::get_property(vec!["connection", "uri_san_peer_certificate"])
                .ok()
                .flatten()
        } else {
            None
        };
        if s.headers {
            let pairs = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok();
            core::hint::black_box(pairs);
        }
        if s.hget {
            for name in [":method", ":path", "x-tenant-id", "x-tenant-identity"] {
                let v = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok();
                core::hint::black_box(v);
            }
        }
        if s.add {
            let value = san
                .as_deref()
                .unwrap_or(b"spiffe://cluster.local/ns/x/sa/y");
            let _ = hostcalls::add_map_value_bytes(
                MapType::HttpRequestHeaders,
                "x-tenant-identity",
                value,
            );
        }
        if let Some(id) = s.counter {
            let _ = hostcalls::increment_metric(id, 1);
        }
        Action::Continue
    }
}
