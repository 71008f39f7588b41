#!/usr/bin/env bash
# The peer benchmark: docgate beside nginx and beside nothing, on the same machine, same load.
#
#   scripts/bench-peers.sh [--quick] [--json FILE] [--client aiohttp]
#
# Builds (release) the gateway and the benches crate's `sink` (answers 200 to anything and
# discards the body) and `load` (N uploads at concurrency C) bins, then starts:
#   direct   the sink alone                                        — the floor: HTTP + loopback
#   nginx    nginx-light buffering each request body (proxy_request_buffering on) before
#            passing it to the sink                                — a mature store-and-forward peer
#   docgate  `docgate serve` (the sandbox): PUT /v1/uploads/taler, each upload with a new payto,
#            ingested (sniff, SHA-256 + SHA-512, scan, spool, fsync, ledger) and delivered,
#            signed, to the in-process Taler emulator, which hashes and stores it again.
#            Taler takes at most 16 MiB: 64 MiB documents go to the Finext emulator instead
#            (multipart POST /v1/uploads, an ID proof; delivered as base64 in JSON), and the
#            same multipart body goes to nginx and the sink.
#            The sandbox tenant may have half of the 64 upload slots; uploads past them wait
#            in line (limits.slot_wait). A 503 (the line full, or the wait over) is retried
#            after 100 ms, as a client honouring Retry-After would; counted as retries.
# and runs each scenario on the three in turn (interleaved rounds, the order rotating, so a
# slow minute of the VM hits all three alike). Printed per scenario: uploads/s, p50/p99
# latency, server CPU per upload (utime+stime deltas from /proc/<pid>/stat, all of nginx's
# processes), peak RSS (VmHWM, reset before the scenario) and threads, then the wall-time
# ratios docgate/nginx and docgate/direct per round: median [min–max]. Last, the 16 MiB Taler
# target: docgate's p50 against the same upload sent straight to the sandbox's emulator (the
# `load` bin signs it with the emulator's sandbox key) plus one SHA-512 pass.
#
# --quick: fewer uploads and rounds (under ~2 minutes once built). Needs nginx (installs
# Debian's nginx-light when run as root and it is missing) and python3.
# --client aiohttp: the 10 KiB scenarios are sent by scripts/aioload.py (Python, aiohttp: the
# kind of client issue #13 measured with, which spends ~0.3 ms of the same two cores per
# upload) instead of the `load` bin; installs aiohttp with pip when it is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
QUICK=0
JSON=""
CLIENT=load
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --json) JSON="$2"; shift ;;
    --client) CLIENT="$2"; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing nginx-light…" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null; }
  else
    echo "nginx is missing: apt-get install nginx-light (as root)" >&2
    exit 1
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
case "$CLIENT" in
  load) ;;
  aiohttp)
    python3 -c 'import aiohttp' 2>/dev/null || python3 -m pip install -q aiohttp >&2 ;;
  *) echo "--client is load or aiohttp, not $CLIENT" >&2; exit 2 ;;
esac

echo "building (release)…" >&2
cargo build --release --locked -q -p docgate -p docgate-benches --bins
BIN="${CARGO_TARGET_DIR:-target}/release"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Wait for `pattern` in `file` (a server's first lines), print the URL after it.
wait_url() {
  local file=$1 pattern=$2
  for _ in $(seq 1 300); do
    if grep -q "$pattern" "$file" 2>/dev/null; then
      grep -o "${pattern}[^ ]*" "$file" | head -1 | sed "s|${pattern}||"
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2
  cat "$file" >&2
  return 1
}

"$BIN/sink" --listen 127.0.0.1:0 >"$WORK/sink.out" 2>&1 &
SINK_PID=$!; PIDS+=("$SINK_PID")
SINK_URL=$(wait_url "$WORK/sink.out" "sink listening on ")
SINK_HOSTPORT=${SINK_URL#http://}

# nginx: buffer the whole body (to memory up to 1 MiB, then to a temp file) before the
# upstream sees a byte, as a store-and-forward gateway must; keep-alive to the sink.
NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
chmod -R 777 "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  upstream sink { server $SINK_HOSTPORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    location / {
      proxy_pass http://sink;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering on;
    }
  }
}
CONF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
for _ in $(seq 1 100); do
  curl -s -o /dev/null -X POST --data x "http://127.0.0.1:$NGINX_PORT/" && break
  sleep 0.1
done

KEY=bench-key
DOCGATE_SANDBOX_KEY=$KEY RUST_LOG=warn "$BIN/docgate" serve --listen 127.0.0.1:0 \
  --data-dir "$WORK/docgate" >"$WORK/docgate.out" 2>&1 &
DOCGATE_PID=$!; PIDS+=("$DOCGATE_PID")
GW_URL=$(wait_url "$WORK/docgate.out" "docgate listening on ")

