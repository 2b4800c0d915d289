#!/usr/bin/env bash
# Soak: `volley run --runners 2` at a steady rate against the demo target for a long time
# (default 10 minutes), sampling every 10 s the resident memory (VmRSS), open file descriptors
# and threads of the `volley run` process (aggregator + driver) and of each runner process.
# Flat columns mean no leak. Prints a CSV (also written to target/soak.csv) and a summary.
#
#   benches/soak.sh [DURATION] [RATE]        e.g. benches/soak.sh 10m 200
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10m}
rate=${2:-200}
interval=10

cargo build --release --quiet -p volley-runner -p volley-demo-target

work=$(mktemp -d)
trap 'kill "${target_pid:-}" 2>/dev/null || true; kill "${run_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
. examples/demo-target/start.sh
start_demo_target target/release/volley-demo-target "$work/target.out"

cat >"$work/soak.yaml" <<YAML
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: soak}
spec:
  target: {baseUrl: "$base_url"}
  scenarios:
    - name: steady
      executor: constant-arrival-rate
      rate: $rate
      duration: $duration
      maxVUs: 100
      steps:
        - {name: list, request: {url: "/api/items?delay=5ms"}, check: {status: [200]}}
        - {name: item, request: {url: "/api/items/1"}}
  thresholds: ["error_rate < 1%"]
YAML

target/release/volley run "$work/soak.yaml" --runners 2 --quiet --out "$work/summary.json" \
  >"$work/run.out" 2>&1 &
run_pid=$!

field() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
csv=target/soak.csv
echo "seconds,process,rss_kb,fds,threads" >"$csv"
start=$(date +%s)
while kill -0 "$run_pid" 2>/dev/null; do
  now=$(( $(date +%s) - start ))
  children=$(cat "/proc/$run_pid/task/$run_pid/children" 2>/dev/null || true)
  echo "$now,run,$(field "$run_pid" VmRSS),$(fds "$run_pid"),$(field "$run_pid" Threads)" >>"$csv"
  i=0
  for c in $children; do
    echo "$now,runner$i,$(field "$c" VmRSS),$(fds "$c"),$(field "$c" Threads)" >>"$csv"
    i=$((i + 1))
  done
  sleep "$interval"
done
wait "$run_pid" && code=0 || code=$?

cat "$csv"
echo
echo "volley run exit code: $code"
tail -n 25 "$work/run.out"
# Per process: RSS after the first minute vs at the end (warm-up excluded), and the range.
awk -F, 'NR > 1 && $3 > 0 {
  if (!($2 in first) && $1 >= 60) first[$2] = $3
  if ($1 >= 60) last[$2] = $3
  if (!($2 in lo) || $3 < lo[$2]) lo[$2] = $3
  if ($3 > hi[$2]) hi[$2] = $3
  if (!($2 in fdlo) || $4 < fdlo[$2]) fdlo[$2] = $4
  if ($4 > fdhi[$2]) fdhi[$2] = $4
} END {
  for (p in hi) printf "%-8s RSS at 1 min %6d kB, at end %6d kB (min %d, max %d); fds %d..%d\n",
    p, first[p], last[p], lo[p], hi[p], fdlo[p], fdhi[p]
}' "$csv"
