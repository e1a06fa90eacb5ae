#!/usr/bin/env bash
# Bench-only dependency: Debian's PyTorch for bench/llama/run.sh (not in install-deps.sh).
set -euo pipefail
dpkg-query -W -f='${Status}' python3-torch 2>/dev/null | grep -q "install ok installed" && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-torch
