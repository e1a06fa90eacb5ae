#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan+UBSan) and runs each for BN_FUZZ_SECONDS
# (default 60) on a scratch copy of its seed corpus in tests/fuzz/corpus/<name>/, as many
# harnesses at once as there are cores.
# A crash leaves its input in build-fuzz/artifacts/ and fails the run; turn every such
# input into a regression test (add it to the seed corpus and the unit tests).
# The mutation seed is fixed (BN_FUZZ_SEED, default 1), so a run explores the same inputs
# on every machine and a CI failure reproduces locally; BN_FUZZ_SEED=0 lets libFuzzer
# pick a fresh seed for exploratory runs (BN_FUZZ_SECONDS=1800 BN_FUZZ_SEED=0 ...).
# Usage: deploy/fuzz.sh [harness...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BN_FUZZ_SECONDS:-60}
seed=${BN_FUZZ_SEED:-1}
dir=${BN_FUZZ_BUILD:-build-fuzz}
export BN_DATA_DIR=${BN_DATA_DIR:-$PWD/../shared/data}
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" -Dfuzz=true -Dcuda=disabled -Dbench=false -Db_sanitize=address,undefined \
    -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link -Dwerror=true >/dev/null
fi
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  harnesses=($(ls tests/fuzz/corpus))
fi
ninja -C "$dir" $(printf 'tests/fuzz/fuzz_%s ' "${harnesses[@]}") >/dev/null
mkdir -p "$dir/artifacts" "$dir/fuzz-report"

# run_one NAME: fuzzes one harness on a scratch copy of its corpus; prints one line.
run_one() {
  local h=$1 work log execs
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$h/." "$work/"
  log="$dir/fuzz-report/$h.log"
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1 \
     "$dir/tests/fuzz/fuzz_$h" -max_total_time="$secs" -seed="$seed" -rss_limit_mb=4096 -max_len=65536 \
       -timeout=10 -artifact_prefix="$dir/artifacts/$h-" "$work" >"$log" 2>&1; then
    execs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    echo "fuzz $h: ok, ${execs:-?} executions in ${secs}s, corpus $(ls "$work" | wc -l) inputs"
  else
    echo "fuzz $h: FAILED (see $log)"; tail -30 "$log"
    rm -rf "$work"; return 1
  fi
  rm -rf "$work"
}

# As many harnesses at once as there are cores.
status=0
par=$(nproc)
pids=()
for h in "${harnesses[@]}"; do
  run_one "$h" & pids+=($!)
  if [ ${#pids[@]} -ge "$par" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
