#!/usr/bin/env bash
# Installs bitnetd's build and test dependencies from Debian 12 packages.
# Safe to run repeatedly; does nothing when everything is present.
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
# Node.js + npm run playwright-core for that test. A machine that already has a node and
# npm (e.g. from another packaging of Node.js) keeps them: Debian's npm would conflict.
[ -n "${BN_DEPS_MINIMAL:-}" ] || command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
PKGS+=(${BN_EXTRA_PKGS:-})

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
