#!/usr/bin/env bash
# dbmazz demo: a throwaway PostgreSQL 15 → dbmazz → StarRocks (the starrocks-double by default),
# with live traffic and the `dbmazz top` dashboard.
#
#   demo/demo-start.sh                # runs until you quit the dashboard (q or Ctrl+C)
#   demo/demo-start.sh --duration 30  # headless: 30 s of one-line summaries, verify, stop (CI)
#   demo/demo-start.sh --rate 1000    # pgbench transactions/s (each ~6 row changes; default 500)
#   demo/demo-start.sh --prometheus   # also a real Prometheus scraping dbmazz with deploy/prometheus's rules
#
# Environment: DEMO_SINK=starrocks-double (default) or starrocks-docker (demo/docker-compose.yml,
# the real starrocks/allin1-ubuntu image; needs Docker), DEMO_RATE, DEMO_RUN (state directory,
# default demo/.run), DEMO_BIN_DIR (use the dbmazz and starrocks-double binaries found there
# instead of building release binaries), PG_BIN (default /usr/lib/postgresql/15/bin).
#
# Everything lives under demo/.run/ (clusters, logs, pid files). demo/demo-stop.sh stops exactly
# what this started; --purge also removes demo/.run/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN="${DEMO_RUN:-$ROOT/demo/.run}"
export DEMO_RUN="$RUN"
DURATION=""
PROMETHEUS=0
RATE="${DEMO_RATE:-500}"
SINK="${DEMO_SINK:-starrocks-double}"

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --prometheus) PROMETHEUS=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$SINK" in starrocks-double|starrocks-docker) ;; *) echo "DEMO_SINK must be starrocks-double or starrocks-docker" >&2; exit 2 ;; esac

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "installing missing system packages"
scripts/install-deps.sh

if [ -n "${DEMO_BIN_DIR:-}" ]; then
  BIN="$DEMO_BIN_DIR"
else
  step "building release binaries (the first build takes a few minutes)"
  cargo build --release -p dbmazz --bin dbmazz -p starrocks-double --bin starrocks-double
  BIN="$ROOT/target/release"
fi
for b in dbmazz starrocks-double; do [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing" >&2; exit 1; }; done

"$ROOT/demo/demo-stop.sh" --quiet || true
mkdir -p "$RUN"
# Whatever happens from here on (a failed step, Ctrl+C, the dashboard closing), stop what was
# started. demo-stop.sh is idempotent, so the explicit calls below make this one a no-op.
trap '"$ROOT/demo/demo-stop.sh" --quiet' EXIT
trap 'exit 130' INT TERM
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PGPORT=$(free_port)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); chown postgres "$RUN"; fi

step "starting PostgreSQL 15 on 127.0.0.1:$PGPORT (wal_level=logical)"
if [ ! -d "$RUN/pgdata" ]; then
  "${as_pg[@]}" "$PG_BIN/initdb" -N -A trust -U postgres -D "$RUN/pgdata" >"$RUN/initdb.log"
fi
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$RUN/pgdata" -l "$RUN/postgres.log" -w -o \
  "-c port=$PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$RUN -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 -c fsync=off -c synchronous_commit=off" start >/dev/null
echo "$PGPORT" > "$RUN/pg.port"
PSQL=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres)

if [ "$SINK" = starrocks-docker ]; then
  step "starting StarRocks (docker compose, starrocks/allin1-ubuntu; the first pull is large)"
  command -v docker >/dev/null || { echo "DEMO_SINK=starrocks-docker needs Docker" >&2; exit 1; }
  docker compose -f "$ROOT/demo/docker-compose.yml" -p dbmazz-demo up -d
  touch "$RUN/docker.started"
  FE=8030; MYSQLP=9030; SR_LOG="docker compose -p dbmazz-demo logs starrocks"
  echo "waiting for the FE and the BE (SHOW BACKENDS says Alive)"
  for _ in $(seq 1 180); do
    mysql -h127.0.0.1 -P9030 -uroot -e 'SHOW BACKENDS' 2>/dev/null | grep -q true && break
    sleep 2
  done
