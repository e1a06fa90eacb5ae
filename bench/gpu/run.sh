#!/usr/bin/env bash
# bench/gpu/run.sh BUILD_DIR [OUT_JSON] - STE fine-tuning on the GPU: bitnetd's CUDA backend
# (bench_gpu) beside PyTorch eager and torch.compile (torch_ste.py), same shapes, same run,
# batch 8 x 512. Prints a table (tokens/s, step time, MFU against 989 TFLOP/s dense bf16,
# peak device memory) and writes the rows as JSON.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [OUT_JSON]}
out=${2:-bench_gpu.json}
here=$(cd "$(dirname "$0")" && pwd)
B=${BN_BENCH_B:-8} T=${BN_BENCH_T:-512} STEPS=${BN_BENCH_STEPS:-10}
rows=$(mktemp)
for shape in 25m tinyllama-1.1b; do
  "$build/bench/bench_gpu" "$shape" "$B" "$T" "$STEPS" >>"$rows" || echo "bench_gpu $shape failed" >&2
  for mode in eager compile; do
    PYTHONUNBUFFERED=1 python3 "$here/torch_ste.py" "$shape" "$mode" "$B" "$T" "$STEPS" 2>/dev/null | tail -1 >>"$rows" \
      || echo "torch $shape $mode failed" >&2
  done
done
python3 - "$rows" "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print(f"{'shape':<15} {'impl':<14} {'B x T':<8} {'tokens/s':>10} {'step ms':>9} {'MFU':>6} {'peak GiB':>9} {'vs eager':>9} {'vs compile':>10}")
for shape in ("25m", "tinyllama-1.1b"):
    rs = {r["impl"]: r for r in rows if r["shape"] == shape}
    for impl, r in rs.items():
        e, c = rs.get("torch-eager"), rs.get("torch-compile")
        ve = f"{r['tokens_per_s'] / e['tokens_per_s']:.2f}x" if e else "-"
        vc = f"{r['tokens_per_s'] / c['tokens_per_s']:.2f}x" if c else "-"
        print(f"{shape:<15} {impl:<14} {str(r['B'])+'x'+str(r['T']):<8} {r['tokens_per_s']:>10.0f} {r['step_ms']:>9.1f} "
              f"{100*r['mfu']:>5.1f}% {r['peak_bytes']/2**30:>9.2f} {ve:>9} {vc:>10}")
PY
rm -f "$rows"
