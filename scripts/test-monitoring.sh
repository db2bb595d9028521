#!/usr/bin/env bash
# Tests the observability stack (issue B): compose file, Prometheus rules and their unit tests,
# Alertmanager routing and inhibition, the webhook receiver, the blackbox config, Grafana
# dashboards, consistency with the backend's /metrics, and a live end-to-end run of the real
# backend, Prometheus, Alertmanager, blackbox exporter and receiver on 127.0.0.1.
#
#   scripts/test-monitoring.sh            everything (about 5 minutes once the tools are installed)
#   SKIP_LIVE=1 scripts/test-monitoring.sh  everything but the live test (under a minute; no backend build)
#
# Installs what it needs (pinned, idempotent) through scripts/lib.sh. Every step runs even when an
# earlier one failed; the last line is `monitoring: N passed, M failed` and the exit code is 1 if
# anything failed. Guide: docs/observability.md, "Tests".
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PYYAML_VERSION=6.0.3
SCHEMA_CHECK="$ROOT/monitoring/grafana/schema-check"
LIVE_TIMEOUT=540           # hard stop for the live test (it needs ~4.5 minutes)
NOTIFY_TIMEOUT=120         # hard stop for the notification test (it needs ~15 s)

# ------------------------------------------------------------------------------------------ tools
log "tools"
apt_install prometheus prometheus-alertmanager prometheus-blackbox-exporter shellcheck yamllint nginx python3-venv curl
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
pip_install "PyYAML==$PYYAML_VERSION"
PY="$VENV/bin/python"
COMPOSE=$(compose_bin)
# Debian names the Alertmanager binary prometheus-alertmanager.
ALERTMANAGER=$(command -v alertmanager || command -v prometheus-alertmanager) || die "no alertmanager binary"
BLACKBOX=$(command -v blackbox_exporter || command -v prometheus-blackbox-exporter) || die "no blackbox exporter binary"
# @grafana/schema and typescript, pinned by package-lock.json, into the folder's node_modules.
if ! cmp -s "$SCHEMA_CHECK/package-lock.json" "$SCHEMA_CHECK/node_modules/.package-lock.json.installed" 2>/dev/null; then
  log "npm ci ($SCHEMA_CHECK)"
  (cd "$SCHEMA_CHECK" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$SCHEMA_CHECK/package-lock.json" "$SCHEMA_CHECK/node_modules/.package-lock.json.installed"
fi

# ------------------------------------------------------------------------------------------ steps
# Each step's log goes to $WORK (lib.sh's `step`); the live test's processes are stopped by
# live_e2e.py itself. The logs stay when a step failed.
WORK=$(mktemp -d)
STEP_LOGS=$WORK
cleanup() {
  if [ ${#STEPS_FAILED[@]} -eq 0 ]; then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
}
trap cleanup EXIT

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
step "blackbox exporter --config.check (monitoring/blackbox/blackbox.yml)" \
  "$BLACKBOX" --config.check --config.file=monitoring/blackbox/blackbox.yml
step "alert receiver: unit tests (whole lines under concurrent notifications)" \
  python3 -m unittest discover -s monitoring/alert-receiver -p 'test_*.py'
step "notifications: inhibition, receiver output (real Alertmanager + receiver.py)" \
  timeout --signal=TERM --kill-after=10 "$NOTIFY_TIMEOUT" \
  "$PY" scripts/monitoring/notify_e2e.py --alertmanager "$ALERTMANAGER" --workdir "$WORK/notify"
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
  log "live end-to-end test: backend + Prometheus + Alertmanager + blackbox + receiver on 127.0.0.1"
  # Steps run in a subshell: the binary's path comes back as the last line of the step's log.
  step "live: build the backend (cargo build --release)" backend_bin release
  binary=$(tail -n 1 "$STEP_LOG")
  step "live: every rule/panel has data, BackendDown and BackendReplicaLost <= 2m" \
    timeout --signal=TERM --kill-after=20 "$LIVE_TIMEOUT" \
    "$PY" scripts/monitoring/live_e2e.py --binary "$binary" --prometheus "$(command -v prometheus)" \
    --alertmanager "$ALERTMANAGER" --blackbox "$BLACKBOX" --workdir "$WORK/live"
  sed -n 's/^\[/       [/p' "$STEP_LOG"  # its progress lines ([HH:MM:SS] ...)
fi

steps_summary monitoring
