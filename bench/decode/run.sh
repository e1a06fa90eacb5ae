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
# llama-bench: node-llama-cpp (tests/cli/js, pinned) ships libllama/libggml but no
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

# llama.cpp from node-llama-cpp (same install as tests/cli/llama_cpp_agree.sh)
js=${LLAMA_JS:-$build/tests/cli/js}
if [ ! -d "$js/node_modules/node-llama-cpp" ]; then
  mkdir -p "$js"
  cp "$src"/tests/cli/js/package.json "$src"/tests/cli/js/package-lock.json "$js"/
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
python3 "$src/bench/decode/summary.py" "$res" "$load_before" "$load_after" ${json:+"$json"}
