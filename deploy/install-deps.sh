#!/usr/bin/env bash
# Installs bitnetd's build and test dependencies from Debian 12 packages.
# Safe to run repeatedly; does nothing when everything is present.
# Quiet: one line per step (what it installs); apt-get's and dpkg's own output goes to a
# log file (BN_DEPS_LOG, default $TMPDIR/bitnetd-install-deps.log) whose last lines are
# shown when a step fails.
set -euo pipefail

PKGS=(build-essential meson ninja-build pkg-config
      libmicrohttpd-dev libcjson-dev libopenblas-dev libsqlite3-dev
      libcurl4-openssl-dev libssl-dev check libsystemd-dev
      clang libclang-rt-14-dev curl ca-certificates python3 sqlite3 wrk)
# deploy: systemd-analyze/-sysusers/-tmpfiles for the unit checks; Debian's Chromium for
# the headless dashboard test (tests/deploy/dashboard_browser.sh). Test-only: skipped
# with BN_DEPS_MINIMAL=1 (deploy/quickstart.sh, which only builds and runs).
[ -n "${BN_DEPS_MINIMAL:-}" ] || PKGS+=(systemd chromium)
# tokenizer: ICU for NFC/NFKC normalization and White_Space; Oniguruma (the regex engine
# of HF tokenizers) for the pre-tokenizer patterns. SHA-256 comes from libssl-dev above.
PKGS+=(libicu-dev libonig-dev)
# store: libpq for the PostgreSQL backend (--store postgresql://...); the tests start
# their own PostgreSQL 15 server (initdb + pg_ctl in a temp dir, tests/common/pgtest.sh).
PKGS+=(libpq-dev)
[ -n "${BN_DEPS_MINIMAL:-}" ] || PKGS+=(postgresql-15 postgresql-client-15)
# Node.js + npm run playwright-core for that test. A machine that already has a node and
# npm (e.g. from another packaging of Node.js) keeps them: Debian's npm would conflict.
[ -n "${BN_DEPS_MINIMAL:-}" ] || command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
PKGS+=(${BN_EXTRA_PKGS:-})

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
log=${BN_DEPS_LOG:-${TMPDIR:-/tmp}/bitnetd-install-deps.log}
: > "$log"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# step DESCRIPTION CMD...: one line out, the command's output into the log; on failure
# the log's tail and its path, and the script stops with the command's status
step() {
  local what=$1; shift
  echo "install-deps: $what"
  echo "=== $what: $*" >> "$log"
  local rc=0
  "$@" >> "$log" 2>&1 || rc=$?
  if ((rc)); then
    echo "install-deps: FAILED ($what, exit $rc); last lines of $log:" >&2
    tail -n 30 "$log" | sed 's/^/  | /' >&2
    exit "$rc"
  fi
}
step "updating the package lists" $SUDO apt-get update
step "installing ${missing[*]}" \
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-deps: done (apt output in $log)"
