#!/usr/bin/env bash
# The game day (`make gameday`): every failure a user of the compose stack will meet, injected
# into real processes, and the proof that the right alert reaches a person in time. Three
# release replicas behind nginx (deploy/compose/nginx.conf), Prometheus, Alertmanager, the
# webhook receiver and the blackbox exporter, run with the repository's files unchanged and found
# through a real DNS server that answers like Docker's; one such stack per group of scenarios,
# side by side, each in its own namespaces. Guide: monitoring/gameday/README.md.
#
#   scripts/gameday.sh                               every stack (about 13 minutes, 2 cores)
#   GAMEDAY_STACKS=replicas,outage scripts/gameday.sh  some of them (names: monitoring/gameday/scenarios.py)
#
# Needs root (namespaces, bind mounts inside them) and only the loopback. Installs what it needs
# through scripts/lib.sh. Prints the table of measured times, writes it to
# target/gameday/latest/results.{md,json}, and ends with `gameday: N passed, M failed` (exit 1 on
# any failure).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PYYAML_VERSION=6.0.3
GAMEDAY_DEADLINE=${GAMEDAY_DEADLINE:-780}  # seconds each stack may run (the longest needs ~12 min)
WORKDIR="${CARGO_TARGET_DIR:-$ROOT/target}/gameday"

# Root for the namespaces and bind mounts: directly, or through sudo (GitHub's runners); the
# build and the tools stay the invoking user's.
if [ "$(id -u)" = 0 ]; then
  as_root_env() { "$@"; }
elif sudo -n true 2>/dev/null; then
  as_root_env() { sudo -n --preserve-env env PATH="$PATH" "$@"; }
else
  die "the game day needs root (or passwordless sudo): it creates namespaces and bind-mounts inside them"
fi

log "tools"
# dnsmasq-base: the DNS server's binary without Debian's system service (which would start a
# resolver on the host's port 53 at install); bind9-dnsutils: dig.
apt_install dnsmasq-base bind9-dnsutils iproute2 util-linux nginx prometheus prometheus-alertmanager \
  prometheus-blackbox-exporter python3 python3-venv
pip_install "PyYAML==$PYYAML_VERSION"
PY="$VENV/bin/python"

STEP_LOGS=$(mktemp -d)
trap 'rm -rf "$STEP_LOGS"' EXIT

step "game day harness: unit tests (scenario table vs rules, receiver lines, compose mapping)" \
  "$PY" -m unittest discover -s monitoring/gameday -p 'test_*.py'
# Steps run in a subshell: the binary's path comes back as the last line of the step's log.
step "build the service (cargo build --release)" backend_bin release
binary=$(tail -n 1 "$STEP_LOG")

if [ ${#STEPS_FAILED[@]} -eq 0 ]; then
  log "game day: stacks side by side, each stops by itself within ${GAMEDAY_DEADLINE}s"
  stacks=()
  [ -z "${GAMEDAY_STACKS:-}" ] || stacks=(--stacks "$GAMEDAY_STACKS")
  # Its own deadlines stop every stack; `timeout` is the last resort (SIGTERM: it stops them too).
  as_root_env timeout --signal=TERM --kill-after=60 $((GAMEDAY_DEADLINE + 120)) \
    "$PY" monitoring/gameday/gameday.py --binary "$binary" --workdir "$WORKDIR" \
    --deadline "$GAMEDAY_DEADLINE" "${stacks[@]}" | grep -v '^gameday: ' || true
  # The table's rows count as the steps here: one line for the whole run.
  results="$WORKDIR/latest/results.json"
  if [ -f "$results" ] && [ "$results" -nt "$STEP_LOGS" ]; then
    mapfile -t failed_rows < <("$PY" -c 'import json, sys
for r in json.load(open(sys.argv[1]))["rows"]:
    print(("+ " if r["passed"] else "- ") + r["scenario"])' "$results")
    for row in "${failed_rows[@]}"; do
      case $row in
        "+ "*) STEPS_PASSED=$((STEPS_PASSED + 1)) ;;
        *) STEPS_FAILED+=("game day: ${row#- }") ;;
      esac
    done
  else
    STEPS_FAILED+=("game day: no results (see the output above)")
  fi
fi

steps_summary gameday
