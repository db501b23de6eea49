//! `differential`: meshfence against Envoy's own RBAC filter on Istio's golden
//! corpus (issue 5). `make differential [CASES=path/to/CASES.yaml]` runs it.
//!
//! ```text
//! differential [--cases CASES.yaml] [--wasm meshfence_filter.wasm] [--samples N]
//!              [--seed N] [--threads N] [--only CASE]...
//! ```
//!
//! Prints a line per case (`NAME: R requests, A agree`), what it could not
//! exercise and why, every disagreement with the request and both answers,
//! and last `N passed, M failed` counting requests. Exit status: 0 when every
//! request agreed, 1 on any disagreement, 2 when the run could not be set up.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use meshfence_differential::{run, Options};
use wasm_test_harness::envoy::{filter_wasm, repo_root};

fn usage(msg: &str) -> ExitCode {
    eprintln!("differential: {msg}");
    eprintln!(
        "usage: differential [--cases CASES.yaml] [--wasm FILTER.wasm] [--samples N] [--seed N] [--threads N] [--only CASE]..."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let mut cases = repo_root().join("../shared/istio/testdata/builder/CASES.yaml");
    let mut wasm: Option<PathBuf> = None;
    let mut samples = None;
    let mut seed = None;
    let mut threads = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let parsed = match a.as_str() {
            "--cases" => value("--cases").map(|v| cases = PathBuf::from(v)),
            "--wasm" => value("--wasm").map(|v| wasm = Some(PathBuf::from(v))),
            "--samples" => value("--samples").and_then(|v| {
                v.parse()
                    .map(|n| samples = Some(n))
                    .map_err(|e| format!("--samples: {e}"))
            }),
            "--seed" => value("--seed").and_then(|v| {
                v.parse()
                    .map(|n| seed = Some(n))
                    .map_err(|e| format!("--seed: {e}"))
            }),
            "--threads" => value("--threads").and_then(|v| {
                v.parse()
                    .map(|n| threads = Some(n))
                    .map_err(|e| format!("--threads: {e}"))
            }),
            "--only" => value("--only").map(|v| only.push(v)),
            "-h" | "--help" => return usage("help"),
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = parsed {
            return usage(&e);
        }
    }
    let Some(wasm) = wasm.or_else(filter_wasm) else {
        return usage(
            "no filter .wasm: build it with `cargo build -p meshfence-filter --target wasm32-unknown-unknown --release` or pass --wasm",
        );
    };
    let mut opts = Options::new(cases, wasm);
    if let Some(n) = samples {
        opts.samples = n;
    }
    if let Some(n) = seed {
        opts.seed = n;
    }
    if let Some(n) = threads {
        opts.threads = n;
    }
    opts.only = only;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(&opts, &mut out) {
        Err(e) => {
            eprintln!("differential: {e}");
            ExitCode::from(2)
        }
        Ok(report) => {
            println!("wall time {:.1}s", started.elapsed().as_secs_f64());
            println!("{} passed, {} failed", report.passed, report.failed);
            if report.failed == 0 && report.passed > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
