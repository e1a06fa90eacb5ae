#!/usr/bin/env bash
# bench/quantize.sh [BUILD_DIR] [--json FILE]: makes the tinyllama-1.1b F16 model with
# `bitnetctl init-model` (random weights, ~2.2 GB, once, in $BENCH_DIR or /tmp) and
# runs bench-quantize on it at 1 and 2 threads. Prints the table (see bench/quantize.c).
set -euo pipefail
build=${1:-build}
[ $# -gt 0 ] && shift
dir=${BENCH_DIR:-/tmp}
model=$dir/bn-bench-tinyllama-1.1b-f16
if [ ! -f "$model/model.safetensors" ]; then
  echo "making $model (random weights)..."
  "$build/cli/bitnetctl" init-model "$model" --shape tinyllama-1.1b --dtype f16 --seed 1
fi
exec "$build/bench/bench-quantize" "$model" --threads 1,2 --out "$dir" "$@"
