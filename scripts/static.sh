#!/usr/bin/env bash
# Builds the static (musl) release binary exactly as app/Dockerfile does and checks it:
# statically linked, within the size budget, and it starts and answers its health check.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

target=${1:-x86_64-unknown-linux-musl}
max_bytes=$((5 * 1000 * 1000))   # the image budget allows a 5 MB binary

log "cargo build --release --target $target"
cargo build --locked --release -p backend --target "$target"
bin="$ROOT/target/$target/release/backend"

file "$bin" | grep -Eq 'statically linked|static-pie linked' || die "$bin is not statically linked: $(file "$bin")"
size=$(stat -c %s "$bin")
log "static binary: $size bytes (budget $max_bytes)"
[ "$size" -le "$max_bytes" ] || die "static binary is $size bytes, over the $max_bytes budget"

port=$(free_port) metrics=$(free_port)
APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT=$port APP__METRICS__HOST=127.0.0.1 \
  APP__METRICS__PORT=$metrics APP__SHUTDOWN__DRAIN_DELAY=0s "$bin" >/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
wait_http "http://127.0.0.1:$port/api/v1/health" 10
APP__SERVER__PORT=$port "$bin" healthcheck || die "the static binary's healthcheck failed"
kill -TERM "$pid"
wait "$pid" || die "the static binary did not exit 0 on SIGTERM"
trap - EXIT
log "static binary OK"
