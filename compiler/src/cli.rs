//! The `meshfence` command line: argument parsing (clap) and the verbs
//! `compile`, `check`, `explain`, `test`, `inspect` and `wasmplugin`. Exit status: 0 on
//! success, 1 when a test case failed, 2 on bad input.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use meshfence_ruleset::format;
use meshfence_ruleset::ir::{MeshSettings, Ruleset};

use crate::explain::{self, RequestSpec, WorkloadSpec};
use crate::{cases, inspect, mesh, wasmplugin, CompileOptions, Errors};

/// Exit status for bad input (unreadable, invalid or refused).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status for `test` when a case failed.
pub const EXIT_FAILED: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "meshfence",
    version,
    about = "Compile Istio AuthorizationPolicy YAML into a meshfence ruleset, and check, explain and test it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    Binary,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How `meshfence test` shows its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestFormat {
    /// One line per case (`ok   name` / `FAIL name: why`).
    Text,
    /// A table: case, caller, request, expected, got, and the identity
    /// header the upstream received; failures below it.
    Table,
}

/// Envoy's path normalization under `meshfence test --envoy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Normalization {
    Strict,
    Istio,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Compile policies into a ruleset file.
    Compile {
        /// Policy files or folders (folders: every *.yaml/*.yml below, sorted).
        #[arg(required = true, value_name = "POLICY")]
        policies: Vec<PathBuf>,
        /// Mesh settings file.
        #[arg(long, value_name = "FILE")]
        mesh: Option<PathBuf>,
        /// Where to write the ruleset (written only when compilation succeeds).
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = Encoding::Binary)]
        encoding: Encoding,
        /// Skip CUSTOM (ext_authz) policies with a note instead of refusing them.
        #[arg(long)]
        skip_custom: bool,
    },
    /// Validate policies without writing anything.
    Check {
        #[arg(required = true, value_name = "POLICY")]
        policies: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        mesh: Option<PathBuf>,
        #[arg(long)]
        skip_custom: bool,
    },
    /// Decide one request and say why.
    Explain {
        /// Policy files/folders, or one compiled ruleset (binary or base64).
        #[arg(required = true, value_name = "POLICY-or-RULESET")]
        inputs: Vec<PathBuf>,
        /// The workload: NS[,key=value...].
        #[arg(long, value_name = "NS[,key=value...]")]
        workload: String,
        #[arg(long, value_name = "FILE")]
        mesh: Option<PathBuf>,
        /// The client's SPIFFE ID (its certificate's URI SAN); absent: plaintext.
        #[arg(long, value_name = "SPIFFE")]
        from: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value = "example.com")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// A request header, `name: value`; may repeat.
        #[arg(short = 'H', long = "header", value_name = "name: value")]
        headers: Vec<String>,
        #[arg(long, value_name = "IP")]
        source_ip: Option<String>,
        #[arg(long, value_name = "IP")]
        remote_ip: Option<String>,
        #[arg(long, value_name = "IP")]
        destination_ip: Option<String>,
        #[arg(long)]
        sni: Option<String>,
        #[arg(long)]
        skip_custom: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Run expected decisions from a cases file.
    Test {
        /// Policy files/folders, or one compiled ruleset (binary or base64).
        #[arg(required = true, value_name = "POLICY")]
        policies: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        mesh: Option<PathBuf>,
        #[arg(long, value_name = "CASES.yaml")]
        cases: PathBuf,
        /// Send each case through a real Envoy running the filter (Envoy from
        /// $ENVOY, scripts/envoy.sh, func-e or the PATH).
        #[arg(long)]
        envoy: bool,
        /// The filter's .wasm for --envoy (default: $MESHFENCE_WASM, else
        /// target/wasm32-unknown-unknown/release/meshfence_filter.wasm, else
        /// built with cargo when run inside the meshfence repository).
        #[arg(long, value_name = "PATH", requires = "envoy")]
        wasm: Option<PathBuf>,
        /// Envoy's path normalization for --envoy: `strict` (what
        /// envoy-configs/ ships) or `istio` (Istio's default, BASE: `//`,
        /// `%2F` and `%5C` reach the filter unchanged).
        #[arg(long, value_enum, default_value_t = Normalization::Strict, requires = "envoy")]
        normalization: Normalization,
        #[arg(long, value_enum, default_value_t = TestFormat::Text)]
        format: TestFormat,
        #[arg(long)]
        skip_custom: bool,
    },
    /// Emit an Istio WasmPlugin that ships the filter with a compiled ruleset.
    Wasmplugin {
        /// Policy files/folders, or one compiled ruleset (binary or base64).
        #[arg(required = true, value_name = "POLICY-or-RULESET")]
        inputs: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        mesh: Option<PathBuf>,
        /// Where sidecars fetch the module (oci://, https://, http://, file://).
        #[arg(long)]
        url: String,
        /// The module's sha256 (64 lower-case hex digits).
        #[arg(
            long,
            value_name = "HEX",
            required_unless_present = "wasm",
            conflicts_with = "wasm"
        )]
        sha256: Option<String>,
        /// The module itself: its sha256 is computed.
        #[arg(long, value_name = "PATH")]
        wasm: Option<PathBuf>,
        /// metadata.name of the WasmPlugin.
        #[arg(long, default_value = "meshfence")]
        name: String,
        /// metadata.namespace (the root namespace applies it mesh-wide).
        #[arg(long, default_value = "istio-system")]
        namespace: String,
        /// Workloads it applies to: key=value[,key=value...] (all when absent).
        #[arg(long, value_name = "k=v,...")]
        selector: Option<String>,
        /// The workload the filter enforces for, NS[,key=value...], put in
        /// pluginConfig; without it the filter reads Istio's node metadata.
        #[arg(long, value_name = "NS[,key=value...]")]
        workload: Option<String>,
        #[arg(long)]
        skip_custom: bool,
        /// Write the manifest here instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<PathBuf>,
    },
    /// Show what a compiled ruleset holds.
    Inspect {
        #[arg(value_name = "RULESET")]
        ruleset: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
        output: Format,
    },
}

