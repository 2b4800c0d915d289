#!/usr/bin/env bash
# The quick start: builds Volley, starts the demo target on a free port of 127.0.0.1, runs
# examples/quickstart.yaml against it, stops the target, and exits with volley's exit code
# (0 thresholds passed, 99 a threshold failed, 1 error). Extra arguments go to `volley run`,
# e.g. `examples/quickstart.sh --out summary.json`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p volley-runner -p volley-demo-target

out=$(mktemp)
target/release/volley-demo-target --listen 127.0.0.1:0 >"$out" 2>/dev/null &
target_pid=$!
trap 'kill "$target_pid" 2>/dev/null || true; rm -f "$out"' EXIT

# The target prints `listening on http://127.0.0.1:PORT` once it is bound.
base_url=""
for _ in $(seq 1 100); do
  base_url=$(sed -n 's/^listening on //p' "$out")
  [ -n "$base_url" ] && break
  sleep 0.05
done
if [ -z "$base_url" ]; then
  echo "the demo target did not start" >&2
  exit 1
fi
echo "demo target at $base_url" >&2

target/release/volley run examples/quickstart.yaml --base-url "$base_url" "$@"
