#!/usr/bin/env bash
# Tests of the load-testing setup: the SLO gate's unit tests, short runs of jmeter/load_test.jmx
# against the real backend (JMeter 2.13 from Debian) with jmeter/routes.csv and with one line added
# to it, a negative run the gate must fail, the plan's methods and path parameters against a stub
# API, the compose `jmeter` service, and the zero-downtime restart proof.
# Prints `loadtest: N passed, M failed`.
#
#   scripts/test-loadtest.sh            (about 1 minute once the release build is cached)
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

# no_failed_sample JTL: every sample passed every assertion.
no_failed_sample() {
  local bad
  [ -s "$1" ] || die "no results: $(grep -m 3 ERROR "$(dirname "$1")/jmeter.log")"
  bad=$(awk -F, 'NR > 1 && $8 != "true"' "$1")
  [ -z "$bad" ] || die "failed samples (0 expected): $(head -n 3 <<<"$bad")"
}

# mix_follows_weights JTL ROUTES: each route's share of the samples is its share of the weights,
# within 1 percentage point. Prints the shares.
mix_follows_weights() {
  PYTHONPATH="$ROOT/jmeter" python3 - "$@" <<'PY'
import collections, sys
from pathlib import Path
import slo_gate
samples = collections.Counter(s.label for s in slo_gate.read_jtl(Path(sys.argv[1])))
routes = slo_gate.load_routes(Path(sys.argv[2]))
weights = sum(r.weight for r in routes)
for r in routes:
    want, got = r.weight / weights, samples[r.label] / sum(samples.values())
    print(f"{r.label}: {100 * got:.1f} % of the samples, weight share {100 * want:.1f} %")
    assert abs(got - want) <= 0.01, f"{r.label}: {got:.3f} of the samples, weights say {want:.3f}"
PY
}

test_gate_unit_tests() {
  python3 -m unittest discover -s "$ROOT/jmeter" -p 'test_*.py'
}

test_plan_against_backend() {
  local jtl="$TMP/ok/results.jtl"
  OUT="$TMP/ok" GATE=0 "$ROOT/jmeter/run.sh" -Jhost=127.0.0.1 -Jport="$api" \
    -Jthreads=4 -Jrampup=2 -Jhold=10
  no_failed_sample "$jtl"
  mix_follows_weights "$jtl" "$ROOT/jmeter/routes.csv"
  # the gate takes its routes from jmeter/routes.csv: samples and the SLOs for each
  python3 "$ROOT/jmeter/slo_gate.py" "$jtl" --min-samples 100
}

# The user's change: one line appended to a copy of jmeter/routes.csv (/api/v1/ready is a real
# route that the repository's file does not list). Nothing else changes.
PLUS_READY="$TMP/routes-plus-ready.csv"
cp "$ROOT/jmeter/routes.csv" "$PLUS_READY"
echo 'ready;GET;/api/v1/ready;1;200;"success":true;' >>"$PLUS_READY"

test_one_line_covers_a_route() {
  local jtl="$TMP/ready/results.jtl"
  ROUTES="$PLUS_READY" OUT="$TMP/ready" "$ROOT/jmeter/run.sh" -Jhost=127.0.0.1 -Jport="$api" \
    -Jthreads=4 -Jrampup=1 -Jhold=5  # the gate runs too, with the same routes file
  [ "$(jtl_count "$jtl" 3 ready)" -gt 0 ] || die "no sample labelled ready"
  no_failed_sample "$jtl"
  mix_follows_weights "$jtl" "$PLUS_READY"
}

test_gate_fails_on_404() {
  local rc=0
  OUT="$TMP/404" "$ROOT/jmeter/run.sh" -Jhost=127.0.0.1 -Jport="$api" -Jprefix=/nope \
    -Jthreads=2 -Jrampup=1 -Jhold=3 || rc=$?
  [ "$(jtl_count "$TMP/404/results.jtl" 4 404)" -gt 0 ] || die "the run saw no 404"
  [ "$rc" = 1 ] || die "gate exit status $rc, expected 1 (SLO broken)"
}

