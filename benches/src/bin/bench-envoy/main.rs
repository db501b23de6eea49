//! `make bench-envoy`: the in-Envoy load benchmark (DESIGN §9, issue 6).
//!
//! One Envoy (`--concurrency 1`, pinned to core 0) hosts every variant as its
//! own mTLS listener whose route is a `direct_response`:
//!
//! | variant     | HTTP filters before the router |
//! |-------------|--------------------------------|
//! | `none`      | none (the limit) |
//! | `wasm-noop` | an empty proxy-wasm filter (`benches/wasm-noop`) |
//! | `rbac`      | `header_mutation` (remove + set `x-tenant-identity` from the peer URI SAN), then Envoy's RBAC with istiod's policies for the same AuthorizationPolicy |
//! | `lua`       | the seed's Lua identity injection, made safe, plus the same checks with a table keyed by namespace |
//! | `meshfence` | the meshfence filter, JSON plugin configuration (ruleset in base64, workload) as an Istio WasmPlugin delivers it |
//!
//! at 10, 1,000 and 10,000 tenants (`meshfence_benches::mesh_policies_yaml`).
//! This process is the load generator ([`loadgen`], pinned to core 1): closed
//! loop, `BENCH_CONNECTIONS` keep-alive connections (8), each presenting the
//! client certificate of one tenant's log shipper. The request comes from the
//! tenant Envoy's RBAC checks last (`last`) and from one it reaches half way
//! (`middle`). Every configuration runs in `rounds` slices, interleaved, in
//! one sitting; the figures are medians over slices. `BENCH_SECONDS` (10) is
//! the measured time per configuration.
//!
//! Before measuring, each listener gets a sample request with a forged
//! identity header (must be 200 with the verified identity echoed back) and,
//! for the enforcing variants, a cross-tenant one (must be 403). During the
//! measurement every response must be 200, or the run fails.
//!
//! Then memory: Envoy's VmRSS with only one listener (none, wasm-noop,
//! meshfence at 10 and 10,000 tenants), at `--concurrency` 1 and 2.
//!
//! Output: a table of ratios on stdout, `target/bench-envoy.json` (the issue's
//! schema, last-tenant requests, plus extra keys), and `target/bench-envoy.md`
//! (the tables for benches/RESULTS.md).

mod configs;
mod envoy;
mod loadgen;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshfence_benches as mesh;
use meshfence_compiler::{compile_str, CompileOptions};
use meshfence_ruleset::format::to_bytes;
use serde_json::json;
use wasm_test_harness::envoy::{envoy_command, repo_root, Identity, Pki};

use configs::{ListenerSpec, Paths, Variant, SEEN_IDENTITY};

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-envoy: {e}");
        std::process::exit(1);
    }
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

/// Which request a configuration sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pick {
    Last,
    Middle,
}

impl Pick {
    fn name(self) -> &'static str {
        match self {
            Pick::Last => "last",
            Pick::Middle => "middle",
        }
    }
}

/// One measured configuration.
struct Config {
    variant: Variant,
    tenants: usize,
    pick: Pick,
    tenant: usize,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    request: Arc<Vec<u8>>,
    slices: Vec<loadgen::Slice>,
}

fn request_bytes(tenant: usize, forged_identity: bool, id: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "POST {} HTTP/1.1\r\nhost: log-collector.platform-logging.svc.cluster.local\r\nx-tenant-id: {}\r\ncontent-type: application/json\r\n",
        mesh::tenant_ingest_path(tenant),
        id.map(str::to_string).unwrap_or_else(|| mesh::tenant_id(tenant)),
    );
    if forged_identity {
        r.push_str("x-tenant-identity: spiffe://cluster.local/ns/platform-logging/sa/forged\r\n");
    }
    r.push_str("content-length: 0\r\n\r\n");
    r.into_bytes()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
    client_util: f64,
    envoy_util: f64,
    spread: f64,
}

