#!/usr/bin/env bash
# The quick start: builds Volley, starts the demo target on a free port of 127.0.0.1, runs
# examples/quickstart.yaml against it, stops the target, and exits with volley's exit code
# (0 thresholds passed, 99 a threshold failed, 1 error). Extra arguments go to `volley run`,
# e.g. `examples/quickstart.sh --out summary.json`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p volley-runner -p volley-demo-target

out=$(mktemp)
trap 'kill "${target_pid:-}" 2>/dev/null || true; rm -f "$out"' EXIT
. examples/demo-target/start.sh
start_demo_target target/release/volley-demo-target "$out"
echo "demo target at $base_url" >&2

target/release/volley run examples/quickstart.yaml --base-url "$base_url" "$@"
