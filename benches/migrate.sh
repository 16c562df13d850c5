#!/usr/bin/env bash
# Migration fan-out throughput: the same small migration (a few DDL statements and an index)
# applied to every one of TENANTS tenant databases on one PostgreSQL 15 server, by dbmazz
# (`dbmazz schema migrate --all`) and by a shell loop of `psql -1 -f` over the same databases,
# at the same concurrency, in the same run. Runs alternate dbmazz/psql, each with a migration
# of its own (same shape, other names), so that drift on a shared machine hits both. Prints a
# markdown table: median seconds and databases per second of each, and dbmazz ÷ psql.
#
#   benches/migrate.sh                          # 200 tenants, concurrency 4, 3 runs
#   TENANTS=500 CONCURRENCY=8 RUNS=5 benches/migrate.sh
#   DBMAZZ=/path/to/dbmazz benches/migrate.sh   # that binary instead of a release build
#
# dbmazz does more per database than the loop: it also creates (once) and locks
# dbmazz_schema_migrations, checks it for the migration id and records it, in the same
# transaction, and updates its registry. Needs postgresql-15 (and, as root, the postgres
# account); builds dbmazz in release mode.
set -euo pipefail

TENANTS=${TENANTS:-200}
CONCURRENCY=${CONCURRENCY:-4}
RUNS=${RUNS:-3}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ -z "${DBMAZZ:-}" ]; then
  echo "==> building dbmazz (release)" >&2
  cargo build --release --quiet --bin dbmazz
  DBMAZZ=$ROOT/target/release/dbmazz
fi

