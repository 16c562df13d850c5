#!/usr/bin/env bash
# Stops exactly what demo/demo-start.sh started, using its pid files (never by process name).
#   demo/demo-stop.sh [--purge] [--quiet]
# DEMO_RUN names the state directory (default demo/.run), as for demo-start.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN="${DEMO_RUN:-$ROOT/demo/.run}"
PURGE=0; QUIET=0
for a in "$@"; do case "$a" in --purge) PURGE=1 ;; --quiet) QUIET=1 ;; esac; done
say() { [ "$QUIET" = 1 ] || echo "$@"; }

stop_pid() {   # name, pid file: SIGTERM, wait up to 30 s, then SIGKILL
  local name=$1 file=$2 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    say "stopped $name (pid $pid)"
  fi
  rm -f "$file"
}

stop_pid traffic "$RUN/traffic.pid"
stop_pid "traffic burst" "$RUN/burst.pid"
stop_pid dbmazz "$RUN/dbmazz.pid"
stop_pid prometheus "$RUN/prometheus.pid"
stop_pid starrocks-double "$RUN/starrocks.pid"
if [ -f "$RUN/docker.started" ]; then
  docker compose -f "$ROOT/demo/docker-compose.yml" -p dbmazz-demo down && say "stopped StarRocks (docker)"
  rm -f "$RUN/docker.started"
fi
if [ -f "$RUN/pgdata/postmaster.pid" ]; then
  as_pg=()
  [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
  "${as_pg[@]}" "${PG_BIN:-/usr/lib/postgresql/15/bin}/pg_ctl" -D "$RUN/pgdata" -m fast -w stop >/dev/null 2>&1 \
    && say "stopped PostgreSQL"
fi
if [ "$PURGE" = 1 ]; then rm -rf "$RUN"; say "removed $RUN"; fi
exit 0
