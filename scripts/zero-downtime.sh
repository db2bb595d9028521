#!/usr/bin/env bash
# Zero-downtime restart proof: two backend instances behind a local nginx on 127.0.0.1, wrk load
# through nginx, and each instance in turn gets SIGTERM, exits and is started again. Passes when
# the clients saw no non-2xx response and no socket error, and each instance exited 0.
#
#   scripts/zero-downtime.sh            (BIN=path/to/backend to skip the release build)
#
# Environment: ZD_CONNECTIONS (wrk connections, default 16), ZD_DRAIN_DELAY (the backend's
# APP__SHUTDOWN__DRAIN_DELAY, default 5s as in production), ZD_FAIL_TIMEOUT (nginx fail_timeout,
# seconds, default 2), KEEP_TMP=1 to keep the logs. Why it works: docs/load-testing.md.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

apt_install nginx wrk curl
BIN=${BIN:-$(backend_bin release)}
CONNECTIONS=${ZD_CONNECTIONS:-16}
DRAIN_DELAY=${ZD_DRAIN_DELAY:-5s}
FAIL_TIMEOUT=${ZD_FAIL_TIMEOUT:-2}
MAX_LOAD_SECONDS=120 # upper bound of the load; it is stopped as soon as both restarts are done

TMP=$(mktemp -d)
chmod 755 "$TMP" # nginx workers drop root and must reach their temp folders
declare -a api metrics pid
nginx_pid='' wrk_pid=''

cleanup() {
  local p
  for p in "$wrk_pid" "${pid[@]}" "$nginx_pid"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# start_backend I: runs instance I on its ports, logging to $TMP/backend-I.log.
start_backend() {
  local i=$1
  APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT=${api[i]} \
    APP__METRICS__HOST=127.0.0.1 APP__METRICS__PORT=${metrics[i]} \
    APP__SHUTDOWN__DRAIN_DELAY=$DRAIN_DELAY \
    "$BIN" >>"$TMP/backend-$i.log" 2>&1 &
  pid[i]=$!
  wait_http "http://127.0.0.1:${api[i]}/api/v1/health" 10
}

# proxied_requests I: /api/v1/info requests instance I has answered since it started (all come
# through nginx: the script itself only calls /health and /ready directly).
proxied_requests() {
  curl -fsS --max-time 2 "http://127.0.0.1:${metrics[$1]}/metrics" |
    awk '/^http_requests_total\{.*endpoint="\/api\/v1\/info"/ { n += $NF } END { print n + 0 }'
}

# wait_exit PID SECONDS: waits for PID to end and returns its exit status (124 when it lingers).
wait_exit() {
  local p=$1 limit=$2 i
  for ((i = 0; i < limit * 10; i++)); do
    kill -0 "$p" 2>/dev/null || { wait "$p"; return $?; }
    sleep 0.1
  done
  return 124
}

# restart I: SIGTERM, check readiness turned 503, wait for exit 0, start again and wait until
# nginx routes traffic to it (passive health: the first request after fail_timeout).
restart() {
  local i=$1 ready rc=0 served=0 t
  log "instance $i: SIGTERM (drain delay $DRAIN_DELAY)"
  kill -TERM "${pid[i]}"
  for ((t = 0; t < 10; t++)); do # "at once": allow the signal handler a moment
    ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:${api[i]}/api/v1/ready" || true)
    [ "$ready" = 503 ] && break
    sleep 0.05
  done
  [ "$ready" = 503 ] || die "instance $i: /api/v1/ready answered $ready after SIGTERM, expected 503"
  wait_exit "${pid[i]}" 30 || rc=$?
  pid[i]=''
  [ "$rc" = 0 ] || die "instance $i exited with status $rc after SIGTERM, expected 0"
  start_backend "$i"
  for ((t = 0; t < (FAIL_TIMEOUT + 10) * 10 && served == 0; t++)); do
    sleep 0.1
    served=$(proxied_requests "$i")
  done
  [ "$served" -gt 0 ] || die "instance $i: back up, but nginx sent it no traffic"
  log "instance $i: restarted and serving again"
}

for i in 0 1; do api[i]=$(free_port); metrics[i]=$(free_port); start_backend "$i"; done
port=$(free_port)
sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|$port|g" -e "s|@PORT_A@|${api[0]}|g" -e "s|@PORT_B@|${api[1]}|g" \
  -e "s|@FAIL_TIMEOUT@|$FAIL_TIMEOUT|g" "$ROOT/scripts/zero-downtime.nginx.conf" >"$TMP/nginx.conf"
nginx_args=(-p "$TMP" -e "$TMP/error.log" -c "$TMP/nginx.conf")
nginx "${nginx_args[@]}" -t -q
nginx "${nginx_args[@]}" -g 'daemon off;' &
nginx_pid=$!
wait_http "http://127.0.0.1:$port/api/v1/health" 10

log "load: wrk, $CONNECTIONS connections, GET /api/v1/info through nginx :$port"
started=$SECONDS
wrk -t 2 -c "$CONNECTIONS" -d "${MAX_LOAD_SECONDS}s" --timeout 5s \
  "http://127.0.0.1:$port/api/v1/info" >"$TMP/wrk.txt" 2>&1 &
wrk_pid=$!
sleep 2
restart 0
restart 1
sleep 2
kill -INT "$wrk_pid" # wrk prints its results on SIGINT
wait_exit "$wrk_pid" 10 || die "wrk did not stop: $(cat "$TMP/wrk.txt")"
wrk_pid=''
kill -QUIT "$nginx_pid" # graceful stop flushes the access log
wait_exit "$nginx_pid" 10 || die "nginx did not stop"
nginx_pid=''
elapsed=$((SECONDS - started))

cat "$TMP/wrk.txt" >&2
requests=$(awk '/requests in/ { print $1 }' "$TMP/wrk.txt")
non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$TMP/wrk.txt")
socket=$(awk '/Socket errors/ { for (i = 3; i <= NF; i++) n += $i; print n }' "$TMP/wrk.txt")
non2xx=${non2xx:-0} socket=${socket:-0} # wrk prints these lines only when they are not zero
# From nginx, in one pass: requests answered with another status; requests retried on the other
# instance; 499s, requests wrk abandoned in flight when it was stopped (at most one per connection);
# then, per instance, the requests it answered last (the rest of the line).
read -r logged bad retried abandoned by_instance < <(awk -F'|' '{ n++; k = split($2, u, ", "); last[u[k]]++ }
  $1 == 499 { a++; next } $1 !~ /^2/ { bad++ } $2 ~ /,/ { r++ }
  END { printf "%d %d %d %d", n, bad, r, a; for (i in last) printf " %s=%d", i, last[i]; print "" }' "$TMP/access.log")

printf 'zero-downtime: %s requests in %ss, %s non-2xx, %s socket errors; nginx: %s logged, %s non-2xx, %s retried on the other instance, %s abandoned by wrk at stop; served by %s\n' \
  "$requests" "$elapsed" "$non2xx" "$socket" "$logged" "$bad" "$retried" "$abandoned" "$by_instance"
[ "${requests:-0}" -gt 0 ] || die "wrk sent no requests"
if [ "$non2xx" != 0 ] || [ "$socket" != 0 ] || [ "$bad" != 0 ] || [ "$abandoned" -gt "$CONNECTIONS" ]; then
  awk -F'|' '$1 !~ /^2/ { print $1 }' "$TMP/access.log" | sort | uniq -c >&2
  die "clients saw errors during the restarts (KEEP_TMP=1 keeps $TMP for error.log and the logs)"
fi
