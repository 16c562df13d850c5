#!/usr/bin/env bash
# End-to-end benchmark: dbmazz against PostgreSQL's own limit (pg_recvlogical) on the same WAL.
# See BENCHMARKS.md for what is measured and how to read the tables.
#
# usage: benches/e2e.sh [--quick] [--reps N] [--workloads "bulk oltp mixed"]
#                       [--consumers "pg_recvlogical dbmazz_ndjson dbmazz_sr_discard dbmazz_sr_store"]
#                       [--skip "idle latency"] [--profile auto|always|never] [--no-build] [--keep-tmp]
#                       [--out-dir DIR] [--idle-s S] [--latency-s S]
#   --quick   1 repetition, small workloads (100k-row bulk, 20k pgbench txns, 20k mixed steps),
#             10 s idle and 10 s latency phases: a smoke test in ~3 minutes (~8 with profiles)
#   default   3 repetitions of the peers' workloads (1M-row transaction, 300k pgbench txns,
#             200k TOAST mix steps), 60 s idle, 2 x 30 s latency phases per load: ~15 minutes
#             on 2 cores, plus ~1-2 minutes per missed target for its diagnosis
# Env: E2E_FLUSH_SIZE, E2E_FLUSH_MAX_BYTES (unset: dbmazz's defaults), E2E_FLUSH_INTERVAL_MS (100),
#      E2E_TLS=1 (every consumer over TLS, sslmode=require; a self-signed certificate),
#      E2E_KEEP_PERF=1 (keep the diagnosis's perf.data files beside its reports).
#
# Output: a markdown report on stdout and in OUT_DIR/results-<date>.md, raw data in .json beside it
# (OUT_DIR: benches/e2e for full runs, target/e2e for --quick); full perf/massif reports of the
# diagnosis in target/e2e/profiles-<date>/, consumer logs in target/e2e/last-logs with --keep-tmp
# or after a failure. Everything runs on 127.0.0.1 in throwaway clusters under a temp dir; every
# process and directory it started is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ORIG_ARGS="$*"

QUICK=0; REPS=""; WORKLOADS="bulk oltp mixed"; CONSUMERS=""; SKIP=""; PROFILE=auto
BUILD=1; KEEP=0; OUT_DIR=""; IDLE_S=""; LAT_S=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --reps) REPS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --consumers) CONSUMERS="$2"; shift ;;
    --skip) SKIP="$2"; shift ;;
    --profile) PROFILE="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --keep-tmp) KEEP=1 ;;
    --out-dir) OUT_DIR="$2"; shift ;;
    --idle-s) IDLE_S="$2"; shift ;;
    --latency-s) LAT_S="$2"; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ $QUICK = 1 ]; then
  REPS=${REPS:-1}; IDLE_S=${IDLE_S:-10}; LAT_S=${LAT_S:-10}; LAT_REPS=1; OUT_DIR=${OUT_DIR:-$ROOT/target/e2e}
else
  REPS=${REPS:-3}; IDLE_S=${IDLE_S:-60}; LAT_S=${LAT_S:-30}; LAT_REPS=2; OUT_DIR=${OUT_DIR:-$ROOT/benches/e2e}
fi
PGBIN=/usr/lib/postgresql/15/bin
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- what this needs (idempotent)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in postgresql-15 postgresql-client-15 python3 python3-venv procps util-linux; do
  have_pkg "$pkg" || need+=("$pkg")
done
optional=()
if [ "$PROFILE" != never ]; then
  command -v perf >/dev/null || optional+=(linux-perf)      # profiles of missed targets
  command -v valgrind >/dev/null || optional+=(valgrind)    # heap profile of missed memory targets
