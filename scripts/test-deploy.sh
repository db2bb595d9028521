#!/usr/bin/env bash
# Tests the delivery side: the Helm chart, the Argo CD objects, the GitHub workflows.
#
#   scripts/test-deploy.sh
#
# Installs its pinned tools (deploy/tests/tools.sh), then: helm lint and template for the
# defaults, an all-features-on file and each environment; helm install --dry-run=client;
# values.schema.json and template guards refusing bad values; kubernetes-validate --strict
# against Kubernetes 1.29 and 1.35; JSON-schema checks of the CRD objects and assertions on the
# rendered YAML (deploy/tests/test_chart.py); the real app (dev build) started with each
# rendering's settings; the monitoring/ -> chart copy drift check;
# checkov; actionlint, zizmor, yamllint, shellcheck. Ends with `deploy: N passed, M failed`
# and exits non-zero on any failure. Logs of every step go to $DEPLOY_TEST_OUT (default: a temp
# dir, kept only when something failed).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=deploy/tests/tools.sh
source "$ROOT/deploy/tests/tools.sh"

CHART="$ROOT/deploy/charts/$SERVICE"
KUBE_VERSIONS=(1.29.0 1.35.0)
# Renderings: name -> values file on top of the defaults (relative to the chart).
declare -A VALUES_FILE=(
  [default]=""
  [all-on]=ci/all-on-values.yaml
  [staging]=values-staging.yaml
  [production]=values-production.yaml
)
RENDERINGS=(default all-on staging production)

# Logs and renderings; a temporary directory is removed after a green run, kept after a red one.
OUT="${DEPLOY_TEST_OUT:-$(mktemp -d)}"
KEEP_OUT=${DEPLOY_TEST_OUT:+yes}
mkdir -p "$OUT/renders" "$OUT/logs"
STEP_LOGS="$OUT/logs"  # lib.sh's `step` writes one log per step here

values_args() { # NAME: the -f argument for rendering NAME, if any
  [ -z "${VALUES_FILE[$1]}" ] || printf '%s\0' -f "$CHART/${VALUES_FILE[$1]}"
}

helm_template() { # NAME: renders into $OUT/renders/NAME.yaml
  local args=()
  mapfile -d '' args < <(values_args "$1")
  helm template "$SERVICE" "$CHART" --namespace "$SERVICE-test" --kube-version "${KUBE_VERSIONS[0]}" \
    "${args[@]}" >"$OUT/renders/$1.yaml"
}

helm_lint() { # NAME
  local args=()
  mapfile -d '' args < <(values_args "$1")
  helm lint --strict "$CHART" --kube-version "${KUBE_VERSIONS[0]}" "${args[@]}"
}

# The dashboard template, exercised with a fixture whatever monitoring/grafana/dashboards holds.
render_fixture() {
  local copy="$OUT/fixture-chart"
  rm -rf "$copy" && cp -r "$CHART" "$copy"
  mkdir -p "$copy/files/grafana/dashboards"
  printf '{"title": "Fixture", "uid": "fixture", "panels": [], "schemaVersion": 39}\n' \
    >"$copy/files/grafana/dashboards/fixture_dashboard.json"
  helm template "$SERVICE" "$copy" --set dashboards.enabled=true >"$OUT/renders/fixture.yaml"
}

kube_validate() { # VERSION FILE
  "$DEPLOY_VENV/bin/kubernetes-validate" --strict --quiet -k "$1" "$2"
}

# kubernetes-validate must reject an unknown field, or its passes mean nothing.
kube_validate_rejects_unknown_field() {
  local bad="$OUT/renders/negative-control.yaml"
  printf 'apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], typo: 1}\n' >"$bad"
  ! kube_validate "${KUBE_VERSIONS[0]}" "$bad"
}

