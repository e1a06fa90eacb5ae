#!/usr/bin/env bash
# generate_cli.sh - `bitnetctl generate`: usage errors, FP32 and ternary continuations,
# JSON output, and that a compressed folder's ternary codes are recovered exactly (the
# ternary continuation of the output folder equals that of the source model ternarized
# on load with the same quantizer defaults, calibration off).
set -euo pipefail
ctl=${BN_BUILD_ROOT:?}/cli/bitnetctl
work=$(mktemp -d "${TMPDIR:-/tmp}/bn_generate.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$ctl" init-model "$work/m" --dim 64 --hidden 128 --layers 2 --heads 4 --kv-heads 2 --vocab 300 --ctx 64 --seed 3 > /dev/null
set +e
"$ctl" generate "$work/m" -n 3 > /dev/null 2>&1; [ $? -eq 2 ] || fail "missing --prompt must exit 2"
"$ctl" generate "$work/nope" --prompt hi > /dev/null 2>&1; [ $? -eq 1 ] || fail "missing folder must exit 1"
set -e
"$ctl" generate "$work/m" --prompt "Once upon" -n 5 --greedy --ignore-eos --json > "$work/fp.json"
"$ctl" generate "$work/m" --prompt "Once upon" -n 5 --greedy --ignore-eos --ternary --json > "$work/t1.json"
"$ctl" compress "$work/m" "$work/out" \
  --config '{"fine_tune":{"enabled":false},"calibration":{"enabled":false},"export":{"gguf":[]}}' > /dev/null 2>&1
"$ctl" generate "$work/out" --prompt "Once upon" -n 5 --greedy --ignore-eos --ternary --json > "$work/t2.json"
"$ctl" generate "$work/out" --prompt "Once upon" -n 2 > "$work/text.txt"
grep -q "^generated ids:" "$work/text.txt" || fail "text output lacks the generated ids"
node -e '
const fs = require("fs");
const [fp, t1, t2] = process.argv.slice(1).map(f => JSON.parse(fs.readFileSync(f)));
const check = (c, m) => { if (!c) { console.log("FAIL: " + m); process.exit(1); } };
check(fp.engine === "fp32" && fp.ids.length === 5, "fp32 run: 5 ids");
check(t1.engine === "ternary" && /on load/.test(t1.weights), "model folder: ternarized on load");
check(/exact/.test(t2.weights), "output folder: exact codes");
check(JSON.stringify(t1.ids) === JSON.stringify(t2.ids), "same continuation: " + t1.ids + " vs " + t2.ids);
check(t1.prompt_ids.length > 0 && typeof t2.text === "string", "prompt ids and text");
' "$work/fp.json" "$work/t1.json" "$work/t2.json"
echo ok
