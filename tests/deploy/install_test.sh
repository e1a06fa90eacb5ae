#!/usr/bin/env bash
# install_test.sh - deploy/install.sh into a temporary DESTDIR with a non-default prefix.
#
#   install_test.sh SOURCE_ROOT BUILD_ROOT
#
# Checks that every file lands where systemd looks for it, that the unit's ExecStart
# follows the prefix, that the installed unit still passes `systemd-analyze verify`
# (pointed at the installed binary), that a second run keeps an edited bitnetd.conf
# and that the installed binaries run.
set -euo pipefail
src=${1:?source root}; build=${2:?build root}
fail() { echo "FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bn-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/root
prefix=/opt/bitnetd

BN_BUILD_DIR=$build bash "$src/deploy/install.sh" --destdir "$dest" --prefix "$prefix" >"$tmp/out1" 2>&1 \
  || { cat "$tmp/out1"; fail "install.sh exited non-zero"; }

for f in $prefix/bin/bitnetd $prefix/bin/bitnetctl; do
  [ -x "$dest$f" ] || fail "$f not installed (or not executable)"
done
for f in $prefix/lib/systemd/system/bitnetd.service $prefix/lib/systemd/system/bitnetd.socket \
         $prefix/lib/sysusers.d/bitnetd.conf $prefix/lib/tmpfiles.d/bitnetd.conf \
         $prefix/share/doc/bitnetd/OPERATIONS.md /etc/bitnetd/bitnetd.conf /etc/bitnetd/bitnetd.conf.example; do
  [ -f "$dest$f" ] || fail "$f not installed"
done
unit=$dest$prefix/lib/systemd/system/bitnetd.service
grep -q "^ExecStart=$prefix/bin/bitnetd " "$unit" || fail "ExecStart does not follow --prefix: $(grep ^ExecStart "$unit")"
grep -q "/usr/local" "$unit" && fail "installed unit still mentions /usr/local"
cmp -s "$dest/etc/bitnetd/bitnetd.conf" "$src/deploy/bitnetd.conf.example" || fail "bitnetd.conf is not the example"

if command -v systemd-analyze >/dev/null; then
  # verify needs ExecStart's binary at its real path: point it at the installed copy.
  sed "s#$prefix/bin/bitnetd#$dest$prefix/bin/bitnetd#" "$unit" > "$tmp/bitnetd.service"
  out=$(cd "$tmp" && systemd-analyze verify --man=no ./bitnetd.service 2>&1) || fail "verify: $out"
  [ -z "$out" ] || fail "verify of the installed unit printed: $out"
fi

# A second install keeps the operator's config and refreshes the example.
echo "# edited by the operator" >> "$dest/etc/bitnetd/bitnetd.conf"
BN_BUILD_DIR=$build bash "$src/deploy/install.sh" --destdir "$dest" --prefix "$prefix" >"$tmp/out2" 2>&1 \
  || { cat "$tmp/out2"; fail "second install.sh exited non-zero"; }
grep -q "edited by the operator" "$dest/etc/bitnetd/bitnetd.conf" || fail "second install overwrote bitnetd.conf"
grep -q "kept the existing" "$tmp/out2" || fail "second install did not say it kept the config"

# The installed binaries run.
"$dest$prefix/bin/bitnetd" --help >/dev/null 2>&1 || fail "installed bitnetd --help failed"
echo "ok: install.sh into DESTDIR with prefix $prefix"
