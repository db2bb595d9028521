# The one command surface. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MUSL_TARGET ?= x86_64-unknown-linux-musl

.PHONY: help run build test tools lint fmt test-rust static bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## run the backend locally with default settings (API :4000, metrics :9464)
	cargo run --locked -p backend

build: ## release build of the backend
	cargo build --locked --release -p backend

test: tools lint test-rust static ## everything CI runs: installs pinned tools, lints, tests, static build

tools: ## install the pinned tools the tests need (idempotent)
	scripts/tools.sh

lint: ## rustfmt, clippy, hadolint, shellcheck
	scripts/lint.sh

fmt: ## format the Rust code
	cargo fmt --all

test-rust: ## unit, router and integration tests (cargo-nextest)
	cargo nextest run --locked --workspace --no-fail-fast

static: ## build the static musl binary the image ships and check its size
	scripts/static.sh $(MUSL_TARGET)

bench: ## load /health and /info against a no-layer baseline; writes bench/results/latest.*
	scripts/bench.sh
