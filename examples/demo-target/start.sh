# Sourced by the scripts that run Volley against the demo target (examples/quickstart.sh,
# benches/soak.sh, .ci/check-report-browser.sh).
#
# start_demo_target BINARY LOG: starts the demo target on a free port of 127.0.0.1 and sets
# `target_pid` and `base_url` (the target prints `listening on http://127.0.0.1:PORT` once it
# is bound). Returns 1, saying so, when it did not start within 5 s. The caller's EXIT trap
# stops it: `kill "${target_pid:-}"`.
start_demo_target() {
  "$1" --listen 127.0.0.1:0 >"$2" 2>/dev/null &
  target_pid=$!
  base_url=""
  for _ in $(seq 1 100); do
    base_url=$(sed -n 's/^listening on //p' "$2")
    [ -n "$base_url" ] && return 0
    sleep 0.05
  done
  echo "the demo target did not start" >&2
  return 1
}