TALER_EMULATOR_URL=$(grep -o 'taler   emulator at [^ ]*' "$WORK/docgate.out" | awk '{print $4}')
[ -n "$TALER_EMULATOR_URL" ] || { echo "the sandbox did not say where its Taler emulator is" >&2; exit 1; }
export QUICK JSON CLIENT BIN KEY SINK_URL SINK_PID NGINX_PID DOCGATE_PID GW_URL WORK TALER_EMULATOR_URL
export NGINX_URL="http://127.0.0.1:$NGINX_PORT"
python3 - <<'PY'
import json, os, statistics, subprocess, time, uuid

quick = os.environ["QUICK"] == "1"
binary = os.environ["BIN"]
tick = os.sysconf("SC_CLK_TCK")
MiB, KiB = 1 << 20, 1 << 10

def procs(pid):
    """pid and its children (nginx's workers)."""
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out

def cpu_ticks(pids):
    total = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total

def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

def reset_peak(pids):
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass

run_id = uuid.uuid4().hex[:8]
targets = {
    "direct": dict(pid=int(os.environ["SINK_PID"]), url=os.environ["SINK_URL"] + "/upload",
                   headers=["Content-Type: application/pdf"]),
    "nginx": dict(pid=int(os.environ["NGINX_PID"]), url=os.environ["NGINX_URL"] + "/upload",
                  headers=["Content-Type: application/pdf"]),
    "docgate": dict(pid=int(os.environ["DOCGATE_PID"]),
                    url=os.environ["GW_URL"] + "/v1/uploads/taler?payto=payto://x-taler-bank/bank.example.com/b"
                    + run_id + "-{scenario}-{round}-{n}",
                    headers=["Content-Type: application/pdf", "Authorization: Bearer " + os.environ["KEY"]]),
}
order = ["direct", "nginx", "docgate"]

# (size, concurrency, uploads per run)
if quick:
    rounds = 3
    scenarios = [(1 * MiB, 1, 10), (16 * MiB, 1, 3), (64 * MiB, 1, 1),
                 (10 * KiB, 1, 100), (10 * KiB, 8, 300), (10 * KiB, 32, 500), (10 * KiB, 64, 500)]
else:
    rounds = 5
    scenarios = [(1 * MiB, 1, 40), (16 * MiB, 1, 10), (64 * MiB, 1, 4), (16 * MiB, 8, 32),
                 (10 * KiB, 1, 500), (10 * KiB, 8, 2000), (10 * KiB, 32, 3000), (10 * KiB, 64, 3000)]

TALER_MAX = 16 * MiB
FINEXT_FIELDS = ["provider=finext", "kind=id", "username=lili111", "id_type=Passport",
                 "id_number=X1234567", "issued_by=DE", "issued_date=2024-01-15",
                 "expiration_date=2034-01-14", "language=German"]

def load(target, size, conc, count, scenario, rnd):
    t = targets[target]
    url = t["url"].replace("{scenario}", str(scenario)).replace("{round}", str(rnd))
    method = "PUT"
    extra = ["--retry-503"]
    if size > TALER_MAX:
        method = "POST"
        if target == "docgate":
            url = os.environ["GW_URL"] + "/v1/uploads"
        extra += ["--part", "front"]
        for f in FINEXT_FIELDS:
            extra += ["--field", f]
    # The small documents go through the chosen client; the large ones and multipart always
    # through `load` (its bodies are built once and shared, so the client's cost stays small).
    client = [f"{binary}/load"]
    if os.environ["CLIENT"] == "aiohttp" and size < MiB:
        client = ["python3", os.path.join(os.getcwd(), "scripts", "aioload.py")]
    cmd = client + ["--url", url, "--method", method, "--size", str(size),
           "--count", str(count), "--concurrency", str(conc)] + extra
    for h in t["headers"]:
        cmd += ["--header", h]
    pids = procs(t["pid"])
    before = cpu_ticks(pids)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    r["cpu_ms_per_upload"] = (cpu_ticks(pids) - before) * 1000.0 / tick / count
    r["threads"] = sum(status(p, "Threads") for p in pids)
    r["hwm_kib"] = sum(status(p, "VmHWM") for p in pids)
    return r

# Warm-up: connections, first-use work (docgate measures its digest costs once).
for name in order:
    load(name, 64 * KiB, 4, 16, "warm", 0)

def size_name(s):
    return f"{s // MiB} MiB" if s >= MiB else f"{s // KiB} KiB"

