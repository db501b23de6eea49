//! meshfence's compiler: policy YAML in, a ruleset out.
//!
//! - [`source`]: the spanned YAML front end (files, folders, documents, positions).
//! - [`diagnostics`]: errors and notes, `file:line:column: field.path: message`.
//! - [`istio`]: Istio `AuthorizationPolicy` validation and lowering to the IR.
//! - [`mesh`]: the mesh settings file.
//! - [`cases`]: the expected-decision cases files of `meshfence test`, and their runner.
//! - [`explain`]: one request, decided and explained.
//! - [`inspect`]: what an encoded ruleset holds.
//! - [`wasmplugin`]: the Istio `WasmPlugin` that ships the filter and a ruleset.
//! - [`cli`]: the `meshfence` command line (the binary is a thin shell over it).
//!
//! Benches and other tools call [`compile_paths`] or [`compile_str`] directly.

pub mod cases;
pub mod cli;
pub mod diagnostics;
pub mod explain;
pub mod inspect;
pub mod istio;
pub mod mesh;
pub mod source;
pub mod wasmplugin;

use std::collections::HashMap;
use std::path::PathBuf;

use meshfence_ruleset::ir::{MeshSettings, Ruleset};

pub use diagnostics::{Error, Errors, Location, Note};
use source::{Document, Reader};

/// What a compilation needs besides the policies.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    pub mesh: MeshSettings,
    /// Skip CUSTOM policies with a note instead of refusing them.
    pub skip_custom: bool,
    /// What JWT fields mean (mesh setting `requestAuthentication`).
    pub request_authentication: mesh::RequestAuthentication,
}

/// A successful compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub ruleset: Ruleset,
    /// What was skipped on purpose.
    pub notes: Vec<Note>,
}

/// The outcome of a compilation: errors and notes both, so that a tool can
/// print the notes even when the input is refused.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ruleset: Ruleset,
    pub notes: Vec<Note>,
    pub errors: Vec<Error>,
    /// Where each policy (`namespace`, `name`) was defined, to refuse a
    /// second definition.
    pub defined_at: HashMap<(String, String), Location>,
}

impl Outcome {
    pub fn into_result(self) -> Result<Compiled, Errors> {
        if self.errors.is_empty() {
            Ok(Compiled {
                ruleset: self.ruleset,
                notes: self.notes,
            })
        } else {
            Err(Errors(self.errors))
        }
    }
}

/// Compiles YAML text; `file` is the name messages show.
pub fn compile_str(file: &str, text: &str, opts: &CompileOptions) -> Result<Compiled, Errors> {
    let mut out = Outcome::default();
    match source::parse_str(file, text) {
        Ok(docs) => compile_documents(&docs, opts, &mut out),
        Err(e) => out.errors.push(e),
    }
    finish(out, opts).into_result()
}

/// Compiles files and folders (folders: every `*.yaml`/`*.yml` below, sorted).
pub fn compile_paths(paths: &[PathBuf], opts: &CompileOptions) -> Result<Compiled, Errors> {
    compile_paths_outcome(paths, opts).into_result()
}

/// Like [`compile_paths`], returning notes even when there are errors.
pub fn compile_paths_outcome(paths: &[PathBuf], opts: &CompileOptions) -> Outcome {
    let mut out = Outcome::default();
    let files = match source::expand_inputs(paths) {
        Ok(f) => f,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    for file in files {
        match source::parse_file(&file) {
            Ok(docs) => compile_documents(&docs, opts, &mut out),
            Err(e) => out.errors.push(e),
        }
    }
    finish(out, opts)
}

fn finish(mut out: Outcome, opts: &CompileOptions) -> Outcome {
    out.ruleset.mesh = opts.mesh.clone();
    out
}

/// Lowers every document into `out`: AuthorizationPolicies become policies,
/// other kinds are skipped with a note.
pub fn compile_documents(docs: &[Document], opts: &CompileOptions, out: &mut Outcome) {
    for doc in docs {
        let root = &doc.root;
        // `kubectl get -o yaml` wraps objects in a v1 List.
        if root.get("kind").and_then(|n| n.as_str()) == Some("List") {
            let Some(items) = root.get("items") else {
                continue;
            };
            let mut r = Reader::default();
            if let Some(items) = r.list(items, "items") {
                for (i, item) in items.iter().enumerate() {
                    let before = out.errors.len();
                    compile_node(item, opts, out);
                    for e in &mut out.errors[before..] {
                        e.path = if e.path.is_empty() {
                            format!("items[{i}]")
                        } else {
                            format!("items[{i}].{}", e.path)
                        };
                    }
                }
            }
            out.errors.extend(r.into_sorted());
            continue;
        }
        compile_node(root, opts, out);
    }
}

/// Lowers one object (a document, or an item of a List).
fn compile_node(root: &source::Node, opts: &CompileOptions, out: &mut Outcome) {
    {
        let kind = root.get("kind").and_then(|n| n.as_str());
        let api = root.get("apiVersion").and_then(|n| n.as_str());
        let mut r = Reader::default();
        match (kind, api) {
            (Some("AuthorizationPolicy"), Some(api)) if istio::API_VERSIONS.contains(&api) => {
                let iopts = istio::Options {
                    skip_custom: opts.skip_custom,
                    request_authentication: opts.request_authentication,
                };
                if let Some(policy) = istio::lower(root, &opts.mesh, iopts, &mut r, &mut out.notes)
                {
                    if r.errors.is_empty() {
                        let at = root
                            .get("metadata")
                            .and_then(|m| m.get("name"))
                            .map(|n| n.at.clone())
                            .unwrap_or(root.at.clone());
                        let key = (policy.namespace.clone(), policy.name.clone());
                        if let Some(first) = out.defined_at.get(&key) {
                            r.error(
                                &at,
                                "metadata.name",
                                format!(
                                    "policy {}/{} is defined twice (first at {first})",
                                    policy.namespace, policy.name
                                ),
                            );
                        } else {
                            out.defined_at.insert(key, at);
                            out.ruleset.policies.push(policy);
                        }
                    }
                }
            }
            (Some("AuthorizationPolicy"), _) => {
                let at = root
                    .get("apiVersion")
                    .map(|n| n.at.clone())
                    .unwrap_or(root.at.clone());
                r.error(
                    &at,
                    "apiVersion",
                    format!(
                        "AuthorizationPolicy must be one of {}",
                        istio::API_VERSIONS.join(", ")
                    ),
                );
            }
            (Some("TenantPolicy"), _) => {
                let at = root
                    .get("kind")
                    .map(|n| n.at.clone())
                    .unwrap_or(root.at.clone());
                r.error(
                    &at,
                    "kind",
                    "TenantPolicy is not supported by this compiler yet; refusing rather than dropping it",
                );
            }
            (Some(kind), _) => {
                let name = root
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("(unnamed)");
                out.notes.push(Note {
                    location: root.at.clone(),
                    message: format!("skipping {kind} {name}: not an AuthorizationPolicy"),
                });
            }
            (None, _) => {
                let at = root
                    .get("kind")
                    .map(|n| n.at.clone())
                    .unwrap_or(root.at.clone());
                r.error(&at, "kind", "document has no `kind`");
            }
        }
        out.errors.extend(r.into_sorted());
    }
}
