#!/usr/bin/env bash
# Memory and threads of a docgate binary under a burst of large concurrent uploads, and
# whether the memory comes back after it (issue #13: "64 concurrent 15 MiB uploads").
#
#   scripts/bench-burst.sh [BINARY] [UPLOADS] [MIB]     (defaults: target/release/docgate 64 15)
#
# Starts `BINARY serve` (the sandbox, Taler emulator in process) on a fresh data dir, sends two
# bursts of UPLOADS concurrent MIB-MiB Taler uploads (each with a new payto) with the
# benches crate's `load` bin, and prints RSS at idle, peak RSS (VmHWM), the most threads seen
# (sampled every 50 ms), and RSS 10 s after each burst. Build first:
#   cargo build --release -p docgate -p docgate-benches --bins
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY=${1:-target/release/docgate}
UPLOADS=${2:-64}
MIB=${3:-15}
LOAD="${CARGO_TARGET_DIR:-target}/release/load"
WORK=$(mktemp -d)
DOCGATE_SANDBOX_KEY=burst RUST_LOG=warn "$BINARY" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" \
  >"$WORK/out" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 300); do grep -q "docgate listening on " "$WORK/out" && break; sleep 0.1; done
URL=$(grep -o "docgate listening on [^ ]*" "$WORK/out" | sed 's/docgate listening on //')
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
sleep 2
idle=$(kib $PID VmRSS)
echo "binary $BINARY: idle RSS $((idle / 1024)) MiB, threads $(kib $PID Threads)"
for burst in 1 2; do
  echo 5 >"/proc/$PID/clear_refs"   # reset VmHWM
  (max=0; while kill -0 $PID 2>/dev/null; do
     t=$(kib $PID Threads); [ "${t:-0}" -gt "$max" ] && max=$t && echo "$max" >"$WORK/threads"
     sleep 0.05; done) &
  SAMPLER=$!
  r=$("$LOAD" --url "$URL/v1/uploads/taler?payto=payto://x-taler-bank/bank.example.com/burst$burst-{n}" \
        --header "Authorization: Bearer burst" --header "Content-Type: application/pdf" \
        --size $((MIB * 1048576)) --count "$UPLOADS" --concurrency "$UPLOADS" --retry-503)
  kill $SAMPLER 2>/dev/null || true; wait $SAMPLER 2>/dev/null || true
  hwm=$(kib $PID VmHWM); now=$(kib $PID VmRSS)
  sleep 10
  later=$(kib $PID VmRSS)
  echo "burst $burst: $(echo "$r" | jq -c '{errors, retries_503, wall_s: (.wall_s*100|round/100), p50_ms: (.p50_ms|round), p99_ms: (.p99_ms|round)}')" \
       "peak RSS $((hwm / 1024)) MiB (+$(((hwm - idle) / 1024))), max threads $(cat "$WORK/threads")," \
       "RSS at end $((now / 1024)) MiB, 10 s later $((later / 1024)) MiB (+$(((later - idle) / 1024)) over idle)"
done
