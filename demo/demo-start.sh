#!/usr/bin/env bash
# dbmazz demo: a throwaway PostgreSQL 15 → dbmazz → NDJSON, with live traffic.
#
#   demo/demo-start.sh                # runs until Ctrl+C
#   demo/demo-start.sh --duration 30  # runs 30 s, prints a summary, stops (for scripts and CI)
#
# Everything lives under demo/.run/ (cluster, logs, pid files, output). demo/demo-stop.sh stops
# exactly what this started; --purge also removes demo/.run/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN="$ROOT/demo/.run"
DURATION=""
RATE="${DEMO_RATE:-200}"   # transactions per second of the traffic generator

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

step "installing missing system packages"
scripts/install-deps.sh

step "building release binaries (first build takes a few minutes)"
cargo build --release --bin dbmazz 2>&1 | grep -E '^(\s+Compiling dbmazz|\s+Finished|error)' || true
[ -x target/release/dbmazz ] || { echo "build failed" >&2; exit 1; }

"$ROOT/demo/demo-stop.sh" --quiet || true
mkdir -p "$RUN"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); chown postgres "$RUN"; fi

step "starting PostgreSQL 15 on 127.0.0.1:$PGPORT (wal_level=logical)"
if [ ! -d "$RUN/pgdata" ]; then
  "${as_pg[@]}" "$PG_BIN/initdb" -N -A trust -U postgres -D "$RUN/pgdata" >"$RUN/initdb.log"
fi
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$RUN/pgdata" -l "$RUN/postgres.log" -w -o \
  "-c port=$PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$RUN -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10" start >/dev/null
echo "$PGPORT" > "$RUN/pg.port"
PSQL=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres)

step "creating the demo schema"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE shop" 2>/dev/null || true
"${PSQL[@]}" -d shop -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE IF NOT EXISTS customers (id bigint PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, customer_id bigint, status text,
  total numeric(12,2), created_at timestamptz DEFAULT now(), details jsonb);
CREATE TABLE IF NOT EXISTS order_items (order_id bigint, line int, sku text, qty int,
  PRIMARY KEY (order_id, line));
SQL

step "starting dbmazz (NDJSON to $RUN/changes.ndjson)"
DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/shop?sslmode=disable" \
TABLES="customers,orders,order_items" SINK_TYPE=ndjson NDJSON_PATH="$RUN/changes.ndjson" \
FLUSH_INTERVAL_MS=500 \
  nohup target/release/dbmazz >"$RUN/dbmazz.log" 2>&1 &
echo $! > "$RUN/dbmazz.pid"
for _ in $(seq 1 100); do grep -q "streaming changes" "$RUN/dbmazz.log" && break; sleep 0.1; done
grep -q "streaming changes" "$RUN/dbmazz.log" || { cat "$RUN/dbmazz.log"; exit 1; }

step "starting traffic (~$RATE transactions/s)"
cat > "$RUN/traffic.sql" <<'SQL'
\set c random(1, 100000)
\set o random(1, 1000000000)
BEGIN;
INSERT INTO customers VALUES (:c, 'customer ' || :c, :c || '@example.com') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;
INSERT INTO orders VALUES (:o, :c, 'new', random() * 500, now(), jsonb_build_object('note', repeat('x', 50))) ON CONFLICT DO NOTHING;
INSERT INTO order_items VALUES (:o, 1, 'sku-' || :c, 1), (:o, 2, 'sku-' || :o % 97, 3) ON CONFLICT DO NOTHING;
UPDATE orders SET status = 'paid' WHERE id = :o;
DELETE FROM order_items WHERE order_id = :o AND line = 2 AND :o % 5 = 0;
COMMIT;
SQL
nohup "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$PGPORT" -U postgres -f "$RUN/traffic.sql" -c 2 -R "$RATE" -T 86400 shop \
  >"$RUN/traffic.log" 2>&1 &
echo $! > "$RUN/traffic.pid"

cat <<INFO

  PostgreSQL : ${PSQL[*]} -d shop
  dbmazz log : $RUN/dbmazz.log
  changes    : $RUN/changes.ndjson   (one JSON object per change)
  stop       : demo/demo-stop.sh [--purge]

INFO

summary() {
  local lines
  lines=$(wc -l < "$RUN/changes.ndjson" 2>/dev/null || echo 0)
  echo "replicated changes so far: $lines"
}

if [ -n "$DURATION" ]; then
  sleep "$DURATION"
  summary
  "$ROOT/demo/demo-stop.sh"
  exit 0
fi

trap '"$ROOT/demo/demo-stop.sh"; exit 0' INT TERM
echo "Live changes (Ctrl+C stops the demo):"
tail -n 3 -F "$RUN/changes.ndjson" 2>/dev/null &
TAIL=$!
while kill -0 "$(cat "$RUN/dbmazz.pid")" 2>/dev/null; do sleep 1; done
kill "$TAIL" 2>/dev/null || true
echo "dbmazz exited; see $RUN/dbmazz.log"
"$ROOT/demo/demo-stop.sh"
