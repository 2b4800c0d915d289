#!/usr/bin/env bash
# Opens a real HTML report in a real headless Chromium: runs examples/quickstart.yaml against
# the demo target on 127.0.0.1 with `volley run --html`, loads the file (no network: the
# report is self-contained), and checks in the DOM Chromium built that the SVG charts are
# there with their lines and that the figures shown equal the summary's. Also prints a
# screenshot's size as a sign the page painted.
#
# Chromium comes from apt (CI runs as root on Debian); where it cannot be installed the check
# is skipped, loudly, and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

find_browser() {
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
      command -v "$b"
      return 0
    fi
  done
  return 1
}

browser=$(find_browser || true)
if [ -z "$browser" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium with apt-get" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || true
  browser=$(find_browser || true)
fi
if [ -z "$browser" ]; then
  echo "######## SKIPPED: no chromium, and apt-get could not install it: the HTML report was NOT opened in a browser ########" >&2
  exit 0
fi
echo "browser: $browser ($("$browser" --version 2>/dev/null || echo unknown version))" >&2

cargo build --quiet --locked -p volley-runner -p volley-demo-target

work=$(mktemp -d)
trap 'kill "${target_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
. examples/demo-target/start.sh
start_demo_target target/debug/volley-demo-target "$work/target.out"

code=0
timeout 120 target/debug/volley run examples/quickstart.yaml --base-url "$base_url" --quiet \
  --out "$work/summary.json" --html "$work/report.html" >/dev/null || code=$?
# 99 (a threshold failed) still writes the report; anything else is an error.
[ "$code" = 0 ] || [ "$code" = 99 ] || { echo "volley run exited $code" >&2; exit 1; }

flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-extensions
  --user-data-dir="$work/profile" --virtual-time-budget=2000)
timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$work/report.html" >"$work/dom.html" 2>/dev/null
timeout 120 "$browser" "${flags[@]}" --window-size=1200,3000 --screenshot="$work/report.png" \
  "file://$work/report.html" >/dev/null 2>&1 || true

python3 - "$work/summary.json" "$work/dom.html" "$work/report.png" <<'PY'
import html.parser, json, os, sys

summary = json.load(open(sys.argv[1]))
dom = open(sys.argv[2], encoding="utf-8").read()

class Dom(html.parser.HTMLParser):
    """Text by id, and each <svg class=chart> with the points of its polylines."""
    def __init__(self):
        super().__init__()
        self.text, self.charts, self.open_id, self.svg = {}, {}, None, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and "chart" in (a.get("class") or ""):
            self.svg = a["id"]
            self.charts[self.svg] = []
        elif tag == "polyline" and self.svg:
            self.charts[self.svg].append(len((a.get("points") or "").split()))
        if a.get("id"):
            self.open_id = a["id"]
            self.text[self.open_id] = ""
    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None
        self.open_id = None
    def handle_data(self, data):
        if self.open_id:
            self.text[self.open_id] += data

d = Dom()
d.feed(dom)
m = summary["metrics"]
problems = []
for chart in ["chart-rps", "chart-errors", "chart-latency", "chart-distribution"]:
    lines = d.charts.get(chart)
    if not lines or min(lines) < 2:
        problems.append(f"{chart}: not in the DOM or without a drawn line ({lines})")
expect = {"m-requests": str(m["requests"]), "m-failures": str(m["failures"]), "m-p95": m["p95"],
          "verdict": {"Succeeded": "PASSED", "Error": "ERROR", "Aborted": "ABORTED"}.get(summary["phase"], "FAILED")}
for key, want in expect.items():
    if d.text.get(key) != want:
        problems.append(f"#{key}: the browser shows {d.text.get(key)!r}, the summary says {want!r}")
png = os.path.getsize(sys.argv[3]) if os.path.exists(sys.argv[3]) else 0
if problems:
    print("HTML report in Chromium: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"HTML report in Chromium: {len(d.charts)} charts drawn, {m['requests']} requests, p95 {m['p95']} "
      f"as in the summary; screenshot {png} bytes")
PY
