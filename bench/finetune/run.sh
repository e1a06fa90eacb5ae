#!/usr/bin/env bash
# bench/finetune/run.sh - the fine-tuning benchmark: compress stories260K with STE
# fine-tuning on tinystories_train.txt only, within a time budget, then score the output
# on the held-out stories (tinystories_val.tok512.u16 windows = tinystories_eval.txt).
#
#   bench/finetune/run.sh [--build DIR] [--minutes M] [--threads N] [--json FILE]
#
# Prints pre-compression, post-compression (plain ternary) and post-fine-tune held-out
# perplexity from compression_metadata.json, and the `bitnetctl eval --ternary` score of
# the output (target <= 10.0; FP32 scores 4.078).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$src/build
minutes=10
threads=2
json=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--minutes M] [--threads N] [--json FILE]" >&2; exit 2 ;;
  esac
done
data=${BN_DATA_DIR:-$src/../shared/data}
model=$data/stories260K-hf
train=$data/corpora/tinystories_train.txt
val=$data/corpora/tinystories_val.tok512.u16
ctl=$build/cli/bitnetctl
[ -x "$ctl" ] || { echo "build bitnetctl first (ninja -C $build cli/bitnetctl)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bn-ft-bench-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
config='{"threads": '$threads', "seed": 42, "fine_tune": {"epochs": 1000, "checkpoint_every": 200, "muon_lr": 0.005}}'
cmd=("$ctl" compress "$model" "$out" --calibration "$train" --fine-tune --max-minutes "$minutes"
     --config "$config" --json)
echo "+ ${cmd[*]}" >&2
start=$(date +%s)
"${cmd[@]}" > "$tmp/compress.json"
end=$(date +%s)
eval_cmd=("$ctl" eval "$out" --ternary --tokens "$val" --ctx 512 --windows 64 --threads "$threads" --json)
echo "+ ${eval_cmd[*]}" >&2
"${eval_cmd[@]}" > "$tmp/eval.json"
python3 - "$out/compression_metadata.json" "$tmp/eval.json" "$minutes" "$threads" "$((end - start))" "$json" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1])); ev = json.load(open(sys.argv[2]))
def find(d, k):
    if isinstance(d, dict):
        if k in d: return d[k]
        for v in d.values():
            r = find(v, k)
            if r is not None: return r
    return None
keys = ["compression/pre_perplexity", "compression/post_perplexity",
        "compression/post_finetune_perplexity", "compression/perplexity_recovery",
        "compression/fine_tune_epochs", "compression/fine_tune_time_hours"]
row = {k.split("/")[1]: find(meta, k) for k in keys}
row.update(eval_ternary_perplexity=ev["perplexity"], eval_mean_nll=ev["mean_nll"],
           minutes=float(sys.argv[3]), threads=int(sys.argv[4]), wall_s=int(sys.argv[5]))
print("%-34s %s" % ("measure", "value"))
for k, v in row.items():
    print("%-34s %s" % (k, ("%.4f" % v) if isinstance(v, float) else v))
print("target: eval_ternary_perplexity <= 10.0 -> %s" % ("PASS" if ev["perplexity"] <= 10.0 else "FAIL"))
if sys.argv[6]:
    json.dump(row, open(sys.argv[6], "w"), indent=1)
PY
