//! What the CLI tests share: running the built `meshfence`, and scratch files.
// Each test file uses a different part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshfence");
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Runs `meshfence` with `args` from the test's working directory.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run meshfence")
}

/// Runs `meshfence` with `args` from the repository's root.
pub fn run_in_repo(args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(REPO)
        .args(args)
        .output()
        .expect("run meshfence")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty scratch folder `group/name` for one test.
pub fn scratch(group: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}
