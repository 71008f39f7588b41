#!/usr/bin/env bash
# System calls per upload of a docgate binary, counted by `strace -c -f` (issue #13: "strace -c
# counts per upload").
#
#   scripts/bench-syscalls.sh [BINARY] [UPLOADS] [CONCURRENCY] [SIZE]
#       (defaults: target/release/docgate 1000 32 10240)
#
# Starts `BINARY serve` (the sandbox, Taler emulator in process) on a fresh data dir, warms it
# with 300 uploads, then attaches strace to every thread while UPLOADS Taler uploads of SIZE
# bytes (a new payto each) go through at CONCURRENCY with the benches crate's `load` bin, and
# prints each system call's count divided by UPLOADS, most frequent first. strace slows the
# server down several times over: read the counts, not the speed. Build first:
#   cargo build --release -p docgate -p docgate-benches --bins
#
# The data dir is made under $TMPDIR. On ext4 without a journal (this project's machines),
# creating files in a directory group where many files were deleted in the last minutes
# costs up to 20 times more (the kernel skips recently deleted inodes): point TMPDIR at a
# directory nothing was removed from lately when comparing runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY=${1:-target/release/docgate}
UPLOADS=${2:-1000}
CONCURRENCY=${3:-32}
SIZE=${4:-10240}
LOAD="${CARGO_TARGET_DIR:-target}/release/load"
command -v strace >/dev/null || { echo "strace is not installed (apt-get install strace)" >&2; exit 1; }
WORK=$(mktemp -d)
DOCGATE_SANDBOX_KEY=syscalls RUST_LOG=warn "$BINARY" serve --listen 127.0.0.1:0 \
  --data-dir "$WORK/data" >"$WORK/out" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 300); do grep -q "docgate listening on " "$WORK/out" && break; sleep 0.1; done
URL=$(grep -o "docgate listening on [^ ]*" "$WORK/out" | sed 's/docgate listening on //')
load() {
  "$LOAD" --url "$URL/v1/uploads/taler?payto=payto://x-taler-bank/bank.example.com/$1{n}" \
    --method PUT --size "$SIZE" --count "$2" --concurrency "$CONCURRENCY" --retry-503 \
    --header "Content-Type: application/pdf" --header "Authorization: Bearer syscalls"
}
load warm 300 >/dev/null
strace -c -f -p "$PID" -o "$WORK/strace.txt" 2>/dev/null &
TRACER=$!
# strace attaches to the threads one by one; give it a moment before the measured uploads.
for _ in $(seq 1 50); do [ -s "$WORK/strace.txt" ] || sleep 0.02; done
sleep 0.5
result=$(load measured "$UPLOADS")
kill -INT "$TRACER"
wait "$TRACER" 2>/dev/null || true
echo "$BINARY: $UPLOADS uploads of $SIZE bytes at concurrency $CONCURRENCY: $result"
# strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall.
awk -v n="$UPLOADS" '
  $1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ { name = $NF; if (name == "total") total = $4; else calls[name] = $4 }
  END {
    printf "system calls per upload: %.1f\n", total / n
    for (s in calls) printf "%10.1f  %s\n", calls[s] / n, s | "sort -rn"
  }' "$WORK/strace.txt"
