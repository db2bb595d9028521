#!/usr/bin/env bash
# Runs load_test.jmx with a local JMeter (2.13 from Debian, or 5.x), then the SLO gate.
#
#   jmeter/run.sh [-Jname=value ...]        e.g. jmeter/run.sh -Jthreads=20 -Jhold=120
#
# Environment: JMETER (the jmeter command, default: jmeter on PATH), OUT (results folder, default
# jmeter/results), SLO (SLO file for the gate and the plan's duration assertion), ROUTES (the routes
# file for the plan and the gate, default jmeter/routes.csv), GATE=0 to skip the gate. Writes
# OUT/results.jtl and OUT/jmeter.log, plus the HTML dashboard in OUT/report with JMeter >= 3.
# The exit code is the gate's: 0 pass, 1 SLO broken, 2 no usable results or a bad routes file.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

HERE="$ROOT/jmeter"
JMETER=${JMETER:-jmeter}
OUT=${OUT:-$HERE/results}
# absolute: JMeter resolves a relative path from the plan's folder, the gate from the current one
ROUTES=$(python3 -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "${ROUTES:-$HERE/routes.csv}")
command -v "$JMETER" >/dev/null || die "no '$JMETER' command: apt-get install jmeter jmeter-http, or set JMETER"

# jmeter_home: the installation folder (bin/jmeter's parent), through symlinks such as Debian's.
jmeter_home() { (cd "$(dirname "$(readlink -f "$(command -v "$JMETER")")")/.." && pwd); }

# jmeter_version HOME: Implementation-Version of the core jar, e.g. 2.13.19691222 or 5.6.3.
jmeter_version() {
  python3 - "$1/lib/ext/ApacheJMeter_core.jar" <<'PY'
import re, sys, zipfile
manifest = zipfile.ZipFile(sys.argv[1]).read("META-INF/MANIFEST.MF").decode()
print(re.search(r"Implementation-Version: *(\S+)", manifest).group(1))
PY
}

# compat_args HOME: -J options that let a JMeter older than 5 load plans with the XStream >= 1.4.18
# its distribution ships (see compat/XStreamPermissions.java). Builds the shim once into .tools/.
compat_args() {
  local home=$1 dir="$TOOLS/jmeter-compat" src="$HERE/compat/XStreamPermissions.java"
  if [ ! -f "$dir/jmetercompat/XStreamPermissions.class" ] || [ "$src" -nt "$dir/jmetercompat/XStreamPermissions.class" ]; then
    local xstream
    xstream=$(find /usr/share/java "$home/lib" -maxdepth 1 -name 'xstream*.jar' 2>/dev/null | head -n 1)
    [ -n "$xstream" ] || die "no xstream jar next to JMeter in $home"
    command -v javac >/dev/null || die "javac is needed once for the JMeter < 5 shim: apt-get install default-jdk-headless"
    log "jmeter: compiling the XStream shim for JMeter < 5"
    mkdir -p "$dir"
    javac -Xlint:-path --release 8 -cp "$xstream" -d "$dir" "$src"
  fi
  # JMeter reads saveservice_properties relative to its home, so pass a path relative to it.
  { cat "$home/bin/saveservice.properties"; printf '\n_jmetercompat.XStreamPermissions=collection\n'; } >"$dir/saveservice.properties"
  printf '%s\n' "-Jsaveservice_properties=/$(python3 -c 'import os,sys; print(os.path.relpath(*sys.argv[1:]))' "$dir/saveservice.properties" "$home")" \
    "-Juser.classpath=$dir"
}

# slo_threshold_ms: the latency threshold of the SLO file the gate judges by, for the plan's duration
# assertion (the plan's own default is for runs without this script, e.g. compose).
slo_threshold_ms() {
  PYTHONPATH="$HERE" python3 - ${SLO:+"$SLO"} <<'PY'
import sys
from pathlib import Path
import slo_gate
try:
    slo = slo_gate.load_slo(Path(sys.argv[1]) if len(sys.argv) > 1 else slo_gate.DEFAULT_SLO)
except slo_gate.InputError as err:
    sys.exit(f"slo-gate: FAIL: {err}")
print(round(slo.latency_threshold_ms))  # whole milliseconds, as the assertion takes them
PY
}

# check_routes: the routes file is what the plan expects, before JMeter spends a run on it (JMeter
# would silently reuse the previous line's values for a short line). Prints "label x weight" pairs.
check_routes() {
  PYTHONPATH="$HERE" python3 - "$ROUTES" <<'PY'
import sys
from pathlib import Path
import slo_gate
try:
    routes = slo_gate.load_routes(Path(sys.argv[1]))
except slo_gate.InputError as err:
    sys.exit(f"slo-gate: FAIL: {err}")
print(" ".join(f"{r.label} x{r.weight}" for r in routes))
PY
}

for arg in "$@"; do
  case $arg in -Jroutes=*) die "set ROUTES=file rather than -Jroutes, so that the gate judges the same routes" ;; esac
done
routes=$(check_routes) || exit 2
home=$(jmeter_home)
version=$(jmeter_version "$home")
threshold_ms=$(slo_threshold_ms) || exit 2
args=(-n -t "$HERE/load_test.jmx" -q "$HERE/jmeter.properties" -l "$OUT/results.jtl" -j "$OUT/jmeter.log"
  -Jlatency_threshold_ms="$threshold_ms" -Jroutes="$ROUTES")
if [ "${version%%.*}" -lt 5 ]; then
  mapfile -t -O ${#args[@]} args < <(compat_args "$home")
fi
if [ "${version%%.*}" -ge 3 ]; then
  args+=(-e -o "$OUT/report")  # HTML dashboard; JMeter requires a missing or empty folder
fi

# JMeter appends to an existing .jtl and refuses a non-empty report folder: start clean.
rm -rf "$OUT/results.jtl" "$OUT/jmeter.log" "$OUT/report"
mkdir -p "$OUT"
log "jmeter $version, routes: $routes"
log "jmeter $version: ${args[*]} $*"
"$JMETER" "${args[@]}" "$@"

# JMeter exits 0 even when the plan did not load: the gate reports a missing or empty .jtl.
if grep -q 'ERROR.*NonGUIDriver' "$OUT/jmeter.log" 2>/dev/null; then
  grep -m 3 'ERROR' "$OUT/jmeter.log" >&2
fi
[ "${GATE:-1}" = 0 ] && exit 0
exec python3 "$HERE/slo_gate.py" "$OUT/results.jtl" ${SLO:+--slo "$SLO"} --routes "$ROUTES"