parent=/dev/shm
[ "$(df --output=avail -k /dev/shm | tail -1)" -gt $((2 * 1024 * 1024)) ] || parent=${TMPDIR:-/tmp}
work=$(mktemp -d "$parent/dbmazz-migbench.XXXXXX")
chmod 755 "$work"
as_pg=()
[ "$(id -u)" -ne 0 ] || { as_pg=(runuser -u postgres --); chown postgres "$work"; }
daemon_pid=""
cleanup() {
  [ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
  [ ! -f "$work/pg/postmaster.pid" ] || "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORT=$(free_port)
"${as_pg[@]}" "$PG_BIN/initdb" -N -A trust -U postgres -E UTF8 --locale=C -D "$work/pg" >/dev/null
cat >>"$work/pg/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work/pg'
max_connections = 200
shared_buffers = 256MB
fsync = off
full_page_writes = off
CONF
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start >/dev/null
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
  -c "CREATE ROLE tenant_owner LOGIN PASSWORD 'bench'"

GPORT=$(free_port)
mkdir -p "$work/schemas"
env -i PATH="$PATH" GRPC_PORT="$GPORT" \
  PROVISION_POSTGRES_URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" \
  PROVISION_ROLE=tenant_owner PROVISION_ROLE_PASSWORD=bench \
  SCHEMA_TMP_PATH="$work/schemas" RATE_LIMIT_MAX=0 SCHEMA_WORKERS=4 \
  MIGRATION_CONCURRENCY="$CONCURRENCY" MIGRATION_CONCURRENCY_PER_SERVER="$CONCURRENCY" \
  RUST_LOG=warn "$DBMAZZ" 2>"$work/dbmazz.log" &
daemon_pid=$!
for _ in $(seq 100); do
  "$DBMAZZ" schema servers --addr "http://127.0.0.1:$GPORT" >/dev/null 2>&1 && break
  sleep 0.2
done

echo "==> provisioning $TENANTS tenant databases through dbmazz" >&2
cat >"$work/schema.sql" <<'SQL'
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts (id), total numeric(12,2));
INSERT INTO accounts (id, name) SELECT g, 'account ' || g FROM generate_series(1, 200) g;
SQL
seq -f 'tenant_%04g' 1 "$TENANTS" >"$work/tenants.txt"
xargs -P 4 -I{} "$DBMAZZ" schema upload --plain --no-wait --addr "http://127.0.0.1:$GPORT" \
  --engine postgres --name {} "$work/schema.sql" <"$work/tenants.txt" >/dev/null
for _ in $(seq 300); do
  ready=$("$DBMAZZ" schema databases --addr "http://127.0.0.1:$GPORT" | awk '$4 == "ready"' | wc -l)
  [ "$ready" -ge "$TENANTS" ] && break
  sleep 0.2
done
[ "$ready" -ge "$TENANTS" ] || { echo "only $ready of $TENANTS tenants are ready" >&2; exit 1; }

migration() { # name-suffix
  cat <<SQL
ALTER TABLE accounts ADD COLUMN email_$1 text;
ALTER TABLE orders ADD COLUMN status_$1 text NOT NULL DEFAULT 'new';
CREATE TABLE audit_$1 (id bigserial PRIMARY KEY, account_id bigint REFERENCES accounts (id), at timestamptz NOT NULL DEFAULT now());
CREATE INDEX accounts_email_$1 ON accounts (email_$1);
SQL
}

now() { date +%s.%N; }
psql_secs=()
dbmazz_secs=()
fanout_secs=()
for run in $(seq "$RUNS"); do
  migration "d$run" >"$work/m_d$run.sql"
  t0=$(now)
  "$DBMAZZ" schema migrate --all --plain --addr "http://127.0.0.1:$GPORT" "$work/m_d$run.sql" >"$work/migrate-$run.log"
  t1=$(now)
  dbmazz_secs+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  grep -q "SUCCESS: migration m_d$run on $TENANTS databases: $TENANTS applied" "$work/migrate-$run.log" || {
    cat "$work/migrate-$run.log" >&2
    exit 1
  }
  id=$(awk '/^job [0-9a-f-]+:/ { sub(":", "", $2); print $2; exit }' "$work/migrate-$run.log")
  fanout_secs+=("$(grpcurl -plaintext -d "{\"id\": \"$id\"}" "127.0.0.1:$GPORT" dbmazz.SchemaService/GetMigration |
    python3 -c 'import json, sys; j = json.load(sys.stdin); print((int(j["finishedAtMs"]) - int(j["startedAtMs"])) / 1000)')")

  migration "p$run" >"$work/m_p$run.sql"
  t0=$(now)
  xargs -P "$CONCURRENCY" -I{} env PGPASSWORD=bench "$PG_BIN/psql" -X -q -1 -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PORT" -U tenant_owner -d {} -f "$work/m_p$run.sql" <"$work/tenants.txt" >/dev/null
  t1=$(now)
  psql_secs+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  echo "    run $run: dbmazz ${dbmazz_secs[-1]}s (fan-out ${fanout_secs[-1]}s), psql loop ${psql_secs[-1]}s" >&2
done
peak_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$daemon_pid/status")

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
p=$(median "${psql_secs[@]}")
d=$(median "${dbmazz_secs[@]}")
f=$(median "${fanout_secs[@]}")
rate() { awk -v n="$TENANTS" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v p="$p" -v d="$1" 'BEGIN { printf "%.2f", p / d }'; }
echo
echo "$TENANTS tenant databases on one PostgreSQL 15, concurrency $CONCURRENCY, 4 statements (3 DDL + an index); median of $RUNS runs; $(nproc) cores, $(uname -r)"
echo "load at the end:$(uptime | sed 's/.*load average//')"
echo
echo "| tool | median s | databases/s | × psql loop | peak RSS |"
echo "|---|---:|---:|---:|---:|"
echo "| psql -1 -f loop (xargs -P $CONCURRENCY) | $p | $(rate "$p") | 1.00× | — |"
echo "| dbmazz schema migrate --all, end to end | $d | $(rate "$d") | $(ratio "$d")× | $((peak_kib / 1024)) MiB |"
echo "| dbmazz, the fan-out (job started → finished) | $f | $(rate "$f") | $(ratio "$f")× | |"
