#!/usr/bin/env bash
# dashboard_browser.sh - the embedded dashboard in a real browser.
#
#   dashboard_browser.sh SOURCE_ROOT BUILD_ROOT
#
# Starts the real bitnetd on a free loopback port with a fresh state dir, makes a tiny
# random-weight model (bitnetctl init-model --shape tiny), and runs browser/dashboard.mjs:
# headless Debian Chromium driven by playwright-core (pinned in browser/package-lock.json,
# installed with `npm ci` into the build dir, never into the source tree). The job it
# submits forces fine-tuning (threshold 0) with a short budget so the loss chart has
# points. Screenshots: BUILD_ROOT/meson-logs/dashboard-screenshots/.
# Skips (77) without chromium or npm, except under CI=true where it fails.
set -euo pipefail
src=${1:?source root}; build=${2:?build root}
. "$src/tests/deploy/lib.sh"
chromium=${BN_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || bn_need "$chromium" "Debian package chromium"
bn_need node "Node.js runs playwright-core"
bn_need npm "npm installs playwright-core"

# playwright-core, exactly as locked; reinstalled only when the lock file changes.
nodedir=$build/tests/deploy/browser-node
mkdir -p "$nodedir"
if ! cmp -s "$src/tests/deploy/browser/package-lock.json" "$nodedir/package-lock.json" \
   || [ ! -d "$nodedir/node_modules/playwright-core" ]; then
  cp "$src/tests/deploy/browser/package.json" "$src/tests/deploy/browser/package-lock.json" "$nodedir/"
  (cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error) || { echo "FAIL: npm ci" >&2; exit 1; }
fi
cp "$src/tests/deploy/browser/dashboard.mjs" "$nodedir/"

shots=$build/meson-logs/dashboard-screenshots
rm -rf "$shots"; mkdir -p "$shots"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bn-browser-XXXXXX")
trap 'bn_stop_daemon; cp "$tmp/bitnetd.log" "$shots/" 2>/dev/null || true; rm -rf "$tmp"' EXIT

# Auth on: a read-only token for the page, a submit token for submitting and cancelling.
newtok() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
read_tok=$(newtok); submit_tok=$(newtok)
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
printf 'viewer read %s\noperator submit %s\n' "$(sha "$read_tok")" "$(sha "$submit_tok")" > "$tmp/tokens"

extra=(); [ -n "${BN_BROWSER_MODEL:-}" ] && extra=(--model-root "$(dirname "$BN_BROWSER_MODEL")")
bn_start_daemon "$build" "$tmp" --workers 1 --tokens-file "$tmp/tokens" "${extra[@]}"
echo "bitnetd at $BN_URL (auth on)"
model=${BN_BROWSER_MODEL:-}
if [ -z "$model" ]; then
  model=$tmp/models/tiny
  "$build/cli/bitnetctl" init-model "$model" --shape tiny >/dev/null
fi
config=${BN_BROWSER_CONFIG:-'{"calibration":{"samples":16,"sequence_length":32},"fine_tune":{"threshold":-1,"max_steps":12,"checkpoint_every":4,"allow_synthetic":true}}'}
long_config=${BN_BROWSER_LONG_CONFIG:-'{"calibration":{"samples":16,"sequence_length":32},"fine_tune":{"threshold":-1,"max_steps":100000,"max_minutes":5,"allow_synthetic":true}}'}
node "$nodedir/dashboard.mjs" --url "$BN_URL" --model "$model" --config "$config" \
  --long-config "$long_config" --expect-metrics "${BN_BROWSER_EXPECT_METRICS:-19}" \
  --read-token "$read_tok" --submit-token "$submit_tok" --out "$shots" || rc=$?
echo "screenshots in $shots"
exit "${rc:-0}"
