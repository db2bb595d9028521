#!/usr/bin/env bash
# Tests the fork path (issue G), as a user meets it: `make rename NAME=...` in a fresh clone.
#
#   template/test.sh              (make test-template; FORK_NAME=orders-api by default)
#
# 1. here: the rename tool's unit tests, the spelling check (every use of the name can be renamed
#    for certain) and the name-consistency check (template/check_name.py);
# 2. a clean copy of this tree (tracked and new files, committed in a throwaway git repository,
#    like a fresh clone): bad names are refused with nothing changed; a partial rename by hand
#    (crate, chart, compose, Prometheus job) is caught by the consistency check;
# 3. `make rename NAME=$FORK_NAME` on that copy, then on the renamed copy: no identifier of the
#    old name left, a second run changes nothing, the consistency check, the Rust tests, the
#    binary serving under its new name, the static monitoring suite (promtool rules and tests,
#    amtool, compose config, dashboards), the whole deploy suite (helm lint/template,
#    kubernetes-validate, chart tests, checkov, actionlint, zizmor);
# 4. the first-endpoint fixture (template/fixtures/first-endpoint.patch, the example of
#    docs/architecture.md) applied to the renamed copy: the Rust tests again, and a short load
#    test of the renamed binary that covers the new route through its one jmeter/routes.csv line.
# The copy shares this tree's cargo target directory and tools, so only the renamed crate is
# built again. Ends with `template: N passed, M failed`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"

