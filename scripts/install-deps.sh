#!/usr/bin/env bash
# Installs what dbmazz's build, tests and demo need on Debian 12, and nothing that is already
# there. Safe to run again. Used by scripts/test.sh and demo/demo-start.sh.
set -euo pipefail

need=()
for pkg in postgresql-15 postgresql-client-15 libssl-dev pkg-config openssl ca-certificates procps; do
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

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain first (https://rustup.rs)" >&2
  exit 1
fi
