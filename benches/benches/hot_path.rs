//! The hot path, measured with criterion.
//!
//! - `decide/N`: one request to the shared log collector of a mesh of N tenants
//!   (the caller is the tenant in the middle): SAN parse, identity header
//!   sanitizing, candidate lookup by caller namespace, rule evaluation.
//! - `decide_last/N`: the same for the last tenant (the one Envoy's RBAC reaches last).
//! - `load/10000`: `from_bytes_for_workload` + workload selection, what every
//!   Envoy VM pays at configure time; `load_all/10000` builds every policy.
//! - `compile/10000`: YAML to ruleset bytes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshfence_benches as mesh;
use meshfence_compiler::{compile_str, CompileOptions};
use meshfence_ruleset::format::{from_bytes, from_bytes_for_workload, to_bytes};
use meshfence_ruleset::{HeaderList, Request, Ruleset, Workload};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn compiled(tenants: usize) -> Ruleset {
    let yaml = mesh::mesh_policies_yaml(tenants);
    match compile_str("bench.yaml", &yaml, &CompileOptions::default()) {
        Ok(c) => c.ruleset,
        Err(e) => panic!("bench policies do not compile: {e}"),
    }
}

fn workload() -> Workload<'static> {
    Workload {
        namespace: mesh::WORKLOAD_NAMESPACE,
        labels: mesh::WORKLOAD_LABELS,
    }
}

fn decide(c: &mut Criterion) {
    for (group_name, pick) in [("decide", 2usize), ("decide_last", 1usize)] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(1));
        for n in SIZES {
            let ruleset = compiled(n);
            let policy = ruleset.for_workload(&workload());
            let tenant = if pick == 2 { n / 2 } else { n - 1 };
            let caller = mesh::tenant_caller(tenant);
            let path = mesh::tenant_ingest_path(tenant);
            let id = mesh::tenant_id(tenant);
            let headers = [
                ("x-tenant-id", id.as_str()),
                ("content-type", "application/json"),
            ];
            let headers = HeaderList(&headers);
            let req = Request {
                peer_uri: Some(&caller),
                method: "POST",
                path: &path,
                host: "log-collector.platform-logging.svc.cluster.local",
                destination_port: 8080,
                source_ip: None,
                remote_ip: None,
                destination_ip: None,
                sni: None,
                headers: &headers,
            };
            assert!(
                policy.decide(&req).allowed,
                "the benchmark request must be allowed"
            );
            group.bench_with_input(BenchmarkId::from_parameter(n), &req, |b, req| {
                b.iter(|| black_box(policy.decide(black_box(req))).allowed)
            });
        }
        group.finish();
    }
}

fn load(c: &mut Criterion) {
    let n = 10_000;
    let bytes = to_bytes(&compiled(n));
    eprintln!(
        "ruleset for {n} tenants: {} bytes, {:.1} bytes per tenant",
        bytes.len(),
        bytes.len() as f64 / n as f64
    );
    // What each filter VM pays at configure time: every record validated,
    // only the workload's policies built, then selected and indexed.
    let mut group = c.benchmark_group("load");
    group.sample_size(20);
    group.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
        b.iter(|| {
            let ruleset = from_bytes_for_workload(black_box(bytes), &workload()).ok();
            let stats = ruleset
                .as_ref()
                .map(|r| r.for_workload(&workload()).index_stats());
            black_box(stats)
        })
    });
    group.finish();
    // The whole ruleset built (what `meshfence inspect` and `explain` load).
    let mut group = c.benchmark_group("load_all");
    group.sample_size(20);
    group.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
        b.iter(|| {
            let ruleset = from_bytes(black_box(bytes)).ok();
            let stats = ruleset
                .as_ref()
                .map(|r| r.for_workload(&workload()).index_stats());
            black_box(stats)
        })
    });
    group.finish();
}

fn compile(c: &mut Criterion) {
    let n = 10_000;
    let yaml = mesh::mesh_policies_yaml(n);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_with_input(BenchmarkId::from_parameter(n), &yaml, |b, yaml| {
        b.iter(|| {
            let out = compile_str("bench.yaml", black_box(yaml), &CompileOptions::default());
            black_box(out.map(|c| to_bytes(&c.ruleset).len()).ok())
        })
    });
    group.finish();
}

criterion_group!(benches, decide, load, compile);
criterion_main!(benches);
