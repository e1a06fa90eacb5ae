#!/usr/bin/env bash
# bench/decode/run.sh [BUILD_DIR] [--json FILE] [--rounds 3] [--threads "1 2"]: ternary
# decode (tg64) and prompt (pp128) tok/s of bitnetd (build/bench/bench_decode) beside
# llama.cpp's llama-bench on the model-tq2_0.gguf that bitnetd wrote into the same output
# folder, in alternating rounds (bitnetd, llama.cpp, then llama.cpp, bitnetd, ...), with
# the median per engine and thread count, their ratio, bytes read per token and the
# memory read bandwidth measured in the same run. Prints the load (uptime) too.
#
# The model: `bitnetctl init-model --shape tinyllama-1.1b --dtype f16 --seed 1` compressed
# without calibration or fine-tuning, in $BENCH_DIR (default /tmp/bn-decode-bench), made once.
# llama-bench: node-llama-cpp (tests/kernels/js, pinned) ships libllama/libggml but no
# llama-bench, so its one source file is compiled from the package's llama.cpp bundle
# against the shipped libraries (once, into $BENCH_DIR); it runs in their folder, where
# ggml picks the best CPU backend build for this machine.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
build=$(cd "$build" && pwd)
json="" rounds=3 threads="1 2"
while [ $# -gt 0 ]; do
  case $1 in
    --json) json=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
dir=${BENCH_DIR:-/tmp/bn-decode-bench}
mkdir -p "$dir"
ctl=$build/cli/bitnetctl
out=$dir/out
if [ ! -f "$out/model-tq2_0.gguf" ]; then
  [ -f "$dir/f16/model.safetensors" ] ||
    "$ctl" init-model "$dir/f16" --shape tinyllama-1.1b --dtype f16 --seed 1
  rm -rf "$out"
  "$ctl" compress "$dir/f16" "$out" --threads 2 \
    --config '{"export":{"gguf":["tq2_0"]},"fine_tune":{"enabled":false},"calibration":{"enabled":false}}'
fi

# llama.cpp from node-llama-cpp (same install as tests/kernels/llama_cpp_agree.sh)
js=${LLAMA_JS:-$build/tests/kernels/js}
if [ ! -d "$js/node_modules/node-llama-cpp" ]; then
  mkdir -p "$js"
  cp "$src"/tests/kernels/js/package.json "$src"/tests/kernels/js/package-lock.json "$js"/
  (cd "$js" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
bins=$js/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
lb=$dir/llama-bench
if [ ! -x "$lb" ]; then
  rm -rf "$dir/llama.cpp"
  git clone -q "$js/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$dir/llama.cpp"
  s=$dir/llama.cpp
  g++ -std=c++17 -O2 -DNDEBUG -I"$s/include" -I"$s/ggml/include" -I"$s/common" -I"$s/vendor" \
    "$s/tools/llama-bench/llama-bench.cpp" "$s/tools/llama-bench/main.cpp" -o "$lb" -L"$bins" \
    -l:libllama-common.so -l:libllama.v0.4.0.so -l:libggml.v0.4.0.so -l:libggml-base.so \
    -Wl,-rpath,"$bins" -lpthread
fi

res=$dir/results.jsonl
: > "$res"
load_before=$(uptime)
# bitnetd loads the model once and calls llama_round.sh between its own measurements
LB=$lb BINS=$bins GGUF=$out/model-tq2_0.gguf CONFIG=$out/config.json RES=$res \
  "$build/bench/bench_decode" "$out" --threads "${threads// /,}" --rounds "$rounds" --pp 128 --tg 64 --reps 2 \
  --peer "$src/bench/decode/llama_round.sh" >> "$res"
load_after=$(uptime)
python3 - "$res" "$load_before" "$load_after" "${json:-}" <<'EOF'
import json, statistics, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
out = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z",
       "load_before": sys.argv[2].strip(), "load_after": sys.argv[3].strip(), "rounds": rows, "median": []}
print(f"load before: {out['load_before']}\nload after:  {out['load_after']}")
print(f"{'threads':>7} {'engine':>10} {'tg64 tok/s':>11} {'pp128 tok/s':>12} {'MB/token':>9} {'GB/s':>6} {'tg/limit':>8}")
for t in sorted({r["threads"] for r in rows}):
    med = {}
    for e in ("bitnetd", "llama.cpp"):
        rs = [r for r in rows if r["threads"] == t and r["engine"] == e]
        if not rs: continue
        bw = statistics.median([r["read_gb_s"] for r in rows if r["threads"] == t and "read_gb_s" in r])
        m = {"engine": e, "threads": t, "tg_tok_s": statistics.median(r["tg_tok_s"] for r in rs),
             "pp_tok_s": statistics.median(r["pp_tok_s"] for r in rs), "bytes_per_token": rs[0]["bytes_per_token"],
             "read_gb_s": bw}
        m["tg_fraction_of_bandwidth_limit"] = m["tg_tok_s"] * m["bytes_per_token"] / (bw * 1e9)
        med[e] = m
        out["median"].append(m)
        print(f"{t:>7} {e:>10} {m['tg_tok_s']:>11.1f} {m['pp_tok_s']:>12.1f} {m['bytes_per_token']/1e6:>9.1f} "
              f"{bw:>6.1f} {m['tg_fraction_of_bandwidth_limit']:>8.2f}")
    if len(med) == 2:
        rt = med["bitnetd"]["tg_tok_s"] / med["llama.cpp"]["tg_tok_s"]
        rp = med["bitnetd"]["pp_tok_s"] / med["llama.cpp"]["pp_tok_s"]
        out["median"].append({"threads": t, "ratio_tg": rt, "ratio_pp": rp})
        print(f"{t:>7} {'ratio':>10} {rt:>10.2f}x {rp:>11.2f}x   (bitnetd / llama.cpp)")
if sys.argv[4]:
    json.dump(out, open(sys.argv[4], "w"), indent=1)
EOF