fi
if [ ${#need[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ]; then
  log "installing ${need[*]} ${optional[*]}"
  $SUDO apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
  for pkg in "${optional[@]}"; do
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >&2 \
      || log "$pkg unavailable: the diagnosis that needs it is skipped"
  done
  # The Debian package starts a default cluster on 5432; this benchmark uses its own clusters.
  if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q '^15 *main .*online'; then
    $SUDO pg_ctlcluster 15 main stop || true
  fi
fi
VENV=$ROOT/target/e2e-venv
if ! "$VENV/bin/python" -c 'import psycopg2, pymysql' 2>/dev/null; then
  log "python venv $VENV (psycopg2-binary, pymysql)"
  mkdir -p "$ROOT/target"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check psycopg2-binary pymysql >&2
fi
if [ $BUILD = 1 ]; then
  log "cargo build --release -p dbmazz -p starrocks-double"
  cargo build --release -q -p dbmazz -p starrocks-double >&2
fi
for b in dbmazz starrocks-double; do
  [ -x "target/release/$b" ] || { echo "target/release/$b missing (drop --no-build)" >&2; exit 1; }
done

# ---------------------------------------------------------------- temp dir and cleanup
TMP=$(mktemp -d "${E2E_TMPDIR:-/tmp}/dbmazz-e2e.XXXXXX")
chmod 755 "$TMP"   # the postgres user must reach its data directories inside
BENCH_PID=""
cleanup() {
  local rc=$?
  set +e
  [ -n "$BENCH_PID" ] && kill -TERM "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null
  # every process bench.py started, by pid, if it is still one of ours
  if [ -f "$TMP/pids" ]; then
    while read -r pid; do
      [ -r "/proc/$pid/cmdline" ] || continue
      if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qE 'dbmazz|starrocks-double|pg_recvlogical|pgbench|perf record'; then
        kill -KILL "$pid" 2>/dev/null
      fi
    done < "$TMP/pids"
  fi
  # every cluster under the temp dir
  for d in "$TMP"/pg-*; do
    [ -f "$d/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  if [ $KEEP = 1 ] || [ $rc -ne 0 ]; then
    mkdir -p "$ROOT/target/e2e"; rm -rf "$ROOT/target/e2e/last-logs"
    cp -r "$TMP/logs" "$ROOT/target/e2e/last-logs" 2>/dev/null
    log "logs kept in target/e2e/last-logs"
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The release binaries are shared with everyone building in this tree: run copies of them, so that
# a rebuild by someone else during the run cannot swap the program under test.
mkdir -p "$TMP/bin"
cp -p target/release/dbmazz target/release/starrocks-double "$TMP/bin/"

# ---------------------------------------------------------------- run
mkdir -p "$OUT_DIR"
STAMP=$(date +%Y%m%d-%H%M)
JSON="$OUT_DIR/results-$STAMP.json"
MD="$OUT_DIR/results-$STAMP.md"
ARGS=(--tmp "$TMP" --out "$JSON" --pgbin "$PGBIN" --dbmazz "$TMP/bin/dbmazz"
      --double "$TMP/bin/starrocks-double" --reps "$REPS" --workloads "$WORKLOADS"
      --idle-s "$IDLE_S" --latency-s "$LAT_S" --latency-reps "$LAT_REPS" --profile "$PROFILE" --profiles-dir "$ROOT/target/e2e/profiles-$STAMP"
      --flush-size "${E2E_FLUSH_SIZE:-0}" --flush-interval-ms "${E2E_FLUSH_INTERVAL_MS:-100}"
      --flush-max-bytes "${E2E_FLUSH_MAX_BYTES:-0}")
[ $QUICK = 1 ] && ARGS+=(--quick)
[ -n "$CONSUMERS" ] && ARGS+=(--consumers "$CONSUMERS")
[ -n "$SKIP" ] && ARGS+=(--skip "$SKIP")
export E2E_COMMAND="benches/e2e.sh${ORIG_ARGS:+ $ORIG_ARGS}"
log "temp dir $TMP; results $JSON"
# Other people's builds may share the 2 cores: bench.py runs the whole measurement (clusters,
# consumers) in a session of its own whose scheduler group gets priority E2E_NICE (default -10;
# 0 disables); it also waits for a quiet machine before each run and records the CPU others used.
NICE=${E2E_NICE:--10}
[ "$(id -u)" -eq 0 ] || NICE=0
"$VENV/bin/python" benches/e2e/bench.py "${ARGS[@]}" --nice "$NICE" &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=""
"$VENV/bin/python" benches/e2e/report.py "$JSON" | tee "$MD"
log "report: $MD"
