#!/usr/bin/env bash
# Snapshot throughput against PostgreSQL's own read limit, in one run on one machine:
#   1. PostgreSQL alone: COPY (SELECT * FROM t) TO STDOUT into /dev/null (the read limit);
#   2. dbmazz's initial snapshot of the same table into starrocks-double --discard.
# Reports rows/s, MB/s (of COPY text) and the ratio 2/1. The pair runs REPS times (default 3),
# alternating, and the summary gives each run's ratio and the ratio of the medians: a single
# pair swings by ±15 % on these machines.
#
#   benches/snapshot.sh [ROWS]        (default 5000000)
#
# It also reports where the CPU went during the snapshot (dbmazz, the double, the PostgreSQL
# backends, everything else on the machine). PROFILE=1 records dbmazz with `perf record` and
# prints its top functions (needs linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-5000000}"
WORKERS="${SNAPSHOT_WORKERS:-2}"
REPS="${REPS:-3}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

scripts/install-deps.sh >/dev/null
command -v mysql >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-client >/dev/null; }
cargo build --release -p dbmazz -p starrocks-double 2>&1 | grep -E '^\s+(Compiling dbmazz|Finished)' || true

WORK=$(mktemp -d /tmp/dbmazz-snapbench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/pg/postmaster.pid" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
chown postgres "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$PG_BIN/initdb" -N -A trust -U postgres -D "$WORK/pg" >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o \
  "-c port=$PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK -c wal_level=logical -c fsync=off -c shared_buffers=512MB" start >/dev/null
PSQL=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)

echo "==> loading $ROWS rows"
"${PSQL[@]}" <<SQL
CREATE TABLE snap (id bigint PRIMARY KEY, customer_id bigint, status text, amount numeric(12,2),
                   created_at timestamptz, note text);
INSERT INTO snap SELECT g, g % 100000, (ARRAY['new','paid','shipped'])[g % 3 + 1], (g % 100000) / 100.0,
       '2026-01-01'::timestamptz + g * interval '1 second', 'note ' || md5(g::text)
  FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE snap;
SQL

now() { date +%s.%N; }
target/release/starrocks-double --discard --fe-port 0 --be-port 0 --mysql-port 0 --admin-port off \
  > "$WORK/double.ports" 2> "$WORK/double.log" &
PIDS+=($!)
DOUBLE=$!
for _ in $(seq 50); do [ -s "$WORK/double.ports" ] && break; sleep 0.1; done
FE=$(python3 -c "import json;print(json.load(open('$WORK/double.ports'))['fe'])")
MY=$(python3 -c "import json;print(json.load(open('$WORK/double.ports'))['mysql'])")
mysql -h127.0.0.1 -P"$MY" -uroot -e "CREATE DATABASE bench"
cpu_of() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0; }
machine_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
POSTMASTER=$(head -1 "$WORK/pg/postmaster.pid")
pg_cpu() { local t; t=$(cpu_of "$POSTMASTER"); for p in $(pgrep -P "$POSTMASTER"); do t=$((t + $(cpu_of "$p"))); done; echo "$t"; }

