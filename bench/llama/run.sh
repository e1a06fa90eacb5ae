#!/usr/bin/env bash
# bench/llama/run.sh - forward and training throughput of bitnetd's Llama engine beside
# PyTorch (Debian python3-torch), same model (the 25m shape), batch, sequence and thread
# count, in the same run, under several OpenBLAS core types:
#   as-is     OPENBLAS_CORETYPE unset, no core selection (OpenBLAS's own detection);
#   Prescott  the generic kernels Debian's 0.3.21 falls back to on CPUs it misdetects;
#   detected  the core bitnetd chooses for this CPU (bn_blas_wanted_core).
# Engines alternate within each setting so machine load hits both alike. Prints a
# Markdown table (tokens/s from wall time; CPU-seconds per step beside it).
#
# usage: [WARMUP=2] bench/llama/run.sh BUILD_DIR [forward|train|all] [ITERS]
# PyTorch is a bench-only dependency: bench/llama/install-torch.sh installs it.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [forward|train|all] [ITERS]}
what=${2:-all}
iters=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
bench="$build/bench/bench_llama"
py=/usr/bin/python3
"$py" -c 'import torch' 2>/dev/null || { echo "run.sh: python3-torch missing (bench/llama/install-torch.sh)" >&2; exit 1; }
detected=$("$bench" --print-wanted-core)

common=(--threads 2 --batch 4 --seq 256 --iters "$iters" --warmup "${WARMUP:-2}")
modes=(forward train)
[ "$what" = all ] || modes=("$what")

row() { # label json
  "$py" - "$1" "$2" <<'PY'
import json, sys
label, j = sys.argv[1], json.loads(sys.argv[2])
print(f"| {j['mode']} | {label} | {j['engine']} | {j.get('core', '')} | "
      f"{j['tokens_per_s']:.0f} | {j['seconds_per_step']:.3f} | {j['cpu_seconds_per_step']:.3f} |")
PY
}

echo "| mode | OpenBLAS core | engine | core reported | tokens/s | s/step (wall) | CPU-s/step |"
echo "| --- | --- | --- | --- | ---: | ---: | ---: |"
for mode in "${modes[@]}"; do
  for setting in as-is Prescott detected; do
    case $setting in
      as-is) envs=(env -u OPENBLAS_CORETYPE); ours=(--no-core-select) ;;
      Prescott) envs=(env OPENBLAS_CORETYPE=Prescott); ours=() ;;
      detected) envs=(env OPENBLAS_CORETYPE="$detected"); ours=() ;;
    esac
    j=$("${envs[@]}" "$bench" "$mode" "${common[@]}" "${ours[@]}")
    row "$setting" "$j"
    j=$("${envs[@]}" "$py" "$here/torch_llama.py" "$mode" "${common[@]}")
    row "$setting" "$j"
  done
done
