#!/usr/bin/env bash
# Builds the static (musl) release binaries exactly as app/Dockerfile does (cargo auditable
# zigbuild), for both image platforms, and checks them: statically linked, within the size
# budget, carrying the crate list the image's SBOM is made from, serving. The amd64
# binary runs natively (health, `healthcheck`, SIGTERM → exit 0); the arm64 one under
# qemu-user (health and `healthcheck`; qemu-user's signal emulation is not the target's).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

max_bytes=$((5 * 1000 * 1000))   # the image budget allows a 5 MB binary
targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

log "cargo auditable zigbuild --release --target ${targets[*]}"
cargo auditable zigbuild --locked --release -p "$SERVICE" "${targets[@]/#/--target=}"

# serve BIN [RUNNER]: starts BIN on free loopback ports; sets $pid and $port.
serve() {
  port=$(free_port)
  APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT=$port APP__METRICS__HOST=127.0.0.1 \
    APP__METRICS__PORT=$(free_port) APP__SHUTDOWN__DRAIN_DELAY=0s "${@:2}" "$1" >/dev/null &
  pid=$!
}

for target in "${targets[@]}"; do
  bin="$ROOT/target/$target/release/$SERVICE"
  file "$bin" | grep -Eq 'statically linked|static-pie linked' || die "$bin is not static: $(file "$bin")"
  size=$(stat -c %s "$bin")
  log "$target: $size bytes (budget $max_bytes)"
  [ "$size" -le "$max_bytes" ] || die "$target binary is $size bytes, over the $max_bytes budget"
  # The .dep-v0 section syft reads for the SBOM: every crate of Cargo.lock the binary links.
  python3 "$ROOT/deploy/tests/test_delivery.py" --audit-data "$bin" || die "$target: no usable crate list"

  runner=()
  [ "$target" = aarch64-unknown-linux-musl ] && runner=(qemu-aarch64-static)
  serve "$bin" "${runner[@]}"
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  wait_http "http://127.0.0.1:$port/api/v1/info" 20
  APP__SERVER__PORT=$port "${runner[@]}" "$bin" healthcheck || die "$target: healthcheck failed"
  if [ ${#runner[@]} -eq 0 ]; then
    kill -TERM "$pid"
    wait "$pid" || die "$target: no clean exit on SIGTERM"
  else
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  trap - EXIT
done
log "static binaries OK"