# One pair: PostgreSQL's COPY into /dev/null, then dbmazz's snapshot. Appends one line to runs.
run_pair() {
  local rep=$1 t0 t1 t2 t3 bytes pg0 dbl0 all0 pg1 dbl1 all1 dbm_cpu peak rss
  echo "==> run $rep/$REPS: PostgreSQL COPY (SELECT * FROM snap) TO STDOUT > /dev/null"
  t0=$(now)
  bytes=$("${PSQL[@]}" -c "COPY (SELECT * FROM snap) TO STDOUT" | wc -c)
  t1=$(now)
  # Let the COPY's backend (and the last run's) exit and be reaped: the postmaster counts their
  # CPU only then, which would put it inside the next window.
  sleep 1
  echo "==> run $rep/$REPS: dbmazz snapshot into starrocks-double --discard ($WORKERS workers)"
  pg0=$(pg_cpu); dbl0=$(cpu_of "$DOUBLE"); all0=$(machine_busy)
  PERF=()
  [ "${PROFILE:-0}" = 1 ] && [ "$rep" = "$REPS" ] && PERF=(perf record -F 999 -o "$WORK/perf.data" --)
  t2=$(now)
  # SNAPSHOT_MODE=always copies the table again on every run (the slot and the state tables stay).
  DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" TABLES=snap \
  STARROCKS_URL="http://127.0.0.1:$FE" STARROCKS_DB=bench STARROCKS_MYSQL_URL="mysql://root:@127.0.0.1:$MY/" \
  CREATE_TABLES=true SNAPSHOT_MODE=always SNAPSHOT_WORKERS="$WORKERS" SNAPSHOT_CHUNK_ROWS=250000 \
  FLUSH_SIZE=50000 FLUSH_MAX_BYTES=33554432 FLUSH_INTERVAL_MS=1000 GRPC_PORT=off \
    "${PERF[@]}" target/release/dbmazz 2> "$WORK/dbmazz.log" &
  DBMAZZ=$!
  PERFPID=
  if [ ${#PERF[@]} -gt 0 ]; then
    PERFPID=$DBMAZZ
    for _ in $(seq 100); do DBMAZZ=$(pgrep -P "$PERFPID" -x dbmazz || true); [ -n "$DBMAZZ" ] && break; sleep 0.05; done
  fi
  peak=0
  until grep -q "snapshot complete" "$WORK/dbmazz.log"; do
    kill -0 "$DBMAZZ" 2>/dev/null || { cat "$WORK/dbmazz.log"; exit 1; }
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$DBMAZZ/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.05
  done
  t3=$(now)
  # Backends of finished workers have exited: their CPU is in the postmaster's children total.
  dbm_cpu=$(cpu_of "$DBMAZZ"); pg1=$(pg_cpu); dbl1=$(cpu_of "$DOUBLE"); all1=$(machine_busy)
  kill -TERM "$DBMAZZ"; wait "${PERFPID:-$DBMAZZ}" || true
  sleep 1
  echo "$bytes $(echo "$t1 - $t0" | bc -l) $(echo "$t3 - $t2" | bc -l) $peak $dbm_cpu $((dbl1 - dbl0)) $((pg1 - pg0)) $((all1 - all0))" >> "$WORK/runs"
}

for rep in $(seq "$REPS"); do run_pair "$rep"; done

python3 - "$ROWS" "$(getconf CLK_TCK)" "$WORK/runs" <<'PY'
import statistics, sys
rows, hz = int(sys.argv[1]), int(sys.argv[2])
runs = [l.split() for l in open(sys.argv[3]) if l.strip()]
print(f"\n| run | COPY limit s | dbmazz s | ratio | dbmazz rows/s | CPU-s dbmazz / double / PostgreSQL / others | peak RSS |")
print("|---|---|---|---|---|---|---|")
pgs, dbs = [], []
for i, r in enumerate(runs, 1):
    nbytes, pg, db, peak = int(r[0]), float(r[1]), float(r[2]), int(r[3])
    dbm, dbl, pgc, total = (int(x) for x in r[4:8])
    pgs.append(pg); dbs.append(db)
    others = total - dbm - dbl - pgc
    print(f"| {i} | {pg:.2f} | {db:.2f} | {pg/db:.2f}x | {rows/db:,.0f} | "
          f"{dbm/hz:.1f} / {dbl/hz:.1f} / {pgc/hz:.1f} / {others/hz:.1f} | {peak/1024:.1f} MiB |")
mb = int(runs[0][0]) / 1e6
pg, db = statistics.median(pgs), statistics.median(dbs)
print(f"\nmedians: PostgreSQL COPY {pg:.2f} s ({rows/pg:,.0f} rows/s, {mb/pg:.1f} MB/s); "
      f"dbmazz snapshot {db:.2f} s ({rows/db:,.0f} rows/s, {mb/db:.1f} MB/s)")
print(f"ratio of medians dbmazz / PostgreSQL limit: {pg/db:.2f}x   (target >= 0.7x); "
      f"table text size {mb:.0f} MB")
PY
if [ "${PROFILE:-0}" = 1 ]; then
  perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
fi
