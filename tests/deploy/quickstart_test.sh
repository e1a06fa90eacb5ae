#!/usr/bin/env bash
# quickstart_test.sh - runs deploy/quickstart.sh non-interactively to completion.
#
#   quickstart_test.sh SOURCE_ROOT BUILD_ROOT
#
# Uses the build the test suite runs from (BN_BUILD_DIR) instead of building again, a
# temporary ./var (BN_VAR_DIR) and no apt (BN_SKIP_DEPS). Expects exit 0, the demo
# model labelled as random weights, a metrics table, an output folder with the
# primary model and compression_metadata.json, a dashboard URL that serves the page,
# a daemon left running, and `quickstart.sh --stop` stopping it.
set -euo pipefail
src=${1:?source root}; build=${2:?build root}
fail() { echo "FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bn-quickstart-XXXXXX")
export BN_BUILD_DIR=$build BN_VAR_DIR=$tmp/var BN_SKIP_DEPS=1
cleanup() {
  bash "$src/deploy/quickstart.sh" --stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

rc=0
bash "$src/deploy/quickstart.sh" --ci --port 0 >"$tmp/out" 2>&1 </dev/null || rc=$?
cat "$tmp/out"
[ "$rc" = 0 ] || fail "quickstart.sh exited $rc"
grep -q "RANDOM weights" "$tmp/out" || fail "the demo model is not labelled as random weights"
grep -q "compression/ratio" "$tmp/out" || fail "no metrics table in the output"
outdir=$(sed -n 's/^output: *//p' "$tmp/out" | head -n 1)
[ -n "$outdir" ] || fail "no output folder printed"
for f in model.safetensors config.json compression_metadata.json; do
  [ -f "$outdir/$f" ] || fail "$outdir/$f missing"
done
url=$(sed -n 's#^dashboard: *\(http://[^ ]*\)/$#\1#p' "$tmp/out" | head -n 1)
[ -n "$url" ] || fail "no dashboard URL printed"
curl -fsS "$url/" >"$tmp/page" && grep -q "<title>bitnetd</title>" "$tmp/page" || fail "dashboard at $url/ does not serve the page"
pid=$(cat "$tmp/var/bitnetd.pid")
kill -0 "$pid" || fail "the daemon was not left running"
bash "$src/deploy/quickstart.sh" --stop | grep -q "stopped bitnetd" || fail "--stop did not stop it"
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "bitnetd $pid still running after --stop"
echo "ok: quickstart.sh completed; output $outdir"
