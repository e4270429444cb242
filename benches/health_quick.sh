#!/usr/bin/env bash
# GET /health/quick under load while a slow external check hangs.
#
# Starts a release `scopemon serve` on a free loopback port with a temp data
# dir, a listener that accepts connections and never answers, and registers
# an HTTP service check against it (2 s timeout, re-run at once: it is
# always hanging). Then runs wrk 3 times and prints each run's requests/s
# and p99 latency, and their medians.
#
# Target (issue 11): >= 50,000 requests/s and p99 <= 1 ms on loopback.
# Needs wrk (apt-get install -y wrk) and python3 (the silent listener).
# Usage: benches/health_quick.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk"; exit 1; }
cargo build --release --quiet --bin scopemon
bin="${CARGO_TARGET_DIR:-target}/release/scopemon"
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT

# A listener that takes connections (the kernel completes the handshake)
# and never reads or answers: the HTTP check hangs until its timeout.
python3 - "$dir/silent_port" <<'PY' &
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1024)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
while True: time.sleep(3600)
PY
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/silent_port" ] && break; sleep 0.05; done
silent=$(cat "$dir/silent_port")

RUST_LOG=warn "$bin" serve --data-dir "$dir/data" --listen 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/.*listening on //p' "$dir/out")
[ -n "$base" ] || { echo "scopemon did not start:"; cat "$dir/err"; exit 1; }

curl -sf -XPOST "$base/v1/services" -d "{\"name\": \"slow\", \"check\": {\"type\": \"http\", \"url\": \"http://127.0.0.1:$silent/\", \"interval\": \"1s\", \"timeout\": \"2s\"}}" >/dev/null
sleep 2.5
echo "slow check: $(curl -s "$base/health" | python3 -c 'import json,sys; c=json.load(sys.stdin)["checks"]["service:slow"][0]; print(c["status"], c["output"])')"
echo "quick: $(curl -s "$base/health/quick")"

rps=(); p99=()
for i in 1 2 3; do
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "$base/health/quick")
  r=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  # wrk prints "99%  812.00us" (or ms / s): convert to ms.
  l=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "run $i: ${r} requests/s, p99 ${l} ms${non2xx:+, non-2xx $non2xx}"
  rps+=("$r"); p99+=("$l")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
echo "median: $(median "${rps[@]}") requests/s, p99 $(median "${p99[@]}") ms (target >= 50000 requests/s, p99 <= 1 ms)"
echo "slow check after the runs: $(curl -s "$base/health" | python3 -c 'import json,sys; c=json.load(sys.stdin)["checks"]["service:slow"][0]; print(c["status"], c["output"], c["duration_ms"], "ms")')"
