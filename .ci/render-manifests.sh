#!/usr/bin/env bash
# Renders deploy/volley-operator.yaml, the plain manifests for installing without Helm, from the
# chart (their only source): `helm template` with the default values, as the release
# `volley-operator` in `volley-system` (the names the operator's flags default to), without the
# CRD, which stays in charts/volley/crds/ only.
#
# Usage: .ci/render-manifests.sh          rewrite the file after changing the chart
#        .ci/render-manifests.sh --check  fail when the committed file is not the chart's rendering
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(.ci/k8s-tools.sh | tail -n 1)
file=deploy/volley-operator.yaml
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
{
  echo "# Rendered from charts/volley by .ci/render-manifests.sh (helm template, default values,"
  echo "# release volley-operator in namespace volley-system). Do not edit: change the chart and"
  echo "# re-run the script. Install: create the namespace, apply the CRD, then this file:"
  echo "#   kubectl create namespace volley-system"
  echo "#   kubectl apply --server-side -f charts/volley/crds/"
  echo "#   kubectl apply -f deploy/volley-operator.yaml"
  "$bin/helm" template volley-operator charts/volley --namespace volley-system
} >"$rendered"
if [ "${1:-}" = --check ]; then
  if ! cmp -s "$rendered" "$file"; then
    diff -u "$file" "$rendered" >&2 || true
    echo "$file is not the chart's rendering: run .ci/render-manifests.sh" >&2
    exit 1
  fi
  echo "$file is the chart's rendering"
else
  cp "$rendered" "$file"
fi
