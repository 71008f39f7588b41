#!/usr/bin/env bash
# Every test: unit, integration, end to end through the real binary, the ledger suite on
# SQLite and PostgreSQL, and interop with real third-party clients (silasdk,
# ost-kyc-sdk-python, PyNaCl/taler-util, requests) from PyPI.
#
# Needs (docs/prerequisites.md): Rust >= 1.89 (cargo), a C compiler, OpenSSL's headers
# (libssl-dev, pkg-config), Python 3.11 with venv,
# and PostgreSQL: the one answering on 127.0.0.1:5432 (trust auth, database `test`), the one
# DOCGATE_TEST_POSTGRES_URL names, or else a throwaway cluster this script starts under
# target/ with the system's initdb/pg_ctl and stops when it exits. Extra arguments go to
# `cargo test` (e.g. a test name filter).
#
# DOCGATE_TEST_POSTGRES_PORT (default 5432) is the port probed for a running PostgreSQL;
# point it at a closed port to force the throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# --- tools ----------------------------------------------------------------------------------

command -v cargo >/dev/null ||
    die "cargo not found: install Rust >= 1.89 with rustup (https://rustup.rs); Debian's \`cargo\` package is older than that"
rust_version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.89.0\n' "$rust_version" | sort -V | head -n1)" != "1.89.0" ]; then
    die "rustc $rust_version is older than 1.89: run \`rustup update stable\`"
fi
command -v cc >/dev/null ||
    die "no C compiler (cc): install the Debian package \`build-essential\` (SQLite and digest code are compiled from C)"
{ command -v pkg-config >/dev/null && pkg-config --exists libcrypto; } ||
    die "OpenSSL's libcrypto was not found by pkg-config: install the Debian packages \`libssl-dev\` and \`pkg-config\` (the pipeline's digests are libcrypto's)"
command -v python3 >/dev/null ||
    die "python3 not found: install the Debian package \`python3\` (3.11; the interop pins are for CPython 3.11)"
python3 -c 'import venv, ensurepip' 2>/dev/null ||
    die "python3 cannot create virtualenvs: install the Debian package \`python3-venv\`"
python_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$python_version" = "3.11" ] ||
    say "warning: python3 is $python_version; the interop requirements are pinned for 3.11 and may not install"

# --- PostgreSQL -----------------------------------------------------------------------------

