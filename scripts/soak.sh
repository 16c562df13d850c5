#!/usr/bin/env bash
# Slow checks that are not part of the regular suite (scripts/test.sh): each takes minutes.
# - a generated 1 GB schema upload (COPY data, generated while it is sent) applied with the
#   daemon's RSS staying under 64 MiB and WatchJob progress rising monotonically to 100.
# The regular suite runs the same check on 100 MB.
# - the bank soak: transfers for SOAK_SECONDS (default 3600) under random network faults,
#   PostgreSQL crashes and kill -9, then every account in the sink equals the source
#   (SOAK_SEED replays a fault sequence; the log lists the faults injected).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --test it -- --ignored --nocapture --test-threads 1 \
  provision_rest::a_1_gb_upload_streams_with_flat_memory_and_monotonic_progress
cargo build -q -p starrocks-double
cargo test --test it -- --ignored --nocapture --test-threads 1 \
  soak::bank_transfers_survive_network_faults_postgres_restarts_and_kill_9
