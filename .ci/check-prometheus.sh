#!/usr/bin/env bash
# Server-side metrics against a real Prometheus: starts the demo target and Debian's
# `prometheus` (scraping the target's /metrics every second, its TSDB in a temp dir, both on
# free ports of 127.0.0.1), runs examples/observe-prometheus.yaml with `volley run`, and checks
# that each query's value equals what the demo target itself counted in the run's window
# (within one scrape interval), that the prom() thresholds were judged on them, and that the
# series query has its samples. Then the same run with Prometheus down: the load results are
# all there, the prom() thresholds fail with "cannot reach Prometheus", exit 99.
#
# Prometheus comes from apt (CI runs as root on Debian); where it cannot be installed the check
# is skipped, loudly, and exits 0. About 40 s once built.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing prometheus with apt-get" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1 || true
fi
if ! command -v prometheus >/dev/null 2>&1; then
  echo "######## SKIPPED: no prometheus, and apt-get could not install it: Prometheus queries were NOT checked ########" >&2
  exit 0
fi
echo "prometheus: $(prometheus --version 2>&1 | head -n 1)" >&2

cargo build --quiet --locked -p volley-runner -p volley-demo-target

work=$(mktemp -d)
trap 'kill "${target_pid:-}" "${prom_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
. examples/demo-target/start.sh
start_demo_target target/debug/volley-demo-target "$work/target.out"
target_hostport=${base_url#http://}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
prom_port=$(free_port)
prom_url="http://127.0.0.1:$prom_port"
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: ["$target_hostport"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!

# Ready when it has scraped the target at least twice (so `@ $__start` finds a sample).
ready=""
for _ in $(seq 1 300); do
  if curl -fsS "$prom_url/api/v1/query" --data-urlencode 'query=count_over_time(up{job="demo"}[1m]) >= 2' 2>/dev/null \
      | grep -q '"value"'; then
    ready=yes
    break
  fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "prometheus did not scrape the demo target in 30 s" >&2; tail -20 "$work/prometheus.log" >&2; exit 1; }

code=0
timeout 120 target/debug/volley run examples/observe-prometheus.yaml --base-url "$base_url" \
  --prometheus-url "$prom_url" --quiet --out "$work/summary.json" --html "$work/report.html" \
  >"$work/run.txt" || code=$?
cat "$work/run.txt"
[ "$code" = 0 ] || { echo "volley run exited $code, expected 0 (every threshold passes)" >&2; exit 1; }
curl -fsS "$base_url/stats" >"$work/stats.json"

# volley compare puts the query results of two runs side by side.
target/debug/volley compare "$work/summary.json" "$work/summary.json" >"$work/compare.txt"
grep -q '^prometheus$' "$work/compare.txt" && grep -q 'worker_p95_s' "$work/compare.txt" \
  || { echo "volley compare shows no Prometheus results:" >&2; cat "$work/compare.txt" >&2; exit 1; }

# Prometheus down: a port nothing listens on.
down="http://127.0.0.1:$(free_port)"
code=0
timeout 120 target/debug/volley run examples/observe-prometheus.yaml --base-url "$base_url" \
  --prometheus-url "$down" --quiet --out "$work/down.json" >/dev/null || code=$?
[ "$code" = 99 ] || { echo "volley run with Prometheus down exited $code, expected 99" >&2; exit 1; }

python3 - "$work/summary.json" "$work/stats.json" "$work/down.json" "$work/report.html" <<'PY'
import json, sys

summary = json.load(open(sys.argv[1]))
stats = json.load(open(sys.argv[2]))
down = json.load(open(sys.argv[3]))
report = open(sys.argv[4], encoding="utf-8").read()
rate, scrape = 20, 1.0  # the example's iterations per second, this script's scrape interval

def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

prom = summary.get("prometheus") or fail("no prometheus in the summary")
values = {r["name"]: r.get("value") for r in prom["results"] if not r.get("by")}
errors = {r["name"]: r.get("error") for r in prom["results"] if r.get("error")}
if errors:
    fail(f"queries failed: {errors}")
window = prom["window"]
length = (window["endUnixMs"] - window["startUnixMs"]) / 1000
if abs(length - summary["durationSeconds"]) > 0.01:
    fail(f"window {length}s is not the run's {summary['durationSeconds']}s")

# The demo target handled every request of the run, during the run (nothing else calls /api).
handled = stats["processed"]
requests = summary["metrics"]["requests"]
if handled != requests:
    fail(f"the demo target handled {handled} requests, volley sent {requests}")
# Prometheus's last sample before the window's end is at most one scrape interval old.
seen = values["processed"]
if not (handled - rate * scrape - 1 <= seen <= handled):
    fail(f"prom(processed) = {seen}, the demo target counted {handled} (allowed: one scrape interval, {rate * scrape:.0f})")
# A sampled gauge's peak cannot exceed the true peak, and 20/s x 50ms keeps one in flight.
depth = values["queue_depth_max"]
if not (1 <= depth <= stats["max_queue_depth"]):
    fail(f"prom(queue_depth_max) = {depth}, the demo target's own peak is {stats['max_queue_depth']}")
# Every request was held 50ms: its histogram bucket is (0.05, 0.075].
p95 = values["worker_p95_s"]
if not (0.05 < p95 <= 0.075):
    fail(f"prom(worker_p95_s) = {p95}, expected within the (0.05, 0.075] bucket")
# The `by: job` query over the scenario's window: one result, for job demo, scenario items.
by_job = [r for r in prom["results"] if r["name"] == "processed_by_job"]
if [(r.get("by"), r.get("labelValue"), r.get("scenario")) for r in by_job] != [("job", "demo", "items")]:
    fail(f"processed_by_job: {by_job}")
if not (handled - rate * scrape - 2 <= by_job[0]["value"] <= handled):
    fail(f"prom(processed_by_job) = {by_job[0]['value']}, the demo target counted {handled}")
series = {s["name"]: s for s in prom.get("series", [])}
points = series.get("queue_depth", {}).get("points", [])
if len(points) < length - 2 * scrape or any(p["t"] < 0 or p["t"] > length + 1 for p in points):
    fail(f"queue_depth series has {len(points)} points over {length}s: {points[:5]}")
judged = {t["expr"]: t for t in summary["thresholds"]}
for expr in ["prom(worker_p95_s) < 0.5", "prom(queue_depth_max) < 100", "prom(processed) > 0",
             "prom(processed_by_job) > 0"]:
    t = judged[expr]
    if not t["passed"]:
        fail(f"{expr}: {t}")
if 'id="prometheus"' not in report or "worker_p95_s" not in report:
    fail("the HTML report has no Server metrics section")

# Prometheus down: the load results are kept; the prom() thresholds fail and say why.
if down["metrics"]["requests"] < rate * 5:
    fail(f"the run with Prometheus down lost its load results: {down['metrics']}")
for t in down["thresholds"]:
    if t["expr"].startswith("prom("):
        if t["passed"] or "cannot reach Prometheus" not in t["actual"]:
            fail(f"with Prometheus down: {t}")
    elif not t["passed"]:
        fail(f"with Prometheus down, a load threshold failed: {t}")
if down["phase"] != "Failed" or down.get("reason") != "ThresholdsFailed":
    fail(f"with Prometheus down: phase {down['phase']} reason {down.get('reason')}")

print(f"prometheus check: window {length:.3f}s, {requests} requests; prom(processed)={seen} "
      f"(demo target {handled}), queue_depth_max={depth} (peak {stats['max_queue_depth']}), "
      f"worker_p95_s={p95:.4f}, {len(points)} series points; down: {down['message']}")
PY
