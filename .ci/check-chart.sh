#!/usr/bin/env bash
# Checks the Helm chart with real helm and kubectl: the plain manifests (deploy/) are the
# chart's rendering, `helm lint` and `helm template` pass with default and non-default values
# (charts/volley/ci/), every rendered object has what a real API server requires, the operator understands every
# VOLLEY_* variable the chart sets, and kubectl accepts the objects (client-side dry run).
# Then the API server's own schemas: every rendered object against the OpenAPI schemas of the
# oldest Kubernetes the chart supports (Chart.yaml's kubeVersion, 1.25) and of 1.33, with
# unknown fields refused (kubernetes-validate, which bundles them), and every
# example LoadTest against the generated CRD's schema (.ci/check_crd_schema.py); and the
# documented Argo CD health check, run in Lua 5.1 for every phase (.ci/check_argocd_health.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(.ci/k8s-tools.sh | tail -n 1)
helm="$bin/helm"
kubectl="$bin/kubectl"
# The oldest supported version (Chart.yaml's kubeVersion; docs/guide.md says why) and a recent one.
kube_versions="1.25.0 1.33.0"
if ! grep -qx 'kubeVersion: ">=1.25.0-0"' charts/volley/Chart.yaml; then
  echo "Chart.yaml's kubeVersion changed: update kube_versions in $0 and docs/guide.md" >&2
  exit 1
fi
venv=target/tools/schema-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0' 'jsonschema==4.26.0' 'PyYAML==6.0.4' \
    'lupa==2.6'
fi
chart=charts/volley
# The generated CRD (`volley crd`; a cargo test keeps it equal to the types), in the chart only.
crd=$chart/crds/loadtests.volley.dev.yaml
out=target/chart
mkdir -p "$out"

# kubectl maps kinds to resources through discovery even for a client-side dry run; a
# stand-in serves just that on 127.0.0.1.
rm -f "$out/discovery.port"
python3 .ci/fake_discovery.py "$out/discovery.port" &
discovery_pid=$!
trap 'kill "$discovery_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$out/discovery.port" ] && break; sleep 0.05; done
server="http://127.0.0.1:$(cat "$out/discovery.port")"

.ci/render-manifests.sh --check

render() { # NAME [helm args...]
  local name=$1
  shift
  "$helm" lint --strict "$chart" "$@" >/dev/null
  "$helm" template volley "$chart" --namespace volley-system --include-crds "$@" >"$out/$name.yaml"
  python3 .ci/check_manifests.py "$out/$name.yaml"
  "$kubectl" --server "$server" --cache-dir "$out/kube-cache" apply --dry-run=client \
    --validate=false -f "$out/$name.yaml" >"$out/$name.dry-run.txt"
  # ServiceMonitor has no bundled schema (a Prometheus Operator CRD): a warning, not an error.
  for kube_version in $kube_versions; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$kube_version" "$out/$name.yaml"
  done
  echo "chart ($name): lint, template, object checks, kubectl dry run and Kubernetes $kube_versions schemas passed"
}
render default
for values in "$chart"/ci/*.yaml; do
  render "$(basename "$values" .yaml)" --values "$values"
done

# A PodDisruptionBudget exactly when asked for or with more than one replica.
pdbs() { grep -c '^kind: PodDisruptionBudget$' "$out/$1.yaml" || true; }
if [ "$(pdbs default)" != 0 ] || [ "$(pdbs namespaced-values)" != 1 ] ||
  [ "$(pdbs openshift-values)" != 1 ]; then
  echo "PodDisruptionBudget: expected none with 1 replica, one with 2 or when enabled" >&2
  exit 1
fi
if "$helm" template volley "$chart" --set operator.replicas=2 \
  --set operator.podDisruptionBudget.enabled=false | grep -q '^kind: PodDisruptionBudget$'; then
  echo "operator.podDisruptionBudget.enabled=false still rendered a PodDisruptionBudget" >&2
  exit 1
fi
# OpenShift values: no fixed UID, GID or fsGroup anywhere, the operator's pod or the runner
# contexts it is given; runner pods get the pull secrets.
if grep -nE 'runAsUser|runAsGroup|fsGroup' "$out/openshift-values.yaml"; then
  echo "openshift-values: a fixed user or group is still set (above)" >&2
  exit 1
fi
grep -q 'value: "regcred,mirror"' "$out/openshift-values.yaml" || {
  echo "openshift-values: VOLLEY_RUNNER_IMAGE_PULL_SECRETS is not regcred,mirror" >&2
  exit 1
}
# A value the schema forbids must be refused.
if "$helm" template volley "$chart" --set operator.logFormat=xml >/dev/null 2>&1; then
  echo "values.schema.json accepted operator.logFormat=xml" >&2
  exit 1
fi
# The webhook: a failurePolicy other than Fail or Ignore is refused; its cert-manager rendering
# mounts the Certificate's Secret and names it in the CA injection; the default one (the
# operator's generated certificate, deploy/volley-operator-webhook.yaml) is also checked here.
if "$helm" template volley "$chart" --set webhook.enabled=true --set webhook.failurePolicy=Never \
  >/dev/null 2>&1; then
  echo "values.schema.json accepted webhook.failurePolicy=Never" >&2
  exit 1
fi
grep -q 'cert-manager.io/inject-ca-from: volley-system/volley-webhook' "$out/webhook-values.yaml" &&
  grep -q 'secretName: volley-webhook-tls' "$out/webhook-values.yaml" || {
  echo "webhook-values: the cert-manager CA injection or the certificate Secret is missing" >&2
  exit 1
}
python3 .ci/check_manifests.py deploy/volley-operator-webhook.yaml
for kube_version in $kube_versions; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$kube_version" deploy/volley-operator-webhook.yaml
done
# Namespaced RBAC without a namespace must be refused with a message.
if "$helm" template volley "$chart" --set rbac.namespaced=true >/dev/null 2>&1; then
  echo "rbac.namespaced=true without watchNamespace rendered" >&2
  exit 1
fi
echo "chart: schema and guard checks passed"

"$venv/bin/python" .ci/check_crd_schema.py "$crd" \
  examples/*.yaml core/tests/manifests/valid/*.yaml README.md docs/*.md examples/README.md \
  "$chart/templates/NOTES.txt"
"$venv/bin/python" .ci/check_argocd_health.py "$crd" docs/guide.md
