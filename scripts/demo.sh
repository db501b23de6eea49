#!/usr/bin/env bash
# make demo: the seed's validation, through the real filter in a real Envoy.
#
# Compiles examples/policies with examples/mesh.yaml, then, for each workload
# of examples/cases/ (one cases file per workload), runs
# `meshfence test --envoy --format table`: one Envoy on free loopback ports
# with that workload's sidecar filter and the compiled ruleset, each case sent
# over mTLS with a client certificate whose only URI SAN is the caller's
# SPIFFE ID, and a table of what happened and of the x-tenant-identity the
# upstream received. Envoy stops after each table.
#
# Inputs (the Makefile sets them): MESHFENCE (the CLI), WASM (the filter),
# ENVOY (the command that runs Envoy; scripts/envoy.sh finds one).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"
meshfence="${MESHFENCE:-$target/debug/meshfence}"
wasm="${WASM:-$target/wasm32-unknown-unknown/release/meshfence_filter.wasm}"
export ENVOY="${ENVOY:-$(scripts/envoy.sh)}"
for f in "$meshfence" "$wasm"; do
  if [ ! -f "$f" ]; then
    echo "demo: $f is missing; run \`make demo\` (it builds it)" >&2
    exit 2
  fi
done

policies=examples/policies
mesh=examples/mesh.yaml
# The seed's story first: the boundary, identity, shared services, audit.
order=(tenant-beta-api shared-log-collector platform-logging-collector tenant-alpha-payments tenant-alpha-api-gateway)
files=()
for n in "${order[@]}"; do [ -f "examples/cases/$n.yaml" ] && files+=("examples/cases/$n.yaml"); done
for f in examples/cases/*.yaml; do
  case " ${files[*]} " in *" $f "*) ;; *) files+=("$f") ;; esac
done

version="$($ENVOY --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "meshfence demo"
echo "  policies  $policies/ (mesh settings $mesh)"
echo "  filter    $wasm ($(wc -c <"$wasm") bytes)"
echo "  envoy     $ENVOY${version:+ ($version)}"
"$meshfence" compile "$policies" --mesh "$mesh" -o "$tmp/ruleset.bin" 2>&1 | sed 's/^/  /' || exit 2
echo

start=$SECONDS
failed=()
for f in "${files[@]}"; do
  ns="$(sed -n 's/^  namespace: *//p' "$f" | head -1)"
  labels="$(sed -n 's/^  labels: *//p' "$f" | head -1)"
  about="$(sed -n '/^#/{s/^# *//p;};/^[^#]/q' "$f" | head -1)"
  echo "== workload $ns $labels: ${about:-$f}"
  if ! "$meshfence" test "$policies" --mesh "$mesh" --cases "$f" --envoy --wasm "$wasm" --format table; then
    failed+=("$f")
  fi
  echo
done
echo "${#files[@]} workloads, one Envoy each, in $((SECONDS - start)) s."
if [ ${#failed[@]} -gt 0 ]; then
  echo "demo: cases failed in: ${failed[*]}" >&2
  exit 1
fi