else
  step "starting starrocks-double (data in $RUN/sr)"
  mkdir -p "$RUN/sr"
  nohup "$BIN/starrocks-double" --data-dir "$RUN/sr" --fe-port 0 --be-port 0 --mysql-port 0 --admin-port 0 \
    >"$RUN/starrocks.ports" 2>"$RUN/starrocks.log" &
  echo $! > "$RUN/starrocks.pid"
  for _ in $(seq 1 100); do grep -q '"mysql"' "$RUN/starrocks.ports" 2>/dev/null && break; sleep 0.1; done
  grep -q '"mysql"' "$RUN/starrocks.ports" || { cat "$RUN/starrocks.log"; exit 1; }
  port_of() { sed -E "s/.*\"$1\":([0-9]+).*/\1/" "$RUN/starrocks.ports" | head -1; }
  FE=$(port_of fe); MYSQLP=$(port_of mysql); SR_LOG="$RUN/starrocks.log"
fi
echo "$FE $MYSQLP" > "$RUN/sr.ports"
MYSQL=(mysql -h127.0.0.1 -P"$MYSQLP" -uroot)
"${MYSQL[@]}" -e "CREATE DATABASE IF NOT EXISTS shop"

step "creating the demo schema in PostgreSQL (dbmazz creates the StarRocks tables)"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE shop" 2>/dev/null || true
"${PSQL[@]}" -d shop -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE IF NOT EXISTS customers (id bigint PRIMARY KEY, name text NOT NULL, email text);
-- details is jsonb; every 10th order carries ~5 kB of it, stored out of line (TOAST).
CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, customer_id bigint, status text,
  total numeric(12,2), created_at timestamptz DEFAULT now(), details jsonb);
CREATE TABLE IF NOT EXISTS order_items (order_id bigint, line int, sku text, qty int,
  PRIMARY KEY (order_id, line));
SQL

GRPC_PORT=$(free_port)
METRICS_PORT=$(free_port)
echo "$GRPC_PORT" > "$RUN/grpc.port"
cat > "$RUN/env" <<ENV
export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/shop?sslmode=disable"
export TABLES="customers,orders,order_items"
export SINK_TYPE=starrocks
export STARROCKS_URL="http://127.0.0.1:$FE"
export STARROCKS_DB=shop
export STARROCKS_MYSQL_URL="mysql://root:@127.0.0.1:$MYSQLP/"
export CREATE_TABLES=true
export GRPC_PORT=$GRPC_PORT
export METRICS_PORT=$METRICS_PORT
export FLUSH_INTERVAL_MS=500
ENV
# shellcheck disable=SC1091
. "$RUN/env"

step "starting dbmazz (gRPC on 127.0.0.1:$GRPC_PORT)"
nohup "$BIN/dbmazz" >"$RUN/dbmazz.log" 2>&1 &
echo $! > "$RUN/dbmazz.pid"
for _ in $(seq 1 600); do grep -q "streaming changes" "$RUN/dbmazz.log" && break; sleep 0.1; done
grep -q "streaming changes" "$RUN/dbmazz.log" || { tail -20 "$RUN/dbmazz.log"; "$ROOT/demo/demo-stop.sh"; exit 1; }

PROM_INFO=""
if [ "$PROMETHEUS" = 1 ]; then
  PROM_BIN=$(command -v prometheus || true)
  [ -n "$PROM_BIN" ] || { echo "prometheus is not installed (Debian package prometheus)" >&2; exit 1; }
  PROM_PORT=$(free_port)
  echo "$PROM_PORT" > "$RUN/prometheus.port"
  mkdir -p "$RUN/prometheus"
  cat > "$RUN/prometheus/prometheus.yml" <<YML
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ["$ROOT/deploy/prometheus/dbmazz-rules.yml"]
scrape_configs:
  - job_name: dbmazz
    static_configs: [{targets: ["127.0.0.1:$METRICS_PORT"]}]
YML
  step "starting Prometheus (http://127.0.0.1:$PROM_PORT) with deploy/prometheus/dbmazz-rules.yml"
  nohup "$PROM_BIN" --config.file="$RUN/prometheus/prometheus.yml" \
    --storage.tsdb.path="$RUN/prometheus/data" --web.listen-address="127.0.0.1:$PROM_PORT" \
    >"$RUN/prometheus.log" 2>&1 &
  echo $! > "$RUN/prometheus.pid"
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PROM_PORT/-/ready" >/dev/null && break; sleep 0.1; done
  curl -sf "127.0.0.1:$PROM_PORT/-/ready" >/dev/null || { tail -20 "$RUN/prometheus.log"; exit 1; }
  PROM_INFO="  Prometheus UI : http://127.0.0.1:$PROM_PORT  (alerts: /alerts, targets: /targets)"
