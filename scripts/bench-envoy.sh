#!/usr/bin/env bash
# The in-Envoy load benchmark (DESIGN section 9, issue 6); `make bench-envoy`
# runs it after building the filter and finding Envoy.
#
# Builds (release, in $CARGO_TARGET_DIR or target/): the empty proxy-wasm
# filter meshfence_noop.wasm, the host-call probe meshfence_probe.wasm, and
# the benchmark itself (benches/src/bin/bench-envoy: one Envoy with every
# variant as a listener, and its own rustls load generator). Then runs it.
#
# Environment (all optional):
#   BENCH_SECONDS      measured seconds per configuration (default 10)
#   BENCH_CONNECTIONS  keep-alive mTLS connections of the load generator (8)
#   BENCH_TENANTS      tenant counts (10,1000,10000)
#   BENCH_BREAKDOWN=1  also measure wasm filters making only meshfence's host
#                      calls, step by step (where the time goes)
#   BENCH_SKIP_MEMORY=1  skip the resident-memory runs
#   ENVOY              the Envoy command (else scripts/envoy.sh finds one)
#
# Writes target/bench-envoy.json and target/bench-envoy.md; prints the tables.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo="${CARGO:-cargo}"
target_dir="${CARGO_TARGET_DIR:-target}"

"$cargo" build -q -p meshfence-filter -p meshfence-noop -p meshfence-probe --target wasm32-unknown-unknown --release
"$cargo" build -q -p meshfence-benches --bin bench-envoy --release

if [ -z "${ENVOY:-}" ]; then
  ENVOY="$(scripts/envoy.sh)"
fi
export ENVOY
export BENCH_SECONDS="${BENCH_SECONDS:-10}"
exec "$target_dir/release/bench-envoy"
