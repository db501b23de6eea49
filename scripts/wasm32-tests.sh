#!/usr/bin/env bash
# Runs the ruleset crate's unit and integration tests compiled to
# wasm32-unknown-unknown under Node, through wasm-bindgen-test-runner.
#
# The runner must be exactly the wasm-bindgen version Cargo.lock pins, so it is
# installed (once, ~4.5 min) into the project-local, gitignored .tools/.
# `--locked` is deliberately absent: wasm-bindgen-cli's own lockfile names a
# yanked crate and fails with it (DESIGN §12).
# Doctests are not run here: on wasm32 they pass without running.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version="$(awk '
  $0 == "name = \"wasm-bindgen\"" { found = 1; next }
  found && /^version = / { gsub(/"/, "", $3); print $3; exit }
' Cargo.lock)"
if [ -z "$version" ]; then
  echo "wasm32-tests: no wasm-bindgen in Cargo.lock" >&2
  exit 2
fi

tools="$root/.tools"
runner="$tools/bin/wasm-bindgen-test-runner"
installed=""
if [ -x "$runner" ]; then
  installed="$("$runner" --version 2>/dev/null | awk '{print $2}')" || installed=""
fi
if [ "$installed" != "$version" ]; then
  echo "wasm32-tests: installing wasm-bindgen-cli $version into $tools" >&2
  cargo install wasm-bindgen-cli --version "=$version" --root "$tools"
fi

if ! command -v node >/dev/null 2>&1; then
  # The test runner executes the wasm under Node. Install Debian's when we can.
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "wasm32-tests: installing Node.js (Debian package nodejs)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
  fi
  if ! command -v node >/dev/null 2>&1; then
    echo "wasm32-tests: node is required (install Node.js 18 or newer)" >&2
    exit 2
  fi
fi
if command -v rustup >/dev/null 2>&1 &&
  ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$runner"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test -p meshfence-ruleset --target wasm32-unknown-unknown --lib --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# A test without `#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]` is
# skipped silently on wasm32: name the targets where that left nothing to run.
empty="$(awk '
  /Running / { if (match($0, /(tests|src)\/[^ ]+/)) target = substr($0, RSTART, RLENGTH) }
  /no tests to run!/ { print target }
' "$log")"
if [ -n "$empty" ]; then
  echo "wasm32-tests: warning: no wasm32 tests in:" $empty >&2
fi
exit "$status"