# app_starts_with_rendered_settings NAME: the real backend (dev build) starts with the APP__
# settings of rendering NAME's ConfigMap (the app exits 1 on an unknown key or a bad value) and
# answers on the probe paths and the metrics path. Ports are moved to free local ones and the
# listeners to 127.0.0.1, so nothing listens beyond this machine. A subshell: wait_http may die.
app_starts_with_rendered_settings() (
  local settings=() api metrics pid
  mapfile -d '' settings < <("$DEPLOY_VENV/bin/python" "$ROOT/deploy/tests/test_chart.py" --settings "$OUT/renders/$1.yaml")
  [ ${#settings[@]} -gt 0 ] || { echo "no settings ConfigMap in $1"; return 1; }
  api=$(free_port)
  metrics=$(free_port)
  env -i PATH="$PATH" "${settings[@]}" APP__SERVER__HOST=127.0.0.1 APP__SERVER__PORT="$api" \
    APP__METRICS__HOST=127.0.0.1 APP__METRICS__PORT="$metrics" "$BINARY" &
  pid=$!
  trap 'kill -KILL "$pid" 2>/dev/null || true' EXIT
  wait_http "http://127.0.0.1:$api/api/v1/health" 10
  curl -fsS -o /dev/null "http://127.0.0.1:$api/api/v1/ready"
  # /api/v1/info discloses the host: production turns it off (docs/contract.md).
  local info expected=200
  [ "$1" != production ] || expected=404
  info=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api/api/v1/info")
  [ "$info" = "$expected" ] || { echo "$1: /api/v1/info answered $info, not $expected"; return 1; }
  local exposition
  exposition=$(curl -fsS "http://127.0.0.1:$metrics/metrics")
  grep -q '^build_info' <<<"$exposition" || { echo "no build_info on /metrics"; return 1; }
)

checkov_scan() { # FRAMEWORKS(comma-separated) PATH...: every framework must report results
  local output status=0 framework frameworks=()
  IFS=, read -ra frameworks <<<"$1"
  shift
  local args=()
  for path in "$@"; do args+=(-f "$path"); done
  output=$("$CHECKOV_VENV/bin/checkov" --config-file "$ROOT/deploy/checkov.yaml" --framework "${frameworks[@]}" \
    "${args[@]}" 2>&1) || status=$?
  echo "$output"
  for framework in "${frameworks[@]}"; do
    grep -q "^$framework scan results" <<<"$output" || { echo "checkov scanned nothing as $framework"; return 1; }
  done
  return "$status"
}

# checkov with this repository's config must still fail an insecure pod, or its passes mean nothing.
checkov_rejects_insecure_pod() {
  local bad="$OUT/renders/insecure-pod.yaml"
  printf '%s\n' 'apiVersion: v1' 'kind: Pod' 'metadata: {name: insecure}' \
    'spec: {containers: [{name: c, image: "busybox:1.36", securityContext: {privileged: true}}]}' >"$bad"
  ! "$CHECKOV_VENV/bin/checkov" --config-file "$ROOT/deploy/checkov.yaml" --framework kubernetes -f "$bad"
}

run_actionlint() { # actionlint finds .github/workflows from the working directory
  (cd "$ROOT" && "$DEPLOY_VENV/bin/actionlint" -color=false)
}

run_shellcheck() { # from the root, where the `# shellcheck source=` paths resolve
  (cd "$ROOT" && shellcheck -x scripts/test-deploy.sh scripts/sync-chart-assets.sh deploy/tests/tools.sh)
}

# python_checks SCRIPT [ARG...]: runs deploy/tests/SCRIPT, which prints `PASS name` / `FAIL name:
# why` per check and a `RESULT passed=N failed=M` line; each check counts as one step.
python_checks() {
  local script=$1 log="$OUT/logs/$1.log"
  shift
  "$DEPLOY_VENV/bin/python" "$ROOT/deploy/tests/$script" "$@" >"$log" || true
  sed '/^RESULT/d; s/^/  /' "$log"
  if [[ $(grep '^RESULT' "$log") =~ passed=([0-9]+) ]]; then
    STEPS_PASSED=$((STEPS_PASSED + BASH_REMATCH[1]))
    mapfile -t -O "${#STEPS_FAILED[@]}" STEPS_FAILED < <(sed -n "s/^FAIL \([^:]*\):.*/$script: \1/p" "$log")
  else
    STEPS_FAILED+=("$script: no RESULT line")
  fi
}

versions() {
  helm version --template '{{.Version}}'
  echo
  kubectl version --client | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
  printf 'kubernetes-validate %s\n' "$("$DEPLOY_VENV/bin/kubernetes-validate" --version)"
  printf 'checkov %s\n' "$("$CHECKOV_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))')"
  "$DEPLOY_VENV/bin/actionlint" --version | sed -n 1p
  "$DEPLOY_VENV/bin/zizmor" --version
  yamllint --version
  shellcheck --version | sed -n 2p
}

