#!/usr/bin/env bash
# config_example.sh - deploy/bitnetd.conf.example matches the daemon's parser.
#
#   config_example.sh SOURCE_ROOT BITNETD_BINARY
#
# 1. Every key `bitnetd --help` lists appears in the example (set or as a commented-out
#    default), in its [section], with a comment line right above it: the example is
#    the documented reference of every setting.
# 2. Every key the example sets or shows commented out is one the daemon knows.
# 3. The daemon starts with the example as --config (paths overridden by flags, as the
#    unit overrides --state-dir) and stops cleanly on SIGTERM: the file parses.
set -euo pipefail
src=$(realpath "${1:?source root}"); bin=${2:?bitnetd binary}
. "$src/tests/deploy/lib.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
conf=$src/deploy/bitnetd.conf.example

# Keys from the daemon: the indented "  key   help" lines after "Keys:" in --help.
keys=$("$bin" --help | sed -n '/Keys:/,$p' | sed -n 's/^  \([a-z_.]*\) .*/\1/p')
[ "$(printf '%s\n' "$keys" | wc -l)" -ge 10 ] || fail "could not read the key list from bitnetd --help"

# Keys in the example, as section.key, from "key = v" and "#key = v" lines, each with
# whether the line above is a comment.
example=$(awk '
  /^\[[a-z]+\]$/ { sec = substr($0, 2, length($0) - 2) "."; prev = ""; next }
  /^#?[a-z_]+ *=/ { line = $0; sub(/^#/, "", line); k = line; sub(/ *=.*/, "", k);
                    print sec k, (prev ~ /^#/ && prev !~ /^#[a-z_]+ *=/ ? "documented" : "undocumented"); }
  { prev = $0 }' "$conf")

for k in $keys; do
  grep -q "^$k " <<< "$example" || fail "key $k (bitnetd --help) is missing from bitnetd.conf.example"
done
while read -r k doc; do
  grep -qx "$k" <<< "$keys" || fail "bitnetd.conf.example has $k, which bitnetd does not know"
  [ "$doc" = documented ] || fail "bitnetd.conf.example: $k has no comment line above it"
done <<< "$example"
echo "ok: $(printf '%s\n' "$keys" | wc -l) keys, all in the example and documented"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bn-conf-XXXXXX")
trap 'bn_stop_daemon; rm -rf "$tmp"' EXIT
BN_BITNETD=$bin bn_start_daemon "" "$tmp" --config "$conf"
curl -fsS "$BN_URL/healthz" >/dev/null || fail "daemon started with the example does not answer /healthz"
kill -TERM "$BN_DAEMON_PID"
rc=0; wait "$BN_DAEMON_PID" || rc=$?
BN_DAEMON_PID=
[ "$rc" = 0 ] || { cat "$tmp/bitnetd.log" >&2; fail "bitnetd exited $rc after SIGTERM"; }
echo "ok: bitnetd runs with the example config"