/// Runs the command line and returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    run(cli)
}

fn print_errors(errors: &Errors) {
    let stderr = std::io::stderr();
    let mut w = stderr.lock();
    for e in &errors.0 {
        let _ = writeln!(w, "{e}");
    }
}

fn load_mesh(path: &Option<PathBuf>) -> Result<MeshSettings, Errors> {
    load_mesh_file(path).map(|m| m.settings)
}

fn load_mesh_file(path: &Option<PathBuf>) -> Result<mesh::MeshFile, Errors> {
    match path {
        Some(p) => mesh::load_file(p),
        None => Ok(mesh::MeshFile::default()),
    }
}

/// Compiles policies, printing notes and errors to stderr.
fn compile(
    policies: &[PathBuf],
    mesh_path: &Option<PathBuf>,
    skip_custom: bool,
) -> Result<Ruleset, ()> {
    let mesh = load_mesh_file(mesh_path);
    let file = mesh.clone().unwrap_or_default();
    let opts = CompileOptions {
        mesh: file.settings,
        skip_custom,
        request_authentication: file.request_authentication,
    };
    let out = crate::compile_paths_outcome(policies, &opts);
    for n in &out.notes {
        eprintln!("{n}");
    }
    let mut errors = Vec::new();
    if let Err(e) = mesh {
        errors.extend(e.0);
    }
    errors.extend(out.errors);
    if !errors.is_empty() {
        let count = errors.len();
        print_errors(&Errors(errors));
        eprintln!(
            "{count} error{} found; nothing written",
            if count == 1 { "" } else { "s" }
        );
        return Err(());
    }
    Ok(out.ruleset)
}

/// Encodes and checks that the decoder reads the same ruleset back.
pub fn encode(ruleset: &Ruleset) -> Result<Vec<u8>, String> {
    let bytes = format::to_bytes(ruleset);
    match format::from_bytes(&bytes) {
        Ok(back) if &back == ruleset => Ok(bytes),
        Ok(_) => {
            Err("internal error: the encoded ruleset does not decode to the same rules".into())
        }
        Err(e) => Err(format!("the ruleset cannot be encoded: {e:?}")),
    }
}

