# The two commands of the README: `make run` (build everything, run the gateway) and `make test`.
CONFIG ?= infra/config/flexgate.example.yaml
CARGO ?= cargo
export RUST_LIB_BACKTRACE ?= 0

.PHONY: run build plugins test lint unit api-fuzz bench bench-smoke setup clean-plugins

## Build the plugins and the gateway (release), then run it with the example config.
run: build
	./target/release/flexgate serve --config $(CONFIG) --log-format pretty

build: setup plugins
	$(CARGO) build --release -p flexgate

setup:
	@bash .ci/setup.sh

## Wasm components for plugins/ (target wasm32-wasip2) into plugins/dist/.
plugins: setup
	@if [ -x plugins/build.sh ]; then bash plugins/build.sh; else echo "no plugins/build.sh yet"; fi

## Everything CI checks: formatting, lints, the whole test suite, the benchmark harness smoke run.
## In here api-fuzz and bench-smoke run the gateway `make unit` just built (cargo test builds
## target/debug/flexgate with the whole workspace's features): a `cargo build -p flexgate` would
## rebuild tokio and everything above it with other features (~50 s).
test: export FLEXGATE ?= $(abspath $(or $(CARGO_TARGET_DIR),target))/debug/flexgate
test: setup plugins lint unit api-fuzz bench-smoke

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## --no-fail-fast: one CI run reports every failing test binary, not just the first.
unit:
	CI_REQUIRE_TOOLS=1 FLEXGATE_REQUIRE_REDIS=1 $(CARGO) test --workspace --locked --no-fail-fast

## schemathesis (PyPI, in target/venv) against the admin API of a running gateway: no 5xx, no
## response outside the OpenAPI document. A few minutes at most (see infra/api-fuzz.sh).
api-fuzz: setup
	CARGO="$(CARGO)" bash infra/api-fuzz.sh

## Side-by-side load benchmark against nginx and HAProxy (see infra/bench/README.md).
bench:
	bash infra/bench/run.sh

## The harness once for 2 s with the debug gateway `make unit` built (no release build: see run.sh).
bench-smoke:
	@if [ -x infra/bench/run.sh ]; then bash infra/bench/run.sh --smoke; else echo "no bench harness yet"; fi
