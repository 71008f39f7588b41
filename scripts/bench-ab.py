#!/usr/bin/env python3
"""Interleaved A/B of docgate binaries on small (or any) Taler uploads.

    scripts/bench-ab.py BIN[@VAR=VALUE;...][+BIN...] CONCURRENCIES ROUNDS COUNT [SIZE]
    e.g. scripts/bench-ab.py /tmp/old/docgate+target/release/docgate 1,8,32,64 3 1000

Starts `BIN serve` (the sandbox, Taler emulator in process) for each binary, each on a
fresh data dir and with the optional environment, then for each concurrency runs ROUNDS
rounds of COUNT uploads of SIZE bytes (default 10 KiB, a new payto each) with the benches
crate's `load` bin, the binaries' order alternating per round so a slow minute of the VM
hits all alike. Prints, per binary and concurrency, median [min-max] over the rounds of
uploads/s, p50 and p99 ms and the server's CPU ms per upload (/proc/PID/stat). Build the
`load` bin first: cargo build --release -p docgate-benches --bins."""
import json, os, re, shutil, statistics, subprocess, sys, tempfile, time
bins = sys.argv[1].split("+")
concs = [int(c) for c in sys.argv[2].split(",")]
rounds = int(sys.argv[3]); count = int(sys.argv[4]); size = int(sys.argv[5]) if len(sys.argv) > 5 else 10240
load = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "load")
tick = os.sysconf("SC_CLK_TCK")
servers = []
for i, spec in enumerate(bins):
    b, _, envs = spec.partition("@")
    extra = dict(kv.split("=", 1) for kv in envs.split(";") if kv)
    d = tempfile.mkdtemp(prefix="ab")
    out = open(f"{d}/out", "w")
    p = subprocess.Popen([b, "serve", "--listen", "127.0.0.1:0", "--data-dir", f"{d}/data"], stdout=out, stderr=out,
                         env=dict(os.environ, DOCGATE_SANDBOX_KEY="k", RUST_LOG="warn", **extra))
    for _ in range(100):
        m = re.search(r"docgate listening on (\S+)", open(f"{d}/out").read())
        if m: break
        time.sleep(0.1)
    servers.append((spec, p, m.group(1), d))
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
res = {}
n = 0
for c in concs:
    for r in range(rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for (b, p, url, d) in order:
            n += 1
            before = cpu(p.pid)
            o = subprocess.run([load, "--url", f"{url}/v1/uploads/taler?payto=payto://x-taler-bank/bank.example.com/ab{n}-{{n}}",
                                "--method", "PUT", "--size", str(size), "--count", str(count), "--concurrency", str(c),
                                "--retry-503", "--header", "Content-Type: application/pdf", "--header", "Authorization: Bearer k"],
                               capture_output=True, text=True, check=True).stdout
            j = json.loads(o)
            j["cpu"] = (cpu(p.pid) - before) * 1000 / tick / count
            res.setdefault((b, c), []).append(j)
for c in concs:
    for (b, p, url, d) in servers:
        rs = res[(b, c)]
        f = lambda k, d=1: f"{statistics.median(x[k] for x in rs):8.{d}f} [{min(x[k] for x in rs):.{d}f}-{max(x[k] for x in rs):.{d}f}]"
        print(f"c={c:3} {b[-40:]:>40} up/s {f('uploads_per_s')} p50 {f('p50_ms')} p99 {f('p99_ms')} cpu/upl {f('cpu', 2)} err {sum(x['errors'] for x in rs)}")
for (b, p, url, d) in servers:
    p.terminate(); p.wait(); shutil.rmtree(d)
