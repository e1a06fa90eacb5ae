#!/usr/bin/env bash
# The test command (README, .ci/run): installs dependencies, builds with warnings as
# errors, runs every test, then the unit and integration suites again under
# AddressSanitizer+UndefinedBehaviorSanitizer and ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash deploy/install-deps.sh

jobs=$(nproc)
run_suite() { # build-dir, meson-args..., -- test-args...
  local dir=$1; shift
  local conf=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do conf+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "${conf[@]}"
  fi
  ninja -C "$dir" -j "$jobs"
  meson test -C "$dir" --print-errorlogs --num-processes "$jobs" "$@"
}

echo "== release build, all tests"
run_suite build-ci -Dbuildtype=debugoptimized --

echo "== ASan+UBSan: unit and integration suites (crash harness: 12 kills)"
export BN_CRASH_KILLS=12
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false -Dcuda=disabled -- \
  --suite unit --suite integration --timeout-multiplier 4

echo "== TSan: unit and integration suites"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp \
  run_suite build-tsan -Db_sanitize=thread -Db_lundef=false -Dbench=false -Dcuda=disabled -- \
  --suite unit --suite integration --timeout-multiplier 4

echo "== libFuzzer harnesses (${BN_FUZZ_SECONDS:-60} s each)"
BN_FUZZ_BUILD=build-fuzz bash deploy/fuzz.sh

echo "== all test runs passed"
