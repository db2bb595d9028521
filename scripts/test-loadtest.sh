#!/usr/bin/env bash
# Tests of the load-testing setup: the SLO gate's unit tests, a short run of jmeter/load_test.jmx
# against the real backend (JMeter 2.13 from Debian), a negative run the gate must fail, the
# compose `jmeter` service, and the zero-downtime restart proof. Prints `loadtest: N passed, M failed`.
#
#   scripts/test-loadtest.sh            (about 1.5 minutes once the release build is cached)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

apt_install jmeter jmeter-http default-jdk-headless python3 curl nginx wrk
BIN=$(backend_bin release)
export BIN
TMP=$(mktemp -d)
STEP_LOGS=$TMP  # lib.sh's `step` logs; a failing step prints its tail
backend_pid=''
cleanup() {
  if [ -n "$backend_pid" ]; then kill "$backend_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# jtl_count FILE COLUMN VALUE: samples in a CSV .jtl whose COLUMN equals VALUE. Columns 1-8
# (label 3, responseCode 4, success 8) come before any free-text one, so a comma split is safe.
jtl_count() { awk -F, -v c="$2" -v v="$3" 'NR > 1 && $c == v { n++ } END { print n + 0 }' "$1"; }

test_gate_unit_tests() {
  python3 -m unittest discover -s "$ROOT/jmeter" -p 'test_*.py'
}

test_plan_against_backend() {
  local jtl="$TMP/ok/results.jtl" bad
  OUT="$TMP/ok" GATE=0 "$ROOT/jmeter/run.sh" -Jhost=127.0.0.1 -Jport="$api" \
    -Jthreads=4 -Jrampup=2 -Jhold=10
  [ -s "$jtl" ] || die "no results: $(grep -m 3 ERROR "$TMP/ok/jmeter.log")"
  bad=$(awk -F, 'NR > 1 && $8 != "true"' "$jtl")
  [ -z "$bad" ] || die "failed samples (0 expected): $(head -n 3 <<<"$bad")"
  # --require-label: samples for both endpoints
  python3 "$ROOT/jmeter/slo_gate.py" "$jtl" --min-samples 100 --require-label health --require-label info
}

test_gate_fails_on_404() {
  local rc=0
  OUT="$TMP/404" "$ROOT/jmeter/run.sh" -Jhost=127.0.0.1 -Jport="$api" -Jpath=/api/v0 \
    -Jthreads=2 -Jrampup=1 -Jhold=3 || rc=$?
  [ "$(jtl_count "$TMP/404/results.jtl" 4 404)" -gt 0 ] || die "the run saw no 404"
  [ "$rc" = 1 ] || die "gate exit status $rc, expected 1 (SLO broken)"
}

test_compose_service() {
  local compose file="$ROOT/docker-compose.yml"
  compose=$(compose_bin)
  [ -f "$file" ] || die "no $file yet"
  # .env is git-ignored; the example holds every variable the file needs
  (cd "$ROOT" && "$compose" --env-file .env.example -f "$file" config -q)
  (cd "$ROOT" && "$compose" --env-file .env.example -f "$file" --profile loadtest config --format json) |
    python3 -c '
import json, sys
jmeter = json.load(sys.stdin)["services"]["jmeter"]
assert jmeter["image"] == "justb4/jmeter:5.6.3", jmeter["image"]
assert jmeter["profiles"] == ["loadtest"], jmeter["profiles"]
assert jmeter["depends_on"]["backend"]["condition"] == "service_healthy", jmeter["depends_on"]
assert any(v["target"] == "/jmeter" for v in jmeter["volumes"]), jmeter["volumes"]
command = " ".join(jmeter["command"])
for part in ("rm -rf", "-t load_test.jmx", "-q jmeter.properties", "-l results/results.jtl", "-e -o report"):
    assert part in command, (part, command)
'
  # plain `up` must not start the load test
  (cd "$ROOT" && "$compose" --env-file .env.example -f "$file" config --services) | grep -qx jmeter &&
    die "jmeter runs on a plain 'docker compose up'"
  return 0
}

test_zero_downtime_restart() {
  "$ROOT/scripts/zero-downtime.sh"
}

step "slo gate unit tests" test_gate_unit_tests

api=$(free_port)
APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT=$api APP__METRICS__HOST=127.0.0.1 \
  APP__METRICS__PORT=$(free_port) APP__SHUTDOWN__DRAIN_DELAY=0s "$BIN" >"$TMP/backend.log" 2>&1 &
backend_pid=$!
wait_http "http://127.0.0.1:$api/api/v1/health" 10
step "plan against the backend: samples for both endpoints, 0 errors, gate passes" test_plan_against_backend
step "a path answering 404 fails the gate" test_gate_fails_on_404
kill "$backend_pid"
wait "$backend_pid" || true
backend_pid=''

step "compose: jmeter service is valid, pinned and behind a profile" test_compose_service
step "zero-downtime restart: 0 non-2xx, 0 socket errors" test_zero_downtime_restart

steps_summary loadtest
