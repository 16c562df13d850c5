#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs dependencies, checks formatting
# and lints, then runs every unit and integration test against real PostgreSQL 15 servers that
# the test support starts itself. Slow soak runs are not part of it (see scripts/soak.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> layering: no import cycles, data flows one way"
python3 scripts/check-layers.py src

echo "==> deployment kit: Dockerfile, Helm chart, alert rules, dashboard"
scripts/check-deploy.sh

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo build (incl. tools/starrocks-double, which the tests start)"
cargo build --workspace --locked

echo "==> cargo test"
cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-2}"
