#!/usr/bin/env bash
# Large-transaction benchmark: STREAMING=off against STREAMING=on, side by side in one run, on a
# live PostgreSQL 15. See BENCHMARKS.md ("Large transactions") for what is measured.
#
# usage: benches/streaming.sh [--rows N] [--reps N] [--no-build] [--spill-memory BYTES]
#   --rows      rows of the big transaction (2,000,000 by default: about 1 GB of WAL)
#   --reps      repetitions; modes alternate off, on, on, off, ... (1 by default)
#   --spill-memory  SPILL_MEMORY_BYTES for the runs (dbmazz's default when not given)
#
# Each run starts dbmazz (release build, NDJSON sink to a file on disk) on a fresh slot, then:
# one INSERT ... SELECT of N rows in one transaction, a small transaction committed every
# 200 ms while it runs, and 5 small transactions right after its commit. It reports the bytes
# PostgreSQL spilled to its own disk for the slot (pg_stat_replication_slots), the time from the
# big commit until its last row is in the sink, the delay of the small transactions, dbmazz's
# peak RSS and the peak size of SPILL_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=2000000; REPS=1; BUILD=1; SPILL_MEM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --spill-memory) SPILL_MEM="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/postgres" ] || scripts/install-deps.sh
if [ "$BUILD" = 1 ]; then
  cargo build --release --locked --bin dbmazz >&2
fi
export DBMAZZ_BIN=$ROOT/target/release/dbmazz ROWS REPS SPILL_MEM PGBIN
exec python3 benches/streaming/run.py
