#!/usr/bin/env python3
"""The ledger's share of a small upload: gateways on SQLite and on PostgreSQL, side by side.

    scripts/bench-ledgers.py BIN[+BIN...] [LEDGERS] CONCURRENCY ROUNDS COUNT
    e.g. scripts/bench-ledgers.py target/release/docgate sqlite,postgres 32 3 3000

For each binary and ledger (default both) a gateway (`BIN serve --config`, one tenant,
Taler, spool not encrypted, documents removed once delivered) is started in front of one
shared `docgate emulate taler` process, so each process's CPU is its own. Each PostgreSQL
gateway gets a database of its own on $DOCGATE_BENCH_POSTGRES (default
postgres://postgres@127.0.0.1:5432), dropped at the end. Rounds of COUNT uploads of 10 KiB
(a new payto each) are sent with the benches crate's `load` bin, gateways alternating per
round. Prints per gateway the median [min-max] over rounds of uploads/s, p50 and p99 ms, and
per upload: the gateway's, the emulator's and PostgreSQL's CPU ms (/proc, every process of
the server's user) and, on PostgreSQL, the transactions committed in its database
(pg_stat_database) and the server's WAL syncs (pg_stat_wal). Build first: cargo build --release -p docgate -p docgate-benches --bins."""
import json, os, re, shutil, statistics, subprocess, sys, tempfile, time, uuid

args = sys.argv[1:]
bins = args[0].split("+")
ledgers = ["sqlite", "postgres"]
if len(args) == 5:
    ledgers = args[1].split(",")
    args = args[:1] + args[2:]
conc, rounds, count = int(args[1]), int(args[2]), int(args[3])
pg = os.environ.get("DOCGATE_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
target = os.environ.get("CARGO_TARGET_DIR", "target")
load = os.path.join(target, "release", "load")
tick = os.sysconf("SC_CLK_TCK")
work = tempfile.mkdtemp(prefix="ledgers")
procs, databases = [], []


def psql(db, sql):
    return subprocess.run(["psql", "-qtAX", f"{pg}/{db}", "-c", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def listening(out):
    for _ in range(300):
        m = re.search(r"listening on (\S+)", open(out).read())
        if m:
            return m.group(1)
        time.sleep(0.1)
    sys.exit(f"no `listening on` in {out}: {open(out).read()}")


def start(name, argv, env=None):
    out = f"{work}/{name}.out"
    p = subprocess.Popen(argv, stdout=open(out, "w"), stderr=subprocess.STDOUT,
                         env=dict(os.environ, RUST_LOG="warn", **(env or {})))
    procs.append(p)
    return p, listening(out)


def cpu_ticks(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except FileNotFoundError:
        return 0


def postgres_ticks():
    """Every process of the server's user: backends, WAL writer, checkpointer."""
    uid = os.stat("/var/run/postgresql").st_uid if os.path.exists("/var/run/postgresql") else None
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if uid is not None and os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            if open(f"/proc/{pid}/comm").read().strip() not in ("postgres", "postmaster"):
                continue
        except FileNotFoundError:
            continue
        total += cpu_ticks(pid)
    return total


def wal_syncs():
    """The server's WAL syncs (pg_stat_wal, the whole cluster: run with nothing else on it)."""
    return int(psql("postgres", "SELECT wal_sync FROM pg_stat_wal"))


def commits(db):
    return int(psql(db, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'"))


try:
    emulator, emu_url = start("emulator", [bins[0], "emulate", "taler", "--listen", "127.0.0.1:0",
                                           "--data-dir", f"{work}/emulator"])
    key = re.search(r"test credential\): (\S+)", open(f"{work}/emulator.out").read()).group(1)
    with open(f"{work}/taler.key", "w") as f:
        os.chmod(f.name, 0o600)
        f.write(key)
    gateways = []
    for i, binary in enumerate(bins):
        for ledger in ledgers:
            name = f"g{i}-{ledger}"
            line, db = "", None
            if ledger == "postgres":
                db = f"bench_{uuid.uuid4().hex[:12]}"
                psql("postgres", f"CREATE DATABASE {db}")
                databases.append(db)
                line = f'ledger = "{pg}/{db}"'
            with open(f"{work}/{name}.toml", "w") as f:
                f.write(f"""listen = "127.0.0.1:0"
data_dir = "{work}/{name}"
{line}

[[tenants]]
name = "bench"
api_key = {{ env = "BENCH_API_KEY" }}
providers = ["taler"]

[providers.taler]
base_url = "{emu_url}/"
extern_key = {{ file = "{work}/taler.key" }}
purpose = 65535
""")
            p, url = start(name, [binary, "serve", "--config", f"{work}/{name}.toml"],
                           {"BENCH_API_KEY": "bench"})
            gateways.append((f"{binary[-30:]} {ledger}", p, url, db))
    results = {}
    n = 0
    for r in range(rounds):
        for (label, p, url, db) in (gateways if r % 2 == 0 else gateways[::-1]):
            n += 1
            before = (cpu_ticks(p.pid), cpu_ticks(emulator.pid), postgres_ticks(), db and commits(db),
                      db and wal_syncs())
            out = subprocess.run([load, "--url", f"{url}/v1/uploads/taler?payto=payto://x-taler-bank/bank.example.com/l{n}-{{n}}",
                                  "--method", "PUT", "--size", "10240", "--count", str(count),
                                  "--concurrency", str(conc), "--retry-503",
                                  "--header", "Content-Type: application/pdf",
                                  "--header", "Authorization: Bearer bench"],
                                 capture_output=True, text=True, check=True).stdout
            j = json.loads(out)
            per = lambda t: t * 1000 / tick / count
            j["gateway"] = per(cpu_ticks(p.pid) - before[0])
            j["emulator"] = per(cpu_ticks(emulator.pid) - before[1])
            j["postgres"] = per(postgres_ticks() - before[2]) if db else 0.0
            j["commits"] = (commits(db) - before[3]) / count if db else 0.0
            j["syncs"] = (wal_syncs() - before[4]) / count if db else 0.0
            results.setdefault(label, []).append(j)
    print(f"{rounds} rounds of {count} × 10 KiB Taler uploads at concurrency {conc}; "
          "median [min-max]; CPU in ms per upload")
    for (label, *_rest) in gateways:
        rs = results[label]
        f = lambda k, d=1: f"{statistics.median(x[k] for x in rs):.{d}f} [{min(x[k] for x in rs):.{d}f}-{max(x[k] for x in rs):.{d}f}]"
        print(f"{label:>40}  up/s {f('uploads_per_s', 0)}  p50 {f('p50_ms')}  p99 {f('p99_ms')}  "
              f"gateway {f('gateway', 2)}  emulator {f('emulator', 2)}  postgres {f('postgres', 2)}  "
              f"commits {f('commits', 2)}  WAL syncs {f('syncs', 2)}  errors {sum(x['errors'] for x in rs)}")
finally:
    for p in procs:
        p.terminate()
        p.wait()
    for db in databases:
        try:
            psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        except subprocess.CalledProcessError as e:
            print(f"dropping {db}: {e.stderr}", file=sys.stderr)
    shutil.rmtree(work)
