//! Where the filter's `.wasm` is, and building it: one place for the host
//! tests, the Envoy runner and `meshfence test --envoy`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace this crate was built from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The active target directory: `$CARGO_TARGET_DIR` (relative to the
/// workspace when relative), else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => workspace_root().join(p),
        None => workspace_root().join("target"),
    }
}

/// Where the release build of the filter lands under a target directory.
pub fn wasm_in(target: &Path) -> PathBuf {
    target.join("wasm32-unknown-unknown/release/meshfence_filter.wasm")
}

/// The built filter: `$MESHFENCE_WASM`, else the one in the active target
/// directory; `None` when there is no such file.
pub fn built_filter() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHFENCE_WASM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    Some(wasm_in(&target_dir())).filter(|p| p.is_file())
}

/// Builds the filter (`cargo build -p meshfence-filter --target
/// wasm32-unknown-unknown --release`) into the active target directory and
/// returns its path. Cargo rebuilds only what changed.
pub fn build_filter() -> Result<PathBuf, String> {
    let target = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "-p",
            "meshfence-filter",
            "--target",
            "wasm32-unknown-unknown",
            "--release",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the filter failed ({status}); is the wasm32-unknown-unknown target \
             installed (rustup target add wasm32-unknown-unknown)?"
        ));
    }
    let path = wasm_in(&target);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} was not built", path.display()))
    }
}
