# The one command surface. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

.PHONY: help run build up up-tracing test tools lint fmt test-rust static bench test-monitoring \
        test-loadtest test-deploy test-template gameday loadtest zero-downtime sync-chart-assets rename

# The service's name, written once: `[package] name` in app/Cargo.toml (`make rename` changes it).
SERVICE := $(shell sed -n 's/^name = "\(.*\)"$$/\1/p' app/Cargo.toml | head -n 1)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## run the service locally with default settings (API :4000, metrics :9464)
	cargo run --locked -p $(SERVICE)

up: ## the whole stack with Docker: backend, load balancer, Prometheus, Alertmanager, Grafana
	docker compose up --build

up-tracing: ## the same plus Jaeger (UI 127.0.0.1:16686), with the backend exporting traces to it
	OTLP_ENDPOINT=http://jaeger:4318 docker compose --profile tracing up --build

build: ## release build of the service
	cargo build --locked --release -p $(SERVICE)

test: tools lint test-rust static test-monitoring test-loadtest test-deploy test-template gameday ## everything CI runs (installs its pinned tools first)

tools: ## install the pinned tools the tests need (idempotent)
	scripts/tools.sh

lint: ## rustfmt, clippy, hadolint, shellcheck
	scripts/lint.sh

fmt: ## format the Rust code
	cargo fmt --all

test-rust: ## unit, router and integration tests (cargo-nextest)
	cargo nextest run --locked --workspace --no-fail-fast

static: ## build the image's static binaries (amd64, arm64) as the Dockerfile does; size and smoke checks
	scripts/static.sh

bench: ## paired load benchmark vs no-layer baselines (BENCH_ARGS="--baseline-rev REV"); bench/results/latest.*
	scripts/bench.sh $(BENCH_ARGS)

test-monitoring: ## compose file, Prometheus rules and their unit tests, Alertmanager, dashboards, live end-to-end
	scripts/test-monitoring.sh

test-loadtest: ## SLO gate tests, short JMeter runs against the backend, compose service, zero-downtime proof
	scripts/test-loadtest.sh

test-deploy: ## Helm chart, Argo CD and workflows: lint, render, schemas, checkov, actionlint, zizmor
	scripts/test-deploy.sh

test-template: ## the fork path: rename a clean copy, then run its Rust, monitoring and deploy suites
	template/test.sh

gameday: ## real faults (crash, hang, outage, errors, latency, broken rules) against the stack; time to page (root)
	scripts/gameday.sh

rename: ## rename the service for your fork: make rename NAME=orders-api (uncommitted, for review)
	@[ -n "$(NAME)" ] || { echo 'usage: make rename NAME=<new-name>, e.g. make rename NAME=orders-api' >&2; exit 2; }
	python3 template/rename.py "$(NAME)"

loadtest: ## JMeter plan against a running backend (JMETER_ARGS="-Jport=4000 -Jthreads=20"), then the SLO gate
	jmeter/run.sh $(JMETER_ARGS)

zero-downtime: ## restart 2 backend instances behind a local nginx under wrk load; asserts 0 errors
	scripts/zero-downtime.sh

sync-chart-assets: ## copy monitoring/ rules and dashboards into the Helm chart
	scripts/sync-chart-assets.sh