# Is something accepting TCP connections on 127.0.0.1:$1?
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback port nobody listens on (racy in theory; the cluster's start would then fail).
free_port() {
    local port
    for port in $(seq 55432 55531); do
        answers "$port" || {
            echo "$port"
            return 0
        }
    done
    return 1
}

# The directory of the server's initdb, pg_ctl and postgres: from PATH (through symlinks,
# which Debian puts in /usr/local/bin or not at all) or the newest /usr/lib/postgresql/*/bin.
pg_bin_dir() {
    local dir
    for dir in "$(dirname "$(readlink -f "$(command -v initdb || echo /nonexistent)")")" \
        $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

pg_cluster_dir=""
pg_as=()
stop_postgres() {
    [ -n "$pg_cluster_dir" ] || return 0
    if [ -f "$pg_cluster_dir/data/postmaster.pid" ]; then
        "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_cluster_dir/data" -m fast -w stop >/dev/null 2>&1 || true
        say "stopped the throwaway PostgreSQL"
    fi
    rm -rf "$pg_cluster_dir"
    pg_cluster_dir=""
}

# Start a throwaway cluster (trust auth, database `test`) and export its URL.
start_postgres() {
    pg_bin=$(pg_bin_dir) ||
        die "no PostgreSQL answers on 127.0.0.1:$probe_port and initdb/pg_ctl are missing: install the Debian package \`postgresql\` (or set DOCGATE_TEST_POSTGRES_URL)"
    local port
    port=$(free_port) || die "no free port in 55432-55531 for a throwaway PostgreSQL"
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user, in a
    # directory that user owns (under target/ when it can reach it, else under /tmp).
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 ||
            die "running as root and there is no \`postgres\` user to run PostgreSQL as (the Debian package \`postgresql\` creates it)"
        pg_as=(runuser -u postgres --)
    fi
    mkdir -p target
    pg_cluster_dir="$PWD/target/test-postgres.$$"
    mkdir -p "$pg_cluster_dir"
    trap stop_postgres EXIT
    # Without these an interrupted script would die without running the EXIT trap.
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ ${#pg_as[@]} -gt 0 ]; then
        chown postgres: "$pg_cluster_dir"
        if ! "${pg_as[@]}" test -w "$pg_cluster_dir"; then
            rm -rf "$pg_cluster_dir"
            pg_cluster_dir=$(mktemp -d /tmp/docgate-test-postgres.XXXXXX)
            chown postgres: "$pg_cluster_dir"
        fi
    fi
    say "nothing answers on 127.0.0.1:$probe_port: starting a throwaway PostgreSQL ($pg_bin) on 127.0.0.1:$port in $pg_cluster_dir"
    "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_cluster_dir/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-instructions >"$pg_cluster_dir/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -n 5 "$pg_cluster_dir/initdb.log")"
    # The database the tests use, created in single-user mode: no client tools needed.
    echo "CREATE DATABASE test" |
        "${pg_as[@]}" "$pg_bin/postgres" --single -D "$pg_cluster_dir/data" postgres \
            >"$pg_cluster_dir/createdb.log" 2>&1 ||
        die "creating the database test failed: $(tail -n 5 "$pg_cluster_dir/createdb.log")"
    "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_cluster_dir/data" -l "$pg_cluster_dir/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k '' -c fsync=off" start >/dev/null ||
        die "the throwaway PostgreSQL did not start: $(tail -n 5 "$pg_cluster_dir/server.log")"
    export DOCGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/test"
    say "DOCGATE_TEST_POSTGRES_URL=$DOCGATE_TEST_POSTGRES_URL (stopped and removed when this script exits)"
}

probe_port=${DOCGATE_TEST_POSTGRES_PORT:-5432}
if [ -n "${DOCGATE_TEST_POSTGRES_URL:-}" ]; then
    say "PostgreSQL from DOCGATE_TEST_POSTGRES_URL"
elif answers "$probe_port"; then
    export DOCGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$probe_port/test"
else
    start_postgres
fi

# --- interop virtualenv ---------------------------------------------------------------------

# One virtualenv with every provider's pinned interop requirements, rebuilt when they change.
venv=target/interop-venv
mapfile -t reqs < <(ls providers/*/interop/requirements.txt interop/python/requirements.txt)
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]; then
    say "creating $venv from ${reqs[*]}"
    rm -rf "$venv"
    python3 -m venv "$venv"
    args=()
    for r in "${reqs[@]}"; do args+=(-r "$r"); done
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${args[@]}"
    echo "$want" >"$venv/.requirements"
fi
export DOCGATE_INTEROP_PYTHON="$PWD/$venv/bin/python"

# Schemathesis in a virtualenv of its own (its pins clash with the SDKs').
st_venv=target/schemathesis-venv
st_want=$(sha256sum interop/schemathesis/requirements.txt | cut -d' ' -f1)
if [ ! -x "$st_venv/bin/st" ] || [ "$(cat "$st_venv/.requirements" 2>/dev/null)" != "$st_want" ]; then
    say "creating $st_venv from interop/schemathesis/requirements.txt"
    rm -rf "$st_venv"
    python3 -m venv "$st_venv"
    "$st_venv/bin/pip" install --quiet --disable-pip-version-check -r interop/schemathesis/requirements.txt
    echo "$st_want" >"$st_venv/.requirements"
fi
export DOCGATE_SCHEMATHESIS="$PWD/$st_venv/bin/st"

# The JavaScript clients (tus-js-client, …) from npm, exactly as locked, rebuilt when the
# lock file changes.
command -v node >/dev/null && command -v npm >/dev/null ||
    die "node and npm are needed for the browser-client tests: install the Debian packages \`nodejs\` and \`npm\`"
node_lock=$(sha256sum interop/node/package-lock.json | cut -d' ' -f1)
if [ "$(cat interop/node/node_modules/.lock-sha 2>/dev/null)" != "$node_lock" ]; then
    say "installing interop/node from its lock file"
    npm ci --prefix interop/node --no-audit --no-fund --loglevel=error
    echo "$node_lock" >interop/node/node_modules/.lock-sha
fi
export DOCGATE_INTEROP_NODE_DIR="$PWD/interop/node"

# The Uppy example (examples/uppy), installed from its lock file and bundled with esbuild;
# the browser tests load it.
uppy_lock=$(sha256sum examples/uppy/package-lock.json | cut -d' ' -f1)
if [ "$(cat examples/uppy/node_modules/.lock-sha 2>/dev/null)" != "$uppy_lock" ]; then
    say "installing examples/uppy from its lock file"
    npm ci --prefix examples/uppy --no-audit --no-fund --loglevel=error
    echo "$uppy_lock" >examples/uppy/node_modules/.lock-sha
fi
npm run --silent --prefix examples/uppy build >/dev/null
export DOCGATE_UPPY_DIR="$PWD/examples/uppy"

# The pages are tested in Debian's Chromium, driven by playwright-core (from the lock above).
chromium_bin=${DOCGATE_CHROMIUM:-$(command -v chromium || true)}
[ -n "$chromium_bin" ] && [ -x "$chromium_bin" ] ||
    die "chromium not found: install the Debian package \`chromium\` (the browser tests run the pages in it), or set DOCGATE_CHROMIUM"
export DOCGATE_CHROMIUM="$chromium_bin"

# Not `exec`: the EXIT trap must still stop a throwaway PostgreSQL afterwards.
cargo test --workspace --locked "$@"
