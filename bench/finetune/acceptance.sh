#!/usr/bin/env bash
# bench/finetune/acceptance.sh - issue 13's acceptance: the plain command, nothing else.
#
#   bench/finetune/acceptance.sh [--build DIR] [--minutes M] [--json FILE]
#
# Runs, from the source root (so that ../shared/data resolves as in the README):
#   bitnetctl compress ../shared/data/stories260K-hf OUT \
#       --calibration ../shared/data/corpora/tinystories_train.txt --fine-tune --max-minutes 10
#   bitnetctl eval OUT --ternary --tokens ../shared/data/corpora/tinystories_val.tok512.u16 \
#       --ctx 512 --windows 64
# and prints a table: the eval perplexity (target <= 8.0), the minutes of fine-tuning used
# (target >= 9 of 10 unless patience stopped it, which the table says), epochs, steps,
# the best checkpoint, the report-split figures from compression_metadata.json, the load
# average while it ran. --minutes changes only the budget (for a quick try; the targets
# scale with it). --json writes the same row as JSON.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$src/build
minutes=10
json=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --json) json=$(realpath -m "$2"); shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--minutes M] [--json FILE]" >&2; exit 2 ;;
  esac
done
ctl=$build/cli/bitnetctl
[ -x "$ctl" ] || { echo "build bitnetctl first (ninja -C $build cli/bitnetctl)" >&2; exit 1; }
cd "$src"
[ -d ../shared/data/stories260K-hf ] || { echo "../shared/data is missing (see the brief)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bn-acceptance-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
load0=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s)
set -x
"$ctl" compress ../shared/data/stories260K-hf "$out" \
    --calibration ../shared/data/corpora/tinystories_train.txt --fine-tune --max-minutes "$minutes" \
    > "$tmp/compress.txt" 2> "$tmp/compress.err"
{ set +x; } 2>/dev/null
end=$(date +%s)
load1=$(cut -d' ' -f1 /proc/loadavg)
set -x
"$ctl" eval "$out" --ternary --tokens ../shared/data/corpora/tinystories_val.tok512.u16 --ctx 512 \
    --windows 64 --json > "$tmp/eval.json"
{ set +x; } 2>/dev/null
cat "$tmp/compress.txt"
python3 - "$out" "$tmp/eval.json" "$minutes" "$((end - start))" "$load0" "$load1" "$tmp/compress.err" "$json" <<'PY'
import json, sys
out, evp, minutes, wall, l0, l1, errp, jpath = sys.argv[1:9]
minutes = float(minutes)
meta = json.load(open(out + "/compression_metadata.json"))
hist = json.load(open(out + "/training_history.json"))
ev = json.load(open(evp))
m = meta["metrics"]
ft_min = m["compression/fine_tune_time_hours"] * 60
stopped = hist.get("stopped_on", "?")
evals = [e["eval_perplexity"] for e in hist["evals"]]
# the longest run of evaluations without a new best (what patience has to tolerate)
best, streak, longest = float("inf"), 0, 0
for p in evals:
    if p < best: best, streak = p, 0
    else: streak += 1; longest = max(longest, streak)
row = {
    "eval_ternary_perplexity": ev["perplexity"],
    "fine_tune_minutes": ft_min,
    "budget_minutes": minutes,
    "stopped_on": stopped,
    "epochs": m["compression/fine_tune_epochs"],
    "steps": hist["total_steps"],
    "best_step": hist["best_step"],
    "best_selection_perplexity": hist.get("best_selection_perplexity"),
    "longest_streak_without_new_best": longest,
    "selection_curve": [round(p, 4) for p in evals],
    "patience": hist.get("patience"),
    "cooldown_start_steps": [hist.get("cooldown_start"), hist.get("cooldown_steps")],
    "pre_perplexity_report": m.get("compression/pre_perplexity"),
    "post_perplexity_report": m.get("compression/post_perplexity"),
    "post_finetune_perplexity_report": m.get("compression/post_finetune_perplexity"),
    "splits": meta.get("text", {}).get("splits"),
    "text_source": meta.get("text", {}).get("source"),
    "wall_s": int(wall),
    "loadavg_start_end": [float(l0), float(l1)],
}
print("%-34s %s" % ("measure", "value"))
for k, v in row.items():
    print("%-34s %s" % (k, ("%.4f" % v) if isinstance(v, float) else json.dumps(v)))
ppl_ok = ev["perplexity"] <= 8.0
time_ok = stopped == "patience" or ft_min >= 0.9 * minutes
print("target: eval perplexity <= 8.0 -> %s" % ("PASS" if ppl_ok else "FAIL"))
print("target: >= %.1f of %.1f minutes used unless stopped on patience -> %s"
      % (0.9 * minutes, minutes, "PASS" if time_ok else "FAIL"))
if stopped == "patience":
    print("stopped on patience: " + next((l.strip() for l in open(errp) if "patience" in l), "?"))
if jpath:
    row.update(ppl_target_met=ppl_ok, time_target_met=time_ok)
    json.dump(row, open(jpath, "w"), indent=1)
PY
