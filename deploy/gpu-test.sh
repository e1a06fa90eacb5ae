#!/usr/bin/env bash
# deploy/gpu-test.sh - on a machine with an NVIDIA GPU and the CUDA toolkit: build with
# -Dcuda=enabled, run the GPU test suite (tests/gpu: CUDA backend against the CPU engine)
# and the seam's unit tests, then the GPU benchmark (bench/gpu/run.sh). docs/GPU.md.
#   deploy/gpu-test.sh [BUILD_DIR]     (BN_DATA_DIR: the shared test data)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
data=${BN_DATA_DIR:-$(pwd)/../shared/data}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
[ -d "$build" ] || meson setup "$build" -Dwerror=true -Dcuda=enabled -Ddata_dir="$data"
# only what this script runs: the whole tree is CI's job (and the GPU image's gcc warns on
# code the Debian one accepts)
ninja -C "$build" tests/gpu/test_gpu tests/model/test_backend bench/bench_gpu
BN_DATA_DIR=$data meson test -C "$build" --no-rebuild --print-errorlogs --verbose gpu backend
echo "== benchmark =="
bash bench/gpu/run.sh "$build" "${BN_BENCH_JSON:-$build/bench_gpu.json}"