fi

step "starting traffic (~$RATE transactions/s, about $((RATE * 6)) row changes/s)"
cat > "$RUN/traffic.sql" <<'SQL'
\set c random(1, 100000)
\set o random(1, 1000000000)
BEGIN;
INSERT INTO customers VALUES (:c, 'customer ' || :c, :c || '@example.com') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name || '*';
INSERT INTO orders VALUES (:o, :c, 'new', round((random() * 500)::numeric, 2), now(),
  CASE WHEN :o % 10 = 0
       THEN jsonb_build_object('note', (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 150)), 'gift', true)
       ELSE jsonb_build_object('note', 'standard', 'items', 2) END) ON CONFLICT DO NOTHING;
INSERT INTO order_items VALUES (:o, 1, 'sku-' || :c, 1), (:o, 2, 'sku-' || :o % 97, 3) ON CONFLICT DO NOTHING;
UPDATE orders SET status = 'paid' WHERE id = :o;
DELETE FROM order_items WHERE order_id = :o AND line = 2 AND :o % 5 = 0;
COMMIT;
SQL
PGBENCH=("$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$PGPORT" -U postgres -f "$RUN/traffic.sql")
nohup "${PGBENCH[@]}" -c 2 -R "$RATE" -T 86400 shop >"$RUN/traffic.log" 2>&1 &
echo $! > "$RUN/traffic.pid"
sleep 1
kill -0 "$(cat "$RUN/traffic.pid")" 2>/dev/null || { cat "$RUN/traffic.log"; "$ROOT/demo/demo-stop.sh"; exit 1; }
# The dashboard's `t` key: 5 s of unthrottled traffic, tracked by a pid file so demo-stop sees it.
export DBMAZZ_TOP_BURST_CMD="echo \$\$ > '$RUN/burst.pid'; exec ${PGBENCH[*]} -c 2 -T 5 shop >>'$RUN/burst.log' 2>&1"

cat <<INFO

  PostgreSQL : ${PSQL[*]} -d shop
  StarRocks  : ${MYSQL[*]} shop      ($SINK; Stream Load at http://127.0.0.1:$FE)
  gRPC API   : grpcurl -plaintext 127.0.0.1:$GRPC_PORT dbmazz.CdcStatusService/GetStatus
  Prometheus : curl -s 127.0.0.1:$METRICS_PORT/metrics
  dashboard  : $BIN/dbmazz top --grpc 127.0.0.1:$GRPC_PORT      (after: . $RUN/env)
  verify     : . $RUN/env && $BIN/dbmazz verify
  logs       : $RUN/dbmazz.log  $SR_LOG  $RUN/postgres.log  $RUN/traffic.log
  stop       : demo/demo-stop.sh [--purge]
$PROM_INFO
INFO

if [ -n "$DURATION" ]; then
  step "running headless for ${DURATION}s"
  "$BIN/dbmazz" top --plain --grpc "127.0.0.1:$GRPC_PORT" --duration "$DURATION" --counts-every 5 | tee "$RUN/summary.log"
  step "stopping the traffic and verifying source against sink"
  kill -TERM "$(cat "$RUN/traffic.pid")" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$(cat "$RUN/traffic.pid")" 2>/dev/null || break; sleep 0.1; done
  rm -f "$RUN/traffic.pid"
  status=0
  "$BIN/dbmazz" verify --wait 90 || status=$?
  "$BIN/dbmazz" top --plain --grpc "127.0.0.1:$GRPC_PORT" --duration 1 --counts-every 1 | tail -1
  if [ "$PROMETHEUS" = 1 ]; then
    up=$(curl -sf "127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode 'query=up{job="dbmazz"}' \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")')
    rules=$(curl -sf "127.0.0.1:$PROM_PORT/api/v1/rules" \
      | python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
    echo "prometheus: up{job=\"dbmazz\"} = $up, $rules alert rules loaded"
  fi
  "$ROOT/demo/demo-stop.sh"
  exit "$status"
fi

"$BIN/dbmazz" top --grpc "127.0.0.1:$GRPC_PORT" || true
"$ROOT/demo/demo-stop.sh"
