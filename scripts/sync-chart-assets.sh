#!/usr/bin/env bash
# Copies the Prometheus rules and Grafana dashboards from monitoring/ into the Helm chart, which
# cannot read files outside its own directory. monitoring/ is the source; the chart holds copies.
#
#   scripts/sync-chart-assets.sh          copy (adds, updates and removes files)
#   scripts/sync-chart-assets.sh --check  change nothing; exit 1 and list the drift, if any
#
# scripts/test-deploy.sh runs --check, so a rule or dashboard edited in monitoring/ without a
# sync fails the tests.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHART_FILES="$ROOT/deploy/charts/$SERVICE/files"
# source dir | file pattern | chart dir
ASSETS=(
  "monitoring/prometheus/rules|*.yml|prometheus/rules"
  "monitoring/grafana/dashboards|*.json|grafana/dashboards"
)

mode=sync
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) die "usage: $0 [--check]" ;;
esac

[ -d "$CHART_FILES" ] || die "no chart at ${CHART_FILES%/files}: the chart's directory is named after the service ($SERVICE)"
drift=0
for asset in "${ASSETS[@]}"; do
  IFS='|' read -r src pattern dest <<<"$asset"
  src="$ROOT/$src"
  dest="$CHART_FILES/$dest"
  [ "$mode" = check ] || mkdir -p "$dest"  # --check changes nothing, not even a directory
  # Source files must be present and equal in the chart.
  shopt -s nullglob
  for file in "$src"/$pattern; do
    name=$(basename "$file")
    if ! cmp -s "$file" "$dest/$name"; then
      if [ "$mode" = check ]; then
        echo "drift: ${dest#"$ROOT/"}/$name differs from ${file#"$ROOT/"} (or is missing)" >&2
        drift=1
      else
        cp "$file" "$dest/$name"
        log "copied ${file#"$ROOT/"}"
      fi
    fi
  done
  # Chart copies whose source is gone must go too.
  for copy in "$dest"/$pattern; do
    name=$(basename "$copy")
    if [ ! -f "$src/$name" ]; then
      if [ "$mode" = check ]; then
        echo "drift: ${copy#"$ROOT/"} has no source in ${src#"$ROOT/"}/" >&2
        drift=1
      else
        rm "$copy"
        log "removed ${copy#"$ROOT/"}"
      fi
    fi
  done
  shopt -u nullglob
done

if [ "$mode" = check ] && [ "$drift" -ne 0 ]; then
  echo "run scripts/sync-chart-assets.sh to copy monitoring/ into the chart" >&2
  exit 1
fi
exit 0