def med_range(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"

started = time.time()
report = [dict(small_document_client=os.environ["CLIENT"])]
print(f"small documents sent by: {os.environ['CLIENT']}")
print(f"{'document':>8} {'conc':>4} {'server':>8} {'uploads/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
      f"{'CPU ms/upl':>10} {'peak RSS':>9} {'threads':>7} {'errors':>6} {'503s':>5}")
for si, (size, conc, count) in enumerate(scenarios):
    runs = {name: [] for name in order}
    for name in order:
        reset_peak(procs(targets[name]["pid"]))
    for rnd in range(rounds):
        k = rnd % len(order)
        for name in order[k:] + order[:k]:
            runs[name].append(load(name, size, conc, count, si, rnd))
    row = dict(size=size, concurrency=conc, count=count, rounds=rounds, servers={})
    for name in order:
        rs = runs[name]
        s = dict(
            uploads_per_s=statistics.median(r["uploads_per_s"] for r in rs),
            p50_ms=statistics.median(r["p50_ms"] for r in rs),
            p99_ms=statistics.median(r["p99_ms"] for r in rs),
            cpu_ms_per_upload=statistics.median(r["cpu_ms_per_upload"] for r in rs),
            peak_rss_mib=max(r["hwm_kib"] for r in rs) / 1024,
            threads=max(r["threads"] for r in rs),
            errors=sum(r["errors"] for r in rs),
            retries=sum(r["retries_503"] for r in rs),
            first_error=next((r["first_error"] for r in rs if r["first_error"]), None),
            wall_s=[r["wall_s"] for r in rs],
        )
        row["servers"][name] = s
        print(f"{size_name(size):>8} {conc:>4} {name:>8} {s['uploads_per_s']:>10.1f} {s['p50_ms']:>8.2f} "
              f"{s['p99_ms']:>8.2f} {s['cpu_ms_per_upload']:>10.2f} {s['peak_rss_mib']:>6.1f} MiB "
              f"{s['threads']:>7} {s['errors']:>6} {s['retries']:>5}")
        if s["first_error"]:
            print(f"{'':>24} first error: {s['first_error']}")
    dg = row["servers"]["docgate"]["wall_s"]
    vs_nginx = [d / n for d, n in zip(dg, row["servers"]["nginx"]["wall_s"])]
    vs_direct = [d / n for d, n in zip(dg, row["servers"]["direct"]["wall_s"])]
    row["docgate_over_nginx"] = vs_nginx
    row["docgate_over_direct"] = vs_direct
    via = " (docgate → Finext)" if size > TALER_MAX else ""
    print(f"{'':>14} wall-time ratio docgate/nginx {med_range(vs_nginx)}, "
          f"docgate/direct {med_range(vs_direct)} ({rounds} rounds of {count}){via}")
    report.append(row)
# The 16 MiB Taler target: docgate ≤ 1.15 × (the same upload sent straight to the emulator,
# signed as docgate signs it, + one SHA-512 pass over the document, which any client must make
# before it sends). Both go to the sandbox's own emulator, interleaved.
key_file = os.path.join(os.environ["WORK"], "docgate", "emulators", "taler", "sandbox-extern-key")
emulator_url = os.environ["TALER_EMULATOR_URL"]
size, count = 16 * MiB, 3
sides = {"docgate": [], "emulator": [], "sha512": []}
for rnd in range(rounds):
    pair = ["docgate", "emulator"] if rnd % 2 == 0 else ["emulator", "docgate"]
    for side in pair:
        if side == "docgate":
            r = load("docgate", size, 1, count, "taler16", rnd)
        else:
            out = subprocess.run(
                [f"{binary}/load", "--url", emulator_url, "--method", "POST", "--size", str(size),
                 "--count", str(count), "--concurrency", "1",
                 "--header", "Content-Type: application/pdf", "--taler-key-file", key_file,
                 "--taler-payto", f"payto://x-taler-bank/bank.example.com/direct{run_id}-{rnd}-{{n}}"],
                check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            sides["sha512"].append(r["sha512_ms"])
        if r["errors"]:
            print(f"  {side}: {r['errors']} errors, first: {r['first_error']}")
        sides[side].append(r["p50_ms"])
ratios = [d / (e + h) for d, e, h in zip(sides["docgate"], sides["emulator"], sides["sha512"])]
print(f"16 MiB Taler at 1: docgate p50 {med_range(sides['docgate'])} ms; straight to the emulator "
      f"{med_range(sides['emulator'])} ms + one SHA-512 pass {med_range(sides['sha512'])} ms; "
      f"docgate / (emulator + SHA-512) {med_range(ratios)} (target ≤ 1.15)")
report.append(dict(taler16=dict(docgate_p50_ms=sides["docgate"], emulator_p50_ms=sides["emulator"],
                                sha512_ms=sides["sha512"], ratio=ratios)))
print(f"({time.time() - started:.0f} s of measurement, {'quick' if quick else 'full'} mode; "
      f"CPU and RSS are the server's own: nginx = master + workers; docgate includes the "
      f"in-process Taler emulator)")
if os.environ.get("JSON"):
    with open(os.environ["JSON"], "w") as f:
        json.dump(report, f, indent=1)
PY