FORK_NAME=${FORK_NAME:-orders-api}
[ "$FORK_NAME" != "$SERVICE" ] || FORK_NAME=billing-api  # the test needs a name unlike the current one
FORK_SNAKE=${FORK_NAME//-/_}

log "tools"
apt_install git python3-venv curl jmeter jmeter-http default-jdk-headless
pip_install "PyYAML==6.0.3"
PY="$VENV/bin/python"

WORK=$(mktemp -d)
STEP_LOGS="$WORK/logs"
mkdir -p "$STEP_LOGS"
FORK="$WORK/fork"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" TOOLS  # shared with the copy
serve_pid=''
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
  if [ ${#STEPS_FAILED[@]} -eq 0 ]; then rm -rf "$WORK"; else echo "logs and the renamed copy kept in $WORK" >&2; fi
}
trap cleanup EXIT

# fork_git ARGS...: git in the copy, with an identity of its own.
fork_git() { git -C "$FORK" -c user.name=template-test -c user.email=template-test@localhost "$@"; }

# make_fork: this tree's tracked and new files, committed in a new repository (a fresh clone).
make_fork() {
  rm -rf "$FORK" && mkdir -p "$FORK"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && cp --parents -P -- "$f" "$FORK/"
  done
  fork_git init -q && fork_git add -A && fork_git commit -qm "fresh clone"
  echo "copy of $(fork_git ls-files | wc -l) files in $FORK"
}

# unchanged: the copy's tree is exactly its last commit (no change, no new file).
unchanged() {
  local status
  status=$(fork_git status --porcelain --untracked-files=all)
  [ -z "$status" ] || { echo "the tree changed:"; echo "$status"; return 1; }
}

# refused NAME PATTERN: `make rename` refuses NAME with a message matching PATTERN, changing nothing.
refused() {
  fails_matching "$2" make -C "$FORK" --no-print-directory rename NAME="$1"
  unchanged
}

# partial_rename_is_caught: what a rename by hand usually covers (crate, chart, compose service,
# Prometheus job) while every rule, test and dashboard keeps job="<old>": every alert would be
# dead, and the consistency check must say so.
partial_rename_is_caught() {
  (
    cd "$FORK"
    sed -i "s/^name = \"$SERVICE\"/name = \"$FORK_NAME\"/" app/Cargo.toml
    sed -i "s/^  $SERVICE:/  $FORK_NAME:/" docker-compose.yml
    sed -i "s/job_name: $SERVICE\$/job_name: $FORK_NAME/; s/names: \[\"$SERVICE\"\]/names: [\"$FORK_NAME\"]/" \
      monitoring/prometheus/prometheus.yml
    mv "deploy/charts/$SERVICE" "deploy/charts/$FORK_NAME"
    sed -i "s/^name: $SERVICE\$/name: $FORK_NAME/" "deploy/charts/$FORK_NAME/Chart.yaml"
  )
  fails_matching "job '$SERVICE' is not a Prometheus scrape job" "$PY" "$FORK/template/check_name.py"
  fork_git checkout -q -- . && fork_git clean -fdq && unchanged
}

# sync_check_creates_nothing: with the chart's directory under another name, the copy check of
# monitoring/ into the chart fails, saying where it looked, and leaves no stray directory behind.
sync_check_creates_nothing() {
  mv "$FORK/deploy/charts/$SERVICE" "$WORK/chart-aside"
  fails_matching "no chart at .*deploy/charts/$SERVICE" "$FORK/scripts/sync-chart-assets.sh" --check
  [ ! -e "$FORK/deploy/charts/$SERVICE" ] || { echo "--check created deploy/charts/$SERVICE"; return 1; }
  mv "$WORK/chart-aside" "$FORK/deploy/charts/$SERVICE" && unchanged
}

do_rename() {
  make -C "$FORK" --no-print-directory rename NAME="$FORK_NAME" | tee "$WORK/rename.out"
  ! unchanged >/dev/null
}

# no_leftovers: no file or path of the copy still names the old service, in any spelling, but a
# line marked `rename: keep` or a foreign camelCase field (Gateway API's backendRefs); LICENSE
# and template/ (the rename's own machinery) are left alone on purpose.
no_leftovers() {
  local files hits
  fork_git add -A  # the index then lists the files as they are now, moves included
  files=$(fork_git ls-files | grep -v -e '^LICENSE$' -e '^template/')
  hits=$(cd "$FORK" && { tr '\n' '\0' <<<"$files" | xargs -0 grep -niI -- "$SERVICE" | grep -v 'rename: keep' \
    | grep -vE "${SERVICE}[A-Z]" || true; })
  [ -z "$hits" ] || { echo "identifiers of '$SERVICE' left:"; echo "$hits"; return 1; }
  ! grep -i -- "$SERVICE" <<<"$files" || { echo "paths still named '$SERVICE'"; return 1; }
  echo "no '$SERVICE' left in $(wc -l <<<"$files") files"
}

rename_is_idempotent() {
  local before after
  fork_git add -A && before=$(fork_git write-tree)
  make -C "$FORK" --no-print-directory rename NAME="$FORK_NAME" | tee "$WORK/rename-again.out"
  grep -q "already named '$FORK_NAME'" "$WORK/rename-again.out"
  fork_git add -A && after=$(fork_git write-tree)
  [ "$before" = "$after" ] || { echo "the second run changed the tree"; return 1; }
}

fork_rust_tests() { (cd "$FORK" && cargo nextest run --locked --workspace --no-fail-fast); }

# serves_under_new_name: the renamed binary answers on its endpoints, names itself and logs its
# requests under the new crate's target.
serves_under_new_name() {
  local bin="$CARGO_TARGET_DIR/debug/$FORK_NAME" port metrics log="$WORK/serve.log"
  "$bin" --version | grep -qx "$FORK_NAME [0-9.]*" || { "$bin" --version; return 1; }
  port=$(free_port) metrics=$(free_port)
  APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT=$port APP__METRICS__HOST=127.0.0.1 APP__METRICS__PORT=$metrics \
    APP__SHUTDOWN__DRAIN_DELAY=0s "$bin" >"$log" 2>&1 &
  serve_pid=$!
  wait_http "http://127.0.0.1:$port/api/v1/health" 10
  [ "$(curl -fsS "http://127.0.0.1:$port/api/v1/health")" = '{"success":true}' ]
  curl -fsS "http://127.0.0.1:$port/api/v1/info" | grep -q '"version"'
  curl -fsS "http://127.0.0.1:$metrics/metrics" | grep -q '^http_requests_total{.*endpoint="/api/v1/info"'
  kill -TERM "$serve_pid" && wait "$serve_pid" && serve_pid=''
  grep -q "\"target\":\"$FORK_SNAKE::http\"" "$log" || { echo "no request log line under $FORK_SNAKE::http:"; cat "$log"; return 1; }
  echo "$FORK_NAME served /api/v1/health, /api/v1/info and /metrics, logging as $FORK_SNAKE::http"
}

fork_suite() { (cd "$FORK" && "$@"); }

first_endpoint_applies() { fork_git apply --verbose "$FORK/template/fixtures/first-endpoint.patch"; }

# first_endpoint_under_load: the fixture's one line in jmeter/routes.csv is all the load test
# needs: a short JMeter run against the renamed binary samples the new route, and the SLO gate
# judges it on its own samples (it fails when a listed route has none).
first_endpoint_under_load() {
  local bin="$CARGO_TARGET_DIR/debug/$FORK_NAME" port out="$WORK/jmeter"
  port=$(free_port)
  APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT=$port APP__METRICS__HOST=127.0.0.1 \
    APP__METRICS__PORT="$(free_port)" APP__SHUTDOWN__DRAIN_DELAY=0s APP__LOG__LEVEL=warn "$bin" >"$WORK/load.log" 2>&1 &
  serve_pid=$!
  wait_http "http://127.0.0.1:$port/api/v1/health" 10
  OUT="$out" "$FORK/jmeter/run.sh" -Jhost=127.0.0.1 -Jport="$port" -Jthreads=2 -Jrampup=1 -Jhold=5 -Jrps=100
  kill -TERM "$serve_pid" && wait "$serve_pid" && serve_pid=''
  grep -q ',note_put,' "$out/results.jtl" || { echo "no note_put samples in $out/results.jtl"; return 1; }
}

log "here"
step "rename tool: unit tests" python3 -m unittest discover -s template -p 'test_*.py'
step "every spelling of '$SERVICE' can be renamed for certain" python3 template/rename.py --check
step "the name agrees everywhere (template/check_name.py)" "$PY" template/check_name.py

log "a fresh copy of this tree"
step "copy this tree into a new repository" make_fork
step "refuses an uppercase name, changing nothing" refused Orders "DNS-1123"
step "refuses an underscore, changing nothing" refused orders_api "DNS-1123"
step "refuses a leading digit, changing nothing" refused 9lives "DNS-1123"
step "refuses a double hyphen, changing nothing" refused orders--api "DNS-1123"
step "refuses a name too long for derived names, changing nothing" refused "a$(printf 'b%.0s' {1..40})" "at most"
step "refuses a Rust keyword, changing nothing" refused fn "keyword"
step "refuses a word the template already uses (metrics), changing nothing" refused metrics "already used"
step "refuses another compose service's name (prometheus), changing nothing" refused prometheus "already used"
step "a partial rename by hand is caught by the consistency check" partial_rename_is_caught
step "sync-chart-assets.sh --check: no chart, a clear failure and no stray directory" sync_check_creates_nothing

log "make rename NAME=$FORK_NAME, then the suites on the renamed copy"
step "make rename NAME=$FORK_NAME" do_rename
step "no identifier or path of '$SERVICE' left" no_leftovers
step "a second run changes nothing" rename_is_idempotent
step "renamed: the name agrees everywhere" "$PY" "$FORK/template/check_name.py"
step "renamed: Rust tests (nextest)" fork_rust_tests
step "renamed: the binary serves under its new name" serves_under_new_name
step "renamed: monitoring static suite (promtool, amtool, compose, dashboards)" \
  fork_suite env SKIP_LIVE=1 scripts/test-monitoring.sh
step "renamed: deploy suite (helm, kubernetes-validate, chart tests, linters)" fork_suite scripts/test-deploy.sh

log "the first endpoint (docs/architecture.md) on the renamed copy"
step "first-endpoint.patch applies" first_endpoint_applies
step "renamed + first endpoint: Rust tests (nextest)" fork_rust_tests
step "renamed + first endpoint: under load with its one routes.csv line, SLO gate passes" first_endpoint_under_load

steps_summary template