main() {
  local started=$SECONDS
  log "tools"
  deploy_tools
  step "tool versions" versions
  sed 's/^/     /' "$STEP_LOG"

  log "helm lint --strict"
  for name in "${RENDERINGS[@]}"; do
    step "lint: $name" helm_lint "$name"
  done

  log "helm template"
  for name in "${RENDERINGS[@]}"; do
    step "template: $name" helm_template "$name"
  done
  step "template: dashboard fixture" render_fixture
  step "install --dry-run=client (defaults)" \
    helm install "$SERVICE" "$CHART" --namespace "$SERVICE-test" --dry-run=client
  step "install --dry-run=client (all-on)" \
    helm install "$SERVICE" "$CHART" --namespace "$SERVICE-test" --dry-run=client -f "$CHART/ci/all-on-values.yaml"

  log "values.schema.json and template guards refuse bad values"
  refuses "schema refuses a misspelt top-level key (lint)" "additional properties 'replicaCountt'" \
    helm lint --strict "$CHART" --set replicaCountt=3
  refuses "schema refuses a misspelt key (template)" "additional properties 'enabledd'" \
    helm template "$SERVICE" "$CHART" --set autoscaling.enabledd=true
  refuses "schema refuses an unknown APP__ setting" "additional properties 'APP__LOG__LEVL'" \
    helm template "$SERVICE" "$CHART" --set config.APP__LOG__LEVL=debug
  refuses "schema refuses image tag latest" "/image/tag" \
    helm template "$SERVICE" "$CHART" --set image.tag=latest
  refuses "schema refuses an Ingress path for /metrics" "/ingress/hosts/0/paths/0/path" \
    helm template "$SERVICE" "$CHART" --set ingress.enabled=true --set 'ingress.hosts[0].host=a.example.com' \
    --set 'ingress.hosts[0].paths[0].path=/metrics' --set 'ingress.hosts[0].paths[0].pathType=Prefix'
  refuses "template refuses a grace period not above drain + timeout" "must exceed" \
    helm template "$SERVICE" "$CHART" --set config.APP__SHUTDOWN__TIMEOUT=26s
  refuses "template refuses an ExternalSecret with nothing to fetch" "needs externalSecret.data" \
    helm template "$SERVICE" "$CHART" --set externalSecret.enabled=true
  refuses "template refuses a PDB that blocks every drain (1 pod, minAvailable 1)" \
    "podDisruptionBudget.minAvailable .1. must stay below replicaCount .1." \
    helm template "$SERVICE" "$CHART" --set replicaCount=1 --set podDisruptionBudget.minAvailable=1
  refuses "template refuses a PDB that blocks every drain (HPA, minAvailable = minReplicas)" \
    "minAvailable .3. must stay below autoscaling.minReplicas .3." \
    helm template "$SERVICE" "$CHART" --set autoscaling.enabled=true --set autoscaling.minReplicas=3 \
    --set podDisruptionBudget.minAvailable=3
  refuses "template refuses a PDB with maxUnavailable 0" "podDisruptionBudget.maxUnavailable .0. allows no eviction" \
    helm template "$SERVICE" "$CHART" --set podDisruptionBudget.maxUnavailable=0
  refuses "template refuses autoscaling.minReplicas above maxReplicas" \
    "autoscaling.minReplicas .5. must not exceed autoscaling.maxReplicas .4." \
    helm template "$SERVICE" "$CHART" --set autoscaling.enabled=true --set autoscaling.minReplicas=5 \
    --set autoscaling.maxReplicas=4
  refuses "template refuses an HTTPRoute attached to no Gateway" "needs httpRoute.parentRefs" \
    helm template "$SERVICE" "$CHART" --set httpRoute.enabled=true
  refuses "schema refuses an HTTPRoute path for /metrics" "/httpRoute/paths/0/path" \
    helm template "$SERVICE" "$CHART" --set httpRoute.enabled=true --set 'httpRoute.parentRefs[0].name=gw' \
    --set 'httpRoute.paths[0].path=/metrics' --set 'httpRoute.paths[0].type=PathPrefix'

  log "kubernetes-validate --strict (${KUBE_VERSIONS[*]})"
  step "kubernetes-validate rejects an unknown field (negative control)" kube_validate_rejects_unknown_field
  for version in "${KUBE_VERSIONS[@]}"; do
    for name in "${RENDERINGS[@]}"; do
      step "kubernetes-validate $version: $name" kube_validate "$version" "$OUT/renders/$name.yaml"
    done
  done

  log "the real app with each rendering's settings"
  BINARY=$(backend_bin dev)
  for name in "${RENDERINGS[@]}"; do
    step "app starts with the $name settings and answers the probes" app_starts_with_rendered_settings "$name"
  done

  log "operator-style: the chart as the Prometheus Operator and Argo CD run it (real Prometheus, real binaries)"
  apt_install prometheus
  step "operator-style: staging and production scraped, recorded and alerted apart" \
    timeout --signal=TERM --kill-after=20 300 "$DEPLOY_VENV/bin/python" "$ROOT/deploy/tests/operator_e2e.py" \
    --binary "$BINARY" --workdir "$OUT/operator"

  log "assertions on the rendered YAML, CRD schemas, Argo CD, workflows"
  python_checks test_chart.py "$OUT/renders"
  log "release pipeline and supply chain"
  python_checks test_delivery.py

  log "chart copies of monitoring/ (scripts/sync-chart-assets.sh --check)"
  step "rules and dashboards in the chart equal monitoring/" "$ROOT/scripts/sync-chart-assets.sh" --check

  log "checkov (one run: rendered chart, Argo CD objects, Dockerfile, workflows)"
  local scan=() scan_frameworks=kubernetes,github_actions
  for name in "${RENDERINGS[@]}"; do scan+=("$OUT/renders/$name.yaml"); done
  scan+=("$ROOT"/deploy/argocd/*.yaml "$ROOT"/.github/workflows/*.yaml "$ROOT/app/Dockerfile")
  scan_frameworks+=,dockerfile
  step "checkov: ${#scan[@]} files, 0 failed checks" checkov_scan "$scan_frameworks" "${scan[@]}"
  step "checkov fails an insecure pod (negative control)" checkov_rejects_insecure_pod

  log "workflow and YAML linters"
  step "actionlint" run_actionlint
  step "zizmor (offline, auditor persona)" \
    "$DEPLOY_VENV/bin/zizmor" --offline --persona=auditor --no-progress "$ROOT/.github"
  step "yamllint" yamllint --strict -c "$ROOT/deploy/yamllint.yaml" \
    "$ROOT/.github" "$ROOT/deploy/argocd" "$CHART/Chart.yaml" "$CHART"/values*.yaml "$CHART/ci"
  step "shellcheck" run_shellcheck

  if [ ${#STEPS_FAILED[@]} -eq 0 ] && [ -z "$KEEP_OUT" ]; then
    rm -rf "$OUT"
    log "took $((SECONDS - started))s"
  else
    log "took $((SECONDS - started))s; logs and renderings in $OUT"
  fi
  steps_summary deploy
}

main "$@"
