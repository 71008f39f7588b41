#!/usr/bin/env bash
# Every test: unit, integration, end to end through the real binary, the ledger suite on
# SQLite and PostgreSQL, and interop with real third-party clients (silasdk,
# ost-kyc-sdk-python, PyNaCl/taler-util, requests) from PyPI.
#
# Needs: cargo, python3 (with venv), PostgreSQL on 127.0.0.1:5432 with trust auth and a
# database `test` (override with DOCGATE_TEST_POSTGRES_URL). Extra arguments go to
# `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

# One virtualenv with every provider's pinned interop requirements, rebuilt when they change.
venv=target/interop-venv
mapfile -t reqs < <(ls providers/*/interop/requirements.txt)
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]; then
    echo "test.sh: creating $venv from ${reqs[*]}" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    args=()
    for r in "${reqs[@]}"; do args+=(-r "$r"); done
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${args[@]}"
    echo "$want" > "$venv/.requirements"
fi
export DOCGATE_INTEROP_PYTHON="$PWD/$venv/bin/python"

cargo test --workspace --locked "$@"