/// Writes `bytes` to `out` atomically: a temporary file beside it, renamed.
pub fn write_atomically(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Loads the input of `explain`: a ruleset file (raw or base64, by its
/// label) or policies to compile.
fn load_ruleset_or_policies(
    inputs: &[PathBuf],
    mesh_path: &Option<PathBuf>,
    skip_custom: bool,
) -> Result<Ruleset, ()> {
    if let [one] = inputs {
        if one.is_file() {
            let bytes =
                std::fs::read(one).map_err(|e| eprintln!("{}: cannot read: {e}", one.display()))?;
            if let Some(raw) = inspect::read_ruleset_bytes(&bytes) {
                let mut rs = format::from_bytes(&raw)
                    .map_err(|e| eprintln!("{}: not a valid ruleset: {e:?}", one.display()))?;
                if let Some(_m) = mesh_path {
                    // The ruleset carries its own mesh settings; --mesh overrides them.
                    rs.mesh = load_mesh(mesh_path).map_err(|e| print_errors(&e))?;
                }
                return Ok(rs);
            }
        }
    }
    compile(inputs, mesh_path, skip_custom)
}

fn parse_header(h: &str) -> Result<(String, String), String> {
    match h.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => {
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        }
        _ => Err(format!("-H `{h}`: expected `name: value`")),
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Compile {
            policies,
            mesh,
            output,
            encoding,
            skip_custom,
        } => {
            let Ok(rs) = compile(&policies, &mesh, skip_custom) else {
                return EXIT_BAD_INPUT;
            };
            let bytes = match encode(&rs) {
                Ok(b) => b,
                Err(m) => {
                    eprintln!("error: {m}; nothing written");
                    return EXIT_BAD_INPUT;
                }
            };
            let data = match encoding {
                Encoding::Binary => bytes.clone(),
                Encoding::Base64 => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .encode(&bytes)
                        .into_bytes()
                }
            };
            if let Err(e) = write_atomically(&output, &data) {
                eprintln!("{}: cannot write: {e}", output.display());
                return EXIT_BAD_INPUT;
            }
            eprintln!(
                "compiled {} polic{} ({} rules) into {} ({} bytes)",
                rs.policies.len(),
                if rs.policies.len() == 1 { "y" } else { "ies" },
                rs.policies.iter().map(|p| p.rules.len()).sum::<usize>(),
                output.display(),
                data.len()
            );
            0
        }
        Command::Check {
            policies,
            mesh,
            skip_custom,
        } => match compile(&policies, &mesh, skip_custom) {
            Ok(rs) => {
                println!(
                    "ok: {} polic{}, {} rules",
                    rs.policies.len(),
                    if rs.policies.len() == 1 { "y" } else { "ies" },
                    rs.policies.iter().map(|p| p.rules.len()).sum::<usize>()
                );
                0
            }
            Err(()) => EXIT_BAD_INPUT,
        },
        Command::Explain {
            inputs,
            workload,
            mesh,
            from,
            method,
            path,
            host,
            port,
            headers,
            source_ip,
            remote_ip,
            destination_ip,
            sni,
            skip_custom,
            output,
        } => {
            let wl = match WorkloadSpec::parse(&workload) {
                Ok(w) => w,
                Err(m) => {
                    eprintln!("error: {m}");
                    return EXIT_BAD_INPUT;
                }
            };
            let mut spec = RequestSpec {
                from,
                method,
                path,
                host,
                port,
                sni,
                ..RequestSpec::default()
            };
            for h in &headers {
                match parse_header(h) {
                    Ok(p) => spec.headers.push(p),
                    Err(m) => {
                        eprintln!("error: {m}");
                        return EXIT_BAD_INPUT;
                    }
                }
            }
            if source_ip.is_some() {
                spec.source_ip = source_ip;
            }
            if destination_ip.is_some() {
                spec.destination_ip = destination_ip;
            }
            spec.remote_ip = remote_ip;
            for (what, ip) in [
                ("--source-ip", &spec.source_ip),
                ("--remote-ip", &spec.remote_ip),
                ("--destination-ip", &spec.destination_ip),
            ] {
                if let Err(m) = explain::check_ip(what, ip) {
                    eprintln!("error: {m}");
                    return EXIT_BAD_INPUT;
                }
            }
            let Ok(rs) = load_ruleset_or_policies(&inputs, &mesh, skip_custom) else {
                return EXIT_BAD_INPUT;
            };
            let text = explain::decide_with(&rs, &wl, &spec, |d| match output {
                Format::Text => explain::to_text(&rs, d),
                Format::Json => format!("{:#}\n", explain::to_json(&rs, d)),
            });
            print!("{text}");
            0
        }
        Command::Test {
            policies,
            mesh,
            cases: cases_path,
            envoy,
            wasm,
            normalization,
            format: test_format,
            skip_custom,
        } => {
            let file = match cases::load(&cases_path) {
                Ok(f) => f,
                Err(e) => {
                    print_errors(&e);
                    return EXIT_BAD_INPUT;
                }
            };
            let Ok(rs) = load_ruleset_or_policies(&policies, &mesh, skip_custom) else {
                return EXIT_BAD_INPUT;
            };
            let outcomes = if envoy {
                let bytes = match encode(&rs) {
                    Ok(b) => b,
                    Err(m) => {
                        eprintln!("error: {m}");
                        return EXIT_BAD_INPUT;
                    }
                };
                let opts = cases::envoy_run::Options {
                    wasm,
                    envoy_command: None,
                    istio_normalization: normalization == Normalization::Istio,
                };
                let mut print_line = |o: &cases::Outcome| {
                    if test_format == TestFormat::Text {
                        println!("{}", o.result.line());
                    }
                };
                match cases::envoy_run::run(&bytes, &rs, &file, &opts, &mut print_line) {
                    Ok(r) => r,
                    Err(m) => {
                        eprintln!("error: meshfence test --envoy: {m}");
                        return EXIT_BAD_INPUT;
                    }
                }
            } else {
                let outcomes = cases::run_cases_outcomes(&rs, &file);
                if test_format == TestFormat::Text {
                    for o in &outcomes {
                        println!("{}", o.result.line());
                    }
                }
                outcomes
            };
            if test_format == TestFormat::Table {
                print!("{}", cases::table(&rs, &file, &outcomes));
            }
            let results: Vec<cases::CaseResult> = outcomes.into_iter().map(|o| o.result).collect();
            println!("{}", cases::summary(&results));
            if results.iter().all(|r| r.passed()) {
                0
            } else {
                EXIT_FAILED
            }
        }
        Command::Wasmplugin {
            inputs,
            mesh,
            url,
            sha256,
            wasm,
            name,
            namespace,
            selector,
            workload,
            skip_custom,
            output,
        } => {
            let sha256 = match (sha256, wasm) {
                (Some(h), _) => h,
                (None, Some(p)) => match std::fs::read(&p) {
                    Ok(b) => wasmplugin::sha256_hex(&b),
                    Err(e) => {
                        eprintln!("{}: cannot read: {e}", p.display());
                        return EXIT_BAD_INPUT;
                    }
                },
                (None, None) => {
                    eprintln!("error: give --sha256 HEX or --wasm PATH");
                    return EXIT_BAD_INPUT;
                }
            };
            let selector = match selector.as_deref().map(wasmplugin::parse_selector) {
                None => Vec::new(),
                Some(Ok(s)) => s,
                Some(Err(m)) => {
                    eprintln!("error: --selector: {m}");
                    return EXIT_BAD_INPUT;
                }
            };
            let workload = match workload.as_deref().map(WorkloadSpec::parse) {
                None => None,
                Some(Ok(w)) => Some(w),
                Some(Err(m)) => {
                    eprintln!("error: --workload: {m}");
                    return EXIT_BAD_INPUT;
                }
            };
            let Ok(rs) = load_ruleset_or_policies(&inputs, &mesh, skip_custom) else {
                return EXIT_BAD_INPUT;
            };
            let bytes = match encode(&rs) {
                Ok(b) => b,
                Err(m) => {
                    eprintln!("error: {m}");
                    return EXIT_BAD_INPUT;
                }
            };
            let plugin = wasmplugin::WasmPlugin {
                name,
                namespace,
                url,
                sha256,
                selector,
                workload,
                ruleset: bytes,
            };
            let text = match plugin.to_yaml() {
                Ok(t) => t,
                Err(m) => {
                    eprintln!("error: {m}");
                    return EXIT_BAD_INPUT;
                }
            };
            match output {
                None => print!("{text}"),
                Some(out) => {
                    if let Err(e) = write_atomically(&out, text.as_bytes()) {
                        eprintln!("{}: cannot write: {e}", out.display());
                        return EXIT_BAD_INPUT;
                    }
                }
            }
            0
        }
        Command::Inspect { ruleset, output } => {
            let bytes = match std::fs::read(&ruleset) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{}: cannot read: {e}", ruleset.display());
                    return EXIT_BAD_INPUT;
                }
            };
            let Some(raw) = inspect::read_ruleset_bytes(&bytes) else {
                eprintln!(
                    "{}: not a meshfence ruleset (no ruleset label, raw or base64)",
                    ruleset.display()
                );
                return EXIT_BAD_INPUT;
            };
            let layout = match format::layout(&raw) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("{}: not a valid ruleset: {e:?}", ruleset.display());
                    return EXIT_BAD_INPUT;
                }
            };
            let rs = match format::from_bytes(&raw) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: not a valid ruleset: {e:?}", ruleset.display());
                    return EXIT_BAD_INPUT;
                }
            };
            match output {
                Format::Text => print!("{}", inspect::to_text(&layout, &rs)),
                Format::Json => println!("{:#}", inspect::to_json(&layout, &rs)),
            }
            0
        }
    }
}
