#!/usr/bin/env bash
# install_deps_quiet.sh SRC_ROOT - deploy/install-deps.sh is quiet: against a stand-in
# apt-get (first on PATH; it prints apt-like noise, succeeds for "update" and for
# installing "present-pkg", fails for anything else) it prints one line per step, keeps
# apt's output in the log, and on failure shows the log's tail and exits with apt's status.
set -euo pipefail
src=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/bn_deps.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir "$work/bin"
cat > "$work/bin/apt-get" <<'SH'
#!/bin/sh
echo "Reading package lists... noise"
echo "Get:1 http://deb.debian.org bookworm InRelease noise"
[ "$1" = update ] && exit 0
for a in "$@"; do case $a in -*|install) ;; present-pkg) ;; *) echo "E: Unable to locate package $a"; exit 100;; esac; done
exit 0
SH
printf '#!/bin/sh\nexec "$@"\n' > "$work/bin/sudo"
chmod +x "$work/bin/apt-get" "$work/bin/sudo"
run() { PATH=$work/bin:$PATH BN_DEPS_LOG=$work/log BN_EXTRA_PKGS=$1 bash "$src/deploy/install-deps.sh"; }

# success: exactly the step lines, no apt noise; the noise is in the log
# (dpkg-query does not know present-pkg, so the script installs it)
run present-pkg > "$work/out" 2>&1 || fail "install of present-pkg failed: $(cat "$work/out")"
grep -q noise "$work/out" && fail "apt output reached the terminal: $(cat "$work/out")"
grep -vq '^install-deps: ' "$work/out" && fail "a line without the install-deps prefix: $(cat "$work/out")"
grep -q '^install-deps: installing .*present-pkg' "$work/out" || fail "no line names the package: $(cat "$work/out")"
[ "$(wc -l < "$work/out")" -le 4 ] || fail "more than one line per step: $(cat "$work/out")"
grep -q "Get:1" "$work/log" || fail "apt output missing from the log"

# failure: apt's status, the step named, the log's tail shown
rc=0
run no-such-pkg-xyz > "$work/out" 2>&1 || rc=$?
[ "$rc" -eq 100 ] || fail "exit $rc, want apt's 100"
grep -q 'FAILED (installing .*no-such-pkg-xyz' "$work/out" || fail "failure does not name the step: $(cat "$work/out")"
grep -q 'Unable to locate package no-such-pkg-xyz' "$work/out" || fail "the log's tail is not shown: $(cat "$work/out")"
echo ok
