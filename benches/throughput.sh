#!/usr/bin/env bash
# Load-generator throughput, Volley against its peers, side by side in one run.
#
# Every tool hits the same nginx on 127.0.0.1 (a `return 200` location, so the server is as
# cheap as it gets) with the same concurrency for the same time, one after the other:
#   - closed model, max throughput: wrk -c C, oha -c C, volley constant-vus with C VUs
#   - open model, fixed rate: oha -q R and volley constant-arrival-rate R (achieved rate, p99;
#     Volley's p99 from the schedule includes the generator's own timer lag, about 1 ms with
#     tokio's timer wheel, so its p99 from the send is the one to compare with oha's)
# and prints requests/s with Volley's ratio to each peer. Numbers are only comparable within
# one run on one machine; on a 2-core box the generator and nginx share the CPUs.
#
# Usage: benches/throughput.sh [SECONDS=10] [CONNECTIONS=50] [RATE=2000]
# Installs wrk and nginx (apt) and oha (cargo) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
rate=${3:-2000}
port=18080

need_apt() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need_apt wrk wrk
need_apt nginx nginx-light
command -v oha >/dev/null || cargo install oha --locked --quiet || echo "oha unavailable; skipping it" >&2
command -v python3 >/dev/null || { echo "python3 is needed to read JSON results" >&2; exit 1; }

cargo build --release --quiet -p volley-runner
volley=target/release/volley

work=$(mktemp -d)
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$port reuseport;
    location / { return 200 "ok\n"; }
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"
trap 'nginx -c "$work/nginx.conf" -p "$work" -s stop 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.5
url="http://127.0.0.1:$port/"

manifest() { # executor-specific lines on stdin become the scenario body
  cat <<YAML
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: bench}
spec:
  target: {baseUrl: "$url", timeout: 5s}
  scenarios:
    - name: bench
      gracefulStop: 1s
$(sed 's/^/      /')
      steps: [{name: get, request: {url: /}}]
YAML
}

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

echo "== closed model: $conns connections, ${secs}s against nginx"
wrk_rps=$(wrk -t2 -c"$conns" -d"${secs}s" "$url" | awk '/Requests\/sec/ {print $2}')
echo "wrk     ${wrk_rps} req/s"
oha_rps=""
if command -v oha >/dev/null; then
  oha -z "${secs}s" -c "$conns" --no-tui --output-format json "$url" >"$work/oha.json" 2>/dev/null \
    || oha -z "${secs}s" -c "$conns" --no-tui -j "$url" >"$work/oha.json"
  oha_rps=$(json "$work/oha.json" 'round(d["summary"]["requestsPerSec"], 1)')
  echo "oha     ${oha_rps} req/s"
fi
printf 'executor: constant-vus\nvus: %s\nduration: %ss\n' "$conns" "$secs" | manifest >"$work/closed.yaml"
"$volley" run "$work/closed.yaml" --quiet --out "$work/closed.json" >/dev/null || true
v_rps=$(json "$work/closed.json" 'round(d["metrics"]["requests"] / d["durationSeconds"], 1)')
echo "volley  ${v_rps} req/s"
python3 - "$v_rps" "$wrk_rps" "${oha_rps:-0}" <<'PY'
import sys
v, w, o = (float(x) for x in sys.argv[1:])
print(f"volley/wrk = {v / w:.2f}" + (f"   volley/oha = {v / o:.2f}" if o else ""))
PY

echo "== open model: $rate req/s for ${secs}s"
if command -v oha >/dev/null; then
  oha -z "${secs}s" -q "$rate" -c "$conns" --no-tui --output-format json "$url" >"$work/oha-rate.json" 2>/dev/null \
    || oha -z "${secs}s" -q "$rate" -c "$conns" --no-tui -j "$url" >"$work/oha-rate.json"
  echo "oha     $(json "$work/oha-rate.json" 'round(d["summary"]["requestsPerSec"], 1)') req/s achieved, p99 $(json "$work/oha-rate.json" 'round(d["latencyPercentiles"]["p99"] * 1000, 3)') ms"
fi
printf 'executor: constant-arrival-rate\nrate: %s\nduration: %ss\nmaxVUs: %s\n' "$rate" "$secs" "$((conns * 4))" | manifest >"$work/open.yaml"
"$volley" run "$work/open.yaml" --quiet --out "$work/open.json" >/dev/null || true
echo "volley  $(json "$work/open.json" 'round(d["metrics"]["requests"] / '"$secs"', 1)') req/s achieved (planned $rate), p99 $(json "$work/open.json" 'd["metrics"]["latencyMs"]["p99"]') ms from the schedule, $(json "$work/open.json" 'd["latencySentMs"]["p99"]') ms from the send, dropped $(json "$work/open.json" 'd["metrics"]["droppedIterations"]')"
