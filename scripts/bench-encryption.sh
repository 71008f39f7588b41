#!/usr/bin/env bash
# What sealing the spool costs end to end: the same large Taler uploads through two gateways
# that differ only in `spool_encryption`, interleaved round by round, both delivering to one
# `docgate emulate taler`. Prints, per round and as medians, the wall time and the gateway
# process's CPU time per MiB (user + system, from /proc), and the sealed/plain ratios.
#
#   scripts/bench-encryption.sh [ROUNDS] [UPLOADS] [MIB]     (defaults: 5 16 15)
#
# Build first: cargo build --release -p docgate -p docgate-benches --bins
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
UPLOADS=${2:-16}
MIB=${3:-15}
BIN="${CARGO_TARGET_DIR:-target}/release/docgate"
LOAD="${CARGO_TARGET_DIR:-target}/release/load"
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Wait for "<what> listening on URL" in $1 and print URL.
url_of() {
  for _ in $(seq 1 300); do
    grep -q "listening on " "$1" 2>/dev/null && break
    sleep 0.1
  done
  grep -o "listening on [^ ]*" "$1" | head -1 | sed 's/listening on //'
}

RUST_LOG=warn "$BIN" emulate taler --listen 127.0.0.1:0 --data-dir "$WORK/emulator" >"$WORK/emu.out" 2>&1 &
PIDS+=($!)
EMU=$(url_of "$WORK/emu.out")
(umask 077
 grep -o "test credential): .*" "$WORK/emu.out" | sed 's/test credential): //' >"$WORK/taler.key"
 openssl rand -hex 32 >"$WORK/spool.key")

start_gateway() { # name, extra top-level TOML
  cat >"$WORK/$1.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/$1"
$2

[[tenants]]
name = "bench"
api_key = { env = "BENCH_API_KEY" }
providers = ["taler"]

[providers.taler]
base_url = "$EMU/"
extern_key = { file = "$WORK/taler.key" }
purpose = 65535
EOF
  BENCH_API_KEY=bench RUST_LOG=warn "$BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.out" 2>&1 &
  PIDS+=($!)
  echo $! >"$WORK/$1.pid"
}
start_gateway plain ""
start_gateway sealed "spool_encryption = { key = { file = \"$WORK/spool.key\" }, key_id = \"bench\" }"
declare -A URL PID
for g in plain sealed; do URL[$g]=$(url_of "$WORK/$g.out"); PID[$g]=$(cat "$WORK/$g.pid"); done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
TOTAL_MIB=$((UPLOADS * MIB))
echo "$ROUNDS rounds of $UPLOADS × $MIB MiB synchronous Taler uploads (2 at a time) per gateway"
for round in $(seq 1 "$ROUNDS"); do
  for g in plain sealed; do
    before=$(ticks "${PID[$g]}")
    r=$("$LOAD" --url "${URL[$g]}/v1/uploads/taler?payto=payto://x-taler-bank/bank.example.com/$g-$round-{n}" \
          --header "Authorization: Bearer bench" --header "Content-Type: application/pdf" \
          --size $((MIB * 1048576)) --count "$UPLOADS" --concurrency 2 --retry-503)
    after=$(ticks "${PID[$g]}")
    errors=$(echo "$r" | jq '.errors')
    [ "$errors" = 0 ] || { echo "$g: $errors uploads failed: $r" >&2; exit 1; }
    wall=$(echo "$r" | jq '.wall_s')
    cpu_ms_per_mib=$(echo "($after - $before) * 1000 / $HZ / $TOTAL_MIB" | bc -l)
    printf '%s %s %.3f %.2f\n' "$round" "$g" "$wall" "$cpu_ms_per_mib" | tee -a "$WORK/results"
  done
done
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
for g in plain sealed; do
  w=$(awk -v g=$g '$2 == g { print $3 }' "$WORK/results" | median)
  c=$(awk -v g=$g '$2 == g { print $4 }' "$WORK/results" | median)
  wr=$(awk -v g=$g '$2 == g { print $3 }' "$WORK/results" | sort -n | sed -n '1p;$p' | paste -sd-)
  cr=$(awk -v g=$g '$2 == g { print $4 }' "$WORK/results" | sort -n | sed -n '1p;$p' | paste -sd-)
  echo "$g: wall median ${w}s (range $wr), gateway CPU median ${c} ms/MiB (range $cr)"
  eval "W_$g=$w C_$g=$c"
done
printf 'sealed/plain: wall %.3f, CPU per MiB %.3f\n' \
  "$(echo "$W_sealed / $W_plain" | bc -l)" "$(echo "$C_sealed / $C_plain" | bc -l)"