fn summarize(slices: &mut [loadgen::Slice]) -> Summary {
    let rps: Vec<f64> = slices.iter().map(|s| s.rps()).collect();
    let (lo, hi) = rps
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
    let med = median(rps.clone());
    Summary {
        rps: med,
        p50: median(slices.iter_mut().map(|s| s.quantile_us(0.50)).collect()),
        p99: median(slices.iter_mut().map(|s| s.quantile_us(0.99)).collect()),
        cpu: median(slices.iter().map(|s| s.cpu_us_per_req()).collect()),
        client_util: median(
            slices
                .iter()
                .map(|s| s.client_cpu.as_secs_f64() / s.window.as_secs_f64())
                .collect(),
        ),
        envoy_util: median(
            slices
                .iter()
                .map(|s| s.envoy_cpu.as_secs_f64() / s.window.as_secs_f64())
                .collect(),
        ),
        spread: if med > 0.0 { (hi - lo) / med } else { f64::NAN },
    }
}

fn run() -> Result<(), String> {
    let seconds: f64 = env_num("BENCH_SECONDS", 10.0)?;
    let connections: usize = env_num("BENCH_CONNECTIONS", 8)?;
    let tenant_counts: Vec<usize> = std::env::var("BENCH_TENANTS")
        .unwrap_or_else(|_| "10,1000,10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("BENCH_TENANTS: {s:?}"))
        })
        .collect::<Result<_, _>>()?;
    let skip_memory = std::env::var("BENCH_SKIP_MEMORY").is_ok_and(|v| v == "1");
    let root = repo_root();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let target = if target.is_relative() {
        root.join(target)
    } else {
        target
    };
    let wasm_dir = target.join("wasm32-unknown-unknown/release");
    let meshfence_wasm = std::env::var("MESHFENCE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| wasm_dir.join("meshfence_filter.wasm"));
    let noop_wasm = std::env::var("NOOP_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| wasm_dir.join("meshfence_noop.wasm"));
    let probe_wasm = wasm_dir.join("meshfence_probe.wasm");
    let breakdown = std::env::var("BENCH_BREAKDOWN").is_ok_and(|v| v == "1");
    let mut needed = vec![&meshfence_wasm, &noop_wasm];
    if breakdown {
        needed.push(&probe_wasm);
    }
    for w in needed {
        if !w.exists() {
            return Err(format!(
                "{} is missing: run `make bench-envoy` (it builds it)",
                w.display()
            ));
        }
    }
    let command = envoy_command().map_err(|e| e.to_string())?;
    let envoy_version = envoy::version(&command);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (envoy_cpu, client_cpu) = if cpus >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    if let Some(c) = client_cpu {
        if !envoy::pin_self(c) {
            eprintln!("bench-envoy: could not pin the load generator to core {c}");
        }
    }
    let raised = envoy::raise_priority();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    eprintln!("bench-envoy: Envoy {envoy_version}; {cpus} cores ({cpu_model}); {seconds} s per configuration, {connections} connections; nice -10: {raised}");

    // Rulesets.
    let mut rulesets = BTreeMap::new();
    for &n in &tenant_counts {
        let t0 = Instant::now();
        let yaml = mesh::mesh_policies_yaml(n);
        let compiled = compile_str("bench.yaml", &yaml, &CompileOptions::default())
            .map_err(|e| format!("compile {n} tenants: {e}"))?;
        let bytes = to_bytes(&compiled.ruleset);
        eprintln!(
            "bench-envoy: {n} tenants: ruleset {} bytes ({:.1} per tenant), compiled in {:.2?}",
            bytes.len(),
            bytes.len() as f64 / n as f64,
            t0.elapsed()
        );
        rulesets.insert(n, bytes);
    }

    let dir = tempfile::Builder::new()
        .prefix("meshfence-bench-envoy-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let pki = Pki::create(&dir.path().join("certs")).map_err(|e| e.to_string())?;
    let paths = Paths {
        cert_dir: pki.dir(),
        meshfence_wasm: &meshfence_wasm,
        noop_wasm: &noop_wasm,
        probe_wasm: &probe_wasm,
    };
    let mut variants: Vec<Variant> = Variant::ALL.to_vec();
    if breakdown {
        variants.extend(configs::PROBES.iter().map(|p| Variant::Probe(p)));
    }
    let smallest = tenant_counts.iter().copied().min().unwrap_or(10);
    let tls_for = |tenant: usize| -> Result<Arc<rustls::ClientConfig>, String> {
        let cert = pki
            .client(Identity::Uri(mesh::tenant_caller(tenant)))
            .map_err(|e| e.to_string())?;
        loadgen::tls_config(pki.ca_der(), &cert)
    };

    // Listeners: none and wasm-noop once; the enforcing variants per tenant count.
    let mut ports: BTreeMap<(String, usize), u16> = BTreeMap::new();
    let mut listeners = Vec::new();
    for v in &variants {
        let counts: Vec<usize> = if v.enforces() {
            tenant_counts.clone()
        } else {
            vec![0]
        };
        for n in counts {
            let port = envoy::free_port().map_err(|e| e.to_string())?;
            ports.insert((v.name().to_string(), n), port);
            listeners.push(ListenerSpec {
                name: if n == 0 {
                    v.name().replace([':', '+'], "-")
                } else {
                    format!("{}-{n}", v.name())
                },
                port,
                variant: v.clone(),
                tenants: n,
                ruleset: rulesets.get(&n).map(Vec::as_slice).unwrap_or(&[]),
            });
        }
    }
    let bootstrap_path = dir.path().join("bootstrap.json");
    let bootstrap = configs::bootstrap(&listeners, &paths);
    std::fs::write(
        &bootstrap_path,
        serde_json::to_vec(&bootstrap).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let all_ports: Vec<u16> = ports.values().copied().collect();
    eprintln!(
        "bench-envoy: starting Envoy with {} listeners (bootstrap {} KiB)",
        listeners.len(),
        std::fs::metadata(&bootstrap_path)
            .map(|m| m.len() / 1024)
            .unwrap_or(0)
    );
    let proxy = envoy::Envoy::start(
        &command,
        dir.path(),
        &bootstrap_path,
        1,
        envoy_cpu,
        &all_ports,
        4000 + std::process::id() % 1000,
    )?;
    eprintln!(
        "bench-envoy: Envoy ready in {:.1?} (pid {})",
        proxy.startup, proxy.pid
    );

    // Configurations.
    let mut configs = Vec::new();
    for &n in &tenant_counts {
        for v in &variants {
            if matches!(v, Variant::Probe(_)) && n != smallest {
                continue;
            }
            let picks: &[Pick] = if v.enforces() {
                &[Pick::Last, Pick::Middle]
            } else {
                &[Pick::Last]
            };
            for &pick in picks {
                let tenant = match pick {
                    Pick::Last => mesh::rbac_last_tenant(n),
                    Pick::Middle => mesh::rbac_middle_tenant(n),
                };
                let key = (v.name().to_string(), if v.enforces() { n } else { 0 });
                configs.push(Config {
                    variant: v.clone(),
                    tenants: n,
                    pick,
                    tenant,
                    port: ports[&key],
                    tls: tls_for(tenant)?,
                    request: Arc::new(request_bytes(tenant, false, None)),
                    slices: Vec::new(),
                });
            }
        }
    }

    // Samples: every listener allows its tenant (and sets the verified
    // identity over a forged one); the enforcing ones deny a cross-tenant id.
    for c in &configs {
        let mut tls = loadgen::connect(c.port, &c.tls)?;
        let mut buf = Vec::new();
        let ok = loadgen::roundtrip(&mut tls, &request_bytes(c.tenant, true, None), &mut buf)?;
        let caller = mesh::tenant_caller(c.tenant);
        let seen = ok.header(SEEN_IDENTITY).unwrap_or("").to_string();
        let label = format!(
            "{} {} tenants, {} tenant {}",
            c.variant.name(),
            c.tenants,
            c.pick.name(),
            c.tenant
        );
        if ok.status != 200 {
            return Err(format!(
                "{label}: sample request got {} {:?}",
                ok.status,
                String::from_utf8_lossy(&ok.body)
            ));
        }
        if c.variant.enforces() && seen != caller {
            return Err(format!(
                "{label}: the upstream saw x-tenant-identity {seen:?}, not {caller:?}"
            ));
        }
        if c.variant.enforces() {
            let other = mesh::tenant_id((c.tenant + 1) % c.tenants);
            let denied = loadgen::roundtrip(
                &mut tls,
                &request_bytes(c.tenant, false, Some(&other)),
                &mut buf,
            )?;
            if denied.status != 403 {
                return Err(format!(
                    "{label}: a request with another tenant's id got {}, not 403",
                    denied.status
                ));
            }
        }
    }
    eprintln!("bench-envoy: samples OK: {} configurations allow their request, set the verified identity, deny a cross-tenant id", configs.len());

    // Interleaved slices.
    // Slices of about a second: on a shared machine a burst of someone
    // else's work spoils a slice or two, and the median over many drops them.
    let rounds = (seconds.round() as usize).clamp(1, 30);
    let slice = Duration::from_secs_f64(seconds / rounds as f64);
    let warmup = Duration::from_millis(150);
    let total = (slice + warmup + Duration::from_millis(30)) * (rounds * configs.len()) as u32;
    eprintln!(
        "bench-envoy: {} configurations x {rounds} slices of {slice:.1?} (about {:.0} s)",
        configs.len(),
        total.as_secs_f64()
    );
    let cpu = || proxy.cpu();
    for round in 0..rounds {
        let n = configs.len();
        for k in 0..n {
            // Rotate the order every round so no configuration always follows the same one.
            let i = (k + round * 7) % n;
            let c = &mut configs[i];
            let s =
                loadgen::run_slice(c.port, &c.tls, &c.request, connections, warmup, slice, &cpu);
            if s.errors > 0 {
                return Err(format!(
                    "{} {} tenants ({}): {} errors, first: {}",
                    c.variant.name(),
                    c.tenants,
                    c.pick.name(),
                    s.errors,
                    s.first_error.unwrap_or_default()
                ));
            }
            c.slices.push(s);
        }
        eprintln!("bench-envoy: round {}/{rounds} done", round + 1);
    }
    let log_errors = proxy.log_tail(5);
    proxy.stop();

    let mut results: BTreeMap<(usize, String, Pick), Summary> = BTreeMap::new();
    for c in &mut configs {
        results.insert(
            (c.tenants, c.variant.name().to_string(), c.pick),
            summarize(&mut c.slices),
        );
    }

    // Memory.
    let mut memory = Vec::new();
    if !skip_memory {
        let mut specs: Vec<(Variant, usize, u32)> =
            vec![(Variant::None, 0, 1), (Variant::WasmNoop, 0, 1)];
        let (small, big) = (
            tenant_counts.iter().copied().min().unwrap_or(10),
            tenant_counts.iter().copied().max().unwrap_or(10),
        );
        for conc in [1u32, 2] {
            specs.push((Variant::Meshfence, small, conc));
            if big != small {
                specs.push((Variant::Meshfence, big, conc));
            }
        }
        for (k, (v, n, conc)) in specs.into_iter().enumerate() {
            let port = envoy::free_port().map_err(|e| e.to_string())?;
            let spec = ListenerSpec {
                name: v.name().to_string(),
                port,
                variant: v.clone(),
                tenants: n,
                ruleset: rulesets.get(&n).map(Vec::as_slice).unwrap_or(&[]),
            };
            let path = dir.path().join(format!("memory-{k}.json"));
            std::fs::write(
                &path,
                serde_json::to_vec(&configs::bootstrap(&[spec], &paths))
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let e = envoy::Envoy::start(
                &command,
                dir.path(),
                &path,
                conc,
                envoy_cpu,
                &[port],
                5000 + (std::process::id() % 1000) * 10 + k as u32,
            )?;
            let tenant = mesh::rbac_last_tenant(n.max(10));
            let tls = tls_for(tenant)?;
            // Touch the worker's VM (and its root contexts) with real requests.
            for _ in 0..(conc * 4) {
                let mut t = loadgen::connect(port, &tls)?;
                let mut buf = Vec::new();
                for _ in 0..25 {
                    let r =
                        loadgen::roundtrip(&mut t, &request_bytes(tenant, false, None), &mut buf)?;
                    if r.status != 200 {
                        return Err(format!("memory run {} {n}: status {}", v.name(), r.status));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            let rss = e.rss_kib();
            eprintln!("bench-envoy: memory {} tenants={n} concurrency={conc}: VmRSS {rss} KiB, ready in {:.1?}", v.name(), e.startup);
            memory.push(json!({"variant": v.name(), "tenants": n, "concurrency": conc, "wasm_vms": if matches!(v, Variant::None) { 0 } else { conc + 2 }, "vm_rss_kib": rss, "startup_s": e.startup.as_secs_f64()}));
            e.stop();
        }
    }

    // Output.
    let out_json = json!({
        "envoy": envoy_version,
        // An integer when whole, as the issue writes it (`"seconds": 10`).
        "seconds": if seconds.fract() == 0.0 && seconds < 1e9 { json!(seconds as u64) } else { json!(seconds) },
        "results": configs.iter().filter(|c| c.pick == Pick::Last).map(|c| {
            let s = results[&(c.tenants, c.variant.name().to_string(), c.pick)];
            json!({"variant": c.variant.name(), "tenants": c.tenants, "rps": round1(s.rps), "p50_us": round1(s.p50), "p99_us": round1(s.p99), "cpu_us_per_req": round2(s.cpu)})
        }).collect::<Vec<_>>(),
        "middle_tenant_results": configs.iter().filter(|c| c.pick == Pick::Middle).map(|c| {
            let s = results[&(c.tenants, c.variant.name().to_string(), c.pick)];
            json!({"variant": c.variant.name(), "tenants": c.tenants, "tenant": c.tenant, "rps": round1(s.rps), "p50_us": round1(s.p50), "p99_us": round1(s.p99), "cpu_us_per_req": round2(s.cpu)})
        }).collect::<Vec<_>>(),
        "machine": {"cpus": cpus, "cpu_model": cpu_model},
        "connections": connections,
        "slices": rounds,
        "ruleset_bytes": rulesets.iter().map(|(n, b)| (n.to_string(), json!(b.len()))).collect::<serde_json::Map<_, _>>(),
        "memory": memory,
    });
    let json_path = std::env::var("BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target.join("bench-envoy.json"));
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&out_json).map_err(|e| e.to_string())? + "\n",
    )
    .map_err(|e| format!("write {}: {e}", json_path.display()))?;

    let md = report(
        &results,
        &tenant_counts,
        &rulesets,
        &memory,
        &envoy_version,
        cpus,
        &cpu_model,
        seconds,
        connections,
        rounds,
    );
    let md_path = json_path.with_extension("md");
    std::fs::write(&md_path, &md).map_err(|e| e.to_string())?;
    println!("{md}");
    if log_errors.contains("[error]") || log_errors.contains("[critical]") {
        eprintln!("bench-envoy: Envoy's log ended with:\n{log_errors}");
    }
    eprintln!(
        "bench-envoy: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
    let _ = Path::new("");
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[allow(clippy::too_many_arguments)]
fn report(
    results: &BTreeMap<(usize, String, Pick), Summary>,
    tenant_counts: &[usize],
    rulesets: &BTreeMap<usize, Vec<u8>>,
    memory: &[serde_json::Value],
    envoy_version: &str,
    cpus: usize,
    cpu_model: &str,
    seconds: f64,
    connections: usize,
    rounds: usize,
) -> String {
    let mut o = String::new();
    let get = |n: usize, v: &str, p: Pick| results.get(&(n, v.to_string(), p)).copied();
    let _ = writeln!(o, "Envoy {envoy_version}; {cpus} cores ({cpu_model}); Envoy --concurrency 1 on core 0, load generator on core 1;");
    let _ = writeln!(o, "{connections} keep-alive mTLS connections, closed loop; {seconds} s per configuration in {rounds} interleaved slices; medians over slices.\n");
    let _ = writeln!(o, "| tenants | variant | request | rps | × none | × wasm-noop | p50 µs | p99 µs | Envoy CPU µs/req | slice spread | Envoy core busy | client core busy |");
    let _ = writeln!(
        o,
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for &n in tenant_counts {
        let none = get(n, "none", Pick::Last);
        let noop = get(n, "wasm-noop", Pick::Last);
        for v in Variant::ALL.iter().chain(
            configs::PROBES
                .iter()
                .map(|p| Variant::Probe(p))
                .collect::<Vec<_>>()
                .iter(),
        ) {
            for p in [Pick::Last, Pick::Middle] {
                let Some(s) = get(n, v.name(), p) else {
                    continue;
                };
                let r =
                    |b: Option<Summary>| b.map_or("-".into(), |b| format!("{:.2}", s.rps / b.rps));
                let _ = writeln!(
                    o,
                    "| {n} | {} | {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.1} | {:.0}% | {:.0}% | {:.0}% |",
                    v.name(),
                    if v.enforces() { p.name() } else { "-" },
                    s.rps,
                    r(none),
                    r(noop),
                    s.p50,
                    s.p99,
                    s.cpu,
                    s.spread * 100.0,
                    s.envoy_util * 100.0,
                    s.client_util * 100.0
                );
            }
        }
    }
    let _ = writeln!(o, "\nmeshfence against the others, last-tenant request (middle in parentheses). `rps` is the throughput ratio; `cpu` the capacity ratio from Envoy CPU per request (other / meshfence: requests one core can serve), which a busy shared machine disturbs less:\n");
    let _ = writeln!(o, "| tenants | vs none rps · cpu | vs wasm-noop rps · cpu | vs rbac rps · cpu | vs lua rps · cpu | p99 / wasm-noop | CPU µs/req over wasm-noop |");
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|");
    for &n in tenant_counts {
        let m = |p| get(n, "meshfence", p);
        let ratio = |other: &str| -> String {
            let base = |p: Pick| {
                if other == "none" || other == "wasm-noop" {
                    Pick::Last
                } else {
                    p
                }
            };
            let one = |p: Pick| -> Option<(f64, f64)> {
                let (a, b) = (m(p)?, get(n, other, base(p))?);
                Some((a.rps / b.rps, b.cpu / a.cpu))
            };
            match (one(Pick::Last), one(Pick::Middle)) {
                (Some(a), Some(b)) => format!("{:.2} ({:.2}) · {:.2} ({:.2})", a.0, b.0, a.1, b.1),
                (Some(a), None) => format!("{:.2} · {:.2}", a.0, a.1),
                _ => "-".into(),
            }
        };
        let p99 = match (m(Pick::Last), get(n, "wasm-noop", Pick::Last)) {
            (Some(a), Some(b)) => format!("{:.2}", a.p99 / b.p99),
            _ => "-".into(),
        };
        let cpu = match (m(Pick::Last), get(n, "wasm-noop", Pick::Last)) {
            (Some(a), Some(b)) => format!("{:+.1}", a.cpu - b.cpu),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "| {n} | {} | {} | {} | {} | {p99} | {cpu} |",
            ratio("none"),
            ratio("wasm-noop"),
            ratio("rbac"),
            ratio("lua")
        );
    }
    let (small, big) = (
        tenant_counts.iter().copied().min().unwrap_or(0),
        tenant_counts.iter().copied().max().unwrap_or(0),
    );
    if get(small, "probe:san", Pick::Last).is_some() {
        let _ = writeln!(o, "\nWhere the time goes ({small} tenants): Envoy CPU per request of wasm filters that make only meshfence's host calls, cumulative (`benches/wasm-probe`), against wasm-noop:\n");
        let _ = writeln!(
            o,
            "| filter | Envoy CPU µs/req | − wasm-noop | − previous step | rps × wasm-noop |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|");
        let noop = get(small, "wasm-noop", Pick::Last);
        let mut prev = noop;
        for name in [
            "wasm-noop",
            "probe:san",
            "probe:san+headers",
            "probe:san+headers+add",
            "probe:san+headers+add+counter",
            "meshfence",
            "probe:san+4-header-gets+add",
        ] {
            let Some(x) = get(small, name, Pick::Last) else {
                continue;
            };
            let d = |b: Option<Summary>| b.map_or("-".into(), |b| format!("{:+.1}", x.cpu - b.cpu));
            let r = noop.map_or("-".into(), |b| format!("{:.2}", x.rps / b.rps));
            let _ = writeln!(
                o,
                "| {name} | {:.1} | {} | {} | {r} |",
                x.cpu,
                d(noop),
                d(prev)
            );
            prev = Some(x);
        }
    }
    let scale = |v: &str| match (get(big, v, Pick::Last), get(small, v, Pick::Last)) {
        (Some(a), Some(b)) => format!("{:.2} rps · {:.2} cpu", a.rps / b.rps, b.cpu / a.cpu),
        _ => "-".into(),
    };
    let _ = writeln!(
        o,
        "\nScaling {big} tenants / {small} tenants (last tenant): meshfence {}; rbac {}; lua {}.",
        scale("meshfence"),
        scale("rbac"),
        scale("lua")
    );

    // Goals (issue 6).
    let g = |n: usize, v: &str| get(n, v, Pick::Last);
    let goal = |name: &str, value: Option<(f64, f64)>, target: f64, higher: bool| -> String {
        let met = |x: f64| {
            if (higher && x >= target) || (!higher && x <= target) {
                "met"
            } else {
                "NOT met"
            }
        };
        match value {
            Some((x, c)) => format!(
                "| {name} | {x:.2} | {} | {c:.2} | {} | {} {target} |",
                met(x),
                met(c),
                if higher { "≥" } else { "≤" }
            ),
            None => format!("| {name} | - | not measured | - | - | {target} |"),
        }
    };
    let rps_ratio =
        |a: Option<Summary>, b: Option<Summary>| Some((a?.rps / b?.rps, b?.cpu / a?.cpu));
    let _ = writeln!(o, "\nGoals (issue 6), last-tenant request; by throughput (the issue's measure) and by Envoy CPU per request:\n");
    let _ = writeln!(o, "| goal | rps ratio | | CPU ratio | | target |");
    let _ = writeln!(o, "|---|---:|---|---:|---|---:|");
    let _ = writeln!(
        o,
        "{}",
        goal(
            "meshfence / wasm-noop at 10",
            rps_ratio(g(10, "meshfence"), g(10, "wasm-noop")),
            0.90,
            true
        )
    );
    let _ = writeln!(
        o,
        "{}",
        goal(
            "meshfence / lua at 10",
            rps_ratio(g(10, "meshfence"), g(10, "lua")),
            1.0,
            true
        )
    );
    let _ = writeln!(
        o,
        "{}",
        goal(
            "meshfence / rbac at 1,000",
            rps_ratio(g(1000, "meshfence"), g(1000, "rbac")),
            3.0,
            true
        )
    );
    let _ = writeln!(
        o,
        "{}",
        goal(
            "meshfence / rbac at 10,000",
            rps_ratio(g(10000, "meshfence"), g(10000, "rbac")),
            10.0,
            true
        )
    );
    let _ = writeln!(
        o,
        "{}",
        goal(
            "meshfence 10,000 / meshfence 10",
            rps_ratio(g(10000, "meshfence"), g(10, "meshfence")),
            0.90,
            true
        )
    );
    let worst_p99 = tenant_counts
        .iter()
        .filter_map(|&n| {
            Some((
                g(n, "meshfence")?.p99 / g(n, "wasm-noop")?.p99,
                g(n, "meshfence")?.p50 / g(n, "wasm-noop")?.p50,
            ))
        })
        .fold(None, |a: Option<(f64, f64)>, x| {
            Some(a.map_or(x, |a| (a.0.max(x.0), a.1.max(x.1))))
        });
    let _ = writeln!(
        o,
        "{}",
        goal(
            "p99 (p50 in the CPU column) meshfence / wasm-noop, worst tenant count",
            worst_p99,
            1.2,
            false
        )
    );

    let _ = writeln!(
        o,
        "\nRuleset size: {}.",
        rulesets
            .iter()
            .map(|(n, b)| format!(
                "{n} tenants {} bytes ({:.0} B/tenant)",
                b.len(),
                b.len() as f64 / *n as f64
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !memory.is_empty() {
        let _ = writeln!(o, "\nMemory (Envoy VmRSS with only that listener, after 100+ requests; wasm VMs = workers + 2):\n");
        let _ = writeln!(
            o,
            "| listener | tenants | --concurrency | wasm VMs | VmRSS MiB | ready in s |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for m in memory {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.1} | {:.1} |",
                m["variant"].as_str().unwrap_or(""),
                m["tenants"],
                m["concurrency"],
                m["wasm_vms"],
                m["vm_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                m["startup_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    o
}