# Routes the service does not have yet, against jmeter/stub_api.py: a path parameter, every
# non-GET method with a JSON body, a status other than 200, and two lines whose checks must fail.
test_methods_and_path_parameters() {
  local port routes="$TMP/stub-routes.csv" out="$TMP/stub" stub
  port=$(free_port)
  mkdir -p "$out"
  cat >"$routes" <<'CSV'
label;method;path;weight;status;body_regex;request_body
notes;GET;/api/v1/notes;2;200;"method":"GET";
note_put;PUT;/api/v1/notes/7;1;200|201;(?=.*"method":"PUT")(?=.*"path":"/api/v1/notes/7");{"title":"milk","done":false}
note_post;POST;/api/v1/notes;1;201;"method":"POST";{"title":"eggs"}
note_patch;PATCH;/api/v1/notes/7;1;200;"method":"PATCH";{"done":true}
note_delete;DELETE;/api/v1/notes/7;1;200;"method":"DELETE";
wrong_body;GET;/api/v1/notes/8;1;200;"method":"PUT";
wrong_status;GET;/api/v1/notes/9;1;204;"method":"GET";
CSV
  python3 "$ROOT/jmeter/stub_api.py" "$port" "$out/seen.json" &
  stub=$!
  trap 'kill "$stub" 2>/dev/null || true' EXIT
  wait_http "http://127.0.0.1:$port/" 5
  ROUTES="$routes" OUT="$out" GATE=0 "$ROOT/jmeter/run.sh" -Jhost=127.0.0.1 -Jport="$port" \
    -Jthreads=2 -Jrampup=1 -Jhold=3
  kill "$stub"
  wait "$stub"  # it writes seen.json on SIGTERM
  trap - EXIT
  PYTHONPATH="$ROOT/jmeter" python3 - "$out/results.jtl" "$out/seen.json" <<'PY'
import collections, json, sys
from pathlib import Path
import slo_gate
samples = slo_gate.read_jtl(Path(sys.argv[1]))
count = collections.Counter(s.label for s in samples)
failed = collections.Counter(s.label for s in samples if not s.success)
first = {s.label: s.failure_message for s in samples if not s.success}
print(dict(count))
for label in ("notes", "note_put", "note_post", "note_patch", "note_delete"):
    assert count[label] > 0 and failed[label] == 0, (label, count[label], failed[label], first.get(label))
for label, message in (("wrong_body", "text expected to contain"), ("wrong_status", "code expected to match")):
    assert count[label] > 0 and failed[label] == count[label], (label, count[label], failed[label])
    assert message in first[label], (label, first[label])
assert abs(count["notes"] / count["note_put"] - 2) < 0.05, "weight 2 against weight 1"
# what the stub received: per route, the method, path, content type and body, and how many
seen = {(r["method"], r["path"]): r for r in json.load(open(sys.argv[2]))}
expect = {
    ("GET", "/api/v1/notes"): ("notes", None, None),
    ("PUT", "/api/v1/notes/7"): ("note_put", "application/json", '{"title":"milk","done":false}'),
    ("POST", "/api/v1/notes"): ("note_post", "application/json", '{"title":"eggs"}'),
    ("PATCH", "/api/v1/notes/7"): ("note_patch", "application/json", '{"done":true}'),
    ("DELETE", "/api/v1/notes/7"): ("note_delete", "application/json", None),
}
for key, (label, content_type, body) in expect.items():
    row = seen[key]
    assert (row["content_type"], row["body"], row["count"]) == (content_type, body, count[label]), (key, row)
PY
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
# the plan reads routes.csv from its own folder: the mounted jmeter/, so /jmeter/routes.csv
mounts = {v["target"]: v["source"] for v in jmeter["volumes"]}
assert mounts.get("/jmeter") == sys.argv[1] + "/jmeter", mounts
assert jmeter["working_dir"] == "/jmeter", jmeter["working_dir"]
command = " ".join(jmeter["command"])
for part in ("rm -rf", "-t load_test.jmx", "-q jmeter.properties", "-l results/results.jtl", "-e -o report"):
    assert part in command, (part, command)
' "$ROOT"
  [ -f "$ROOT/jmeter/routes.csv" ] || die "no jmeter/routes.csv for the container's /jmeter/routes.csv"
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
step "plan against the backend: weights, 0 errors, gate passes" test_plan_against_backend
step "a line added to routes.csv: route sampled, gate passes" test_one_line_covers_a_route
refuses "a listed route without samples fails the gate" "FAIL  route 'ready' has samples \(0\)" \
  python3 "$ROOT/jmeter/slo_gate.py" "$TMP/ok/results.jtl" --routes "$PLUS_READY"
step "a path answering 404 fails the gate" test_gate_fails_on_404
kill "$backend_pid"
wait "$backend_pid" || true
backend_pid=''

step "stub API: path parameters, JSON bodies, route checks" test_methods_and_path_parameters

step "compose: jmeter service is valid, pinned and behind a profile" test_compose_service
step "zero-downtime restart: 0 non-2xx, 0 socket errors" test_zero_downtime_restart

steps_summary loadtest
