#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs dependencies, checks formatting
# and lints, then runs every unit and integration test against real PostgreSQL 15 servers that
# the test support starts itself, and the core subset (replication, snapshot, StarRocks sink,
# kill -9, schema change, streamed transactions, slot health, version and managed-role checks)
# against PostgreSQL 14, 16, 17 and 18. Slow soak runs are not part of it (see scripts/soak.sh).
#
# PG_MATRIX="16 17" narrows the other majors, PG_MATRIX="" skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# 13 is started once to see it refused; 16 and 17 also serve the failover tests.
scripts/install-pg.sh 13 14 16 17 18

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

echo "==> cargo test (the whole suite, PostgreSQL 15)"
cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-2}"

# The core subset, by test-name filter, on every other supported major.
core=(replication:: snapshot:: starrocks:: cdc:: schema:: streaming:: wal_guard:: pg_versions:: managed::)
for major in ${PG_MATRIX-14 16 17 18}; do
  echo "==> core subset on PostgreSQL $major"
  started=$SECONDS
  PG_MAJOR=$major cargo test --locked --test it -- "${core[@]}" \
    --test-threads "${TEST_THREADS:-2}"
  echo "    PostgreSQL $major: $((SECONDS - started)) s"
done
