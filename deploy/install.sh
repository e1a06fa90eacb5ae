#!/usr/bin/env bash
# install.sh - installs a built bitnetd as a systemd service.
#
#   sudo bash deploy/install.sh [--prefix DIR] [--destdir DIR] [--build-dir DIR] [--no-activate]
#
# Installs, under DESTDIR (default: empty, i.e. the real root):
#   PREFIX/bin/bitnetd, PREFIX/bin/bitnetctl          (PREFIX default /usr/local)
#   PREFIX/lib/systemd/system/bitnetd.service, bitnetd.socket
#   PREFIX/lib/sysusers.d/bitnetd.conf, PREFIX/lib/tmpfiles.d/bitnetd.conf
#   PREFIX/share/doc/bitnetd/OPERATIONS.md
#   /etc/bitnetd/bitnetd.conf.example (always refreshed) and /etc/bitnetd/bitnetd.conf
#   (only when absent: an operator's config is never overwritten)
# systemd searches /usr/local/lib/{systemd/system,sysusers.d,tmpfiles.d} as well as
# /usr/lib. With a PREFIX other than /usr/local, the unit's ExecStart is rewritten to
# PREFIX/bin/bitnetd.
# Then, unless --no-activate or DESTDIR is set or systemd is not running: creates the
# user (systemd-sysusers), the directories (systemd-tmpfiles) and reloads systemd. It
# never enables or starts the service: the last lines printed say how.
# Environment: DESTDIR and PREFIX are honoured like the options. Build first
# (meson setup build && ninja -C build) or let quickstart.sh do it.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
build=${BN_BUILD_DIR:-$root/build}
activate=1

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?}; shift ;;
    --prefix=*) prefix=${1#--prefix=} ;;
    --destdir) destdir=${2:?}; shift ;;
    --destdir=*) destdir=${1#--destdir=} ;;
    --build-dir) build=${2:?}; shift ;;
    --build-dir=*) build=${1#--build-dir=} ;;
    --no-activate) activate=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 1 ;; esac

for f in "$build/daemon/bitnetd" "$build/cli/bitnetctl"; do
  [ -x "$f" ] || { echo "install.sh: $f not built (meson setup $build && ninja -C $build)" >&2; exit 1; }
done

D=$destdir
bindir=$prefix/bin
unitdir=$prefix/lib/systemd/system
sysusersdir=$prefix/lib/sysusers.d
tmpfilesdir=$prefix/lib/tmpfiles.d
docdir=$prefix/share/doc/bitnetd
confdir=/etc/bitnetd

install -d -m 0755 "$D$bindir" "$D$unitdir" "$D$sysusersdir" "$D$tmpfilesdir" "$D$docdir" "$D$confdir"
install -m 0755 "$build/daemon/bitnetd" "$build/cli/bitnetctl" "$D$bindir/"

sed -e "s#/usr/local/bin/bitnetd#$bindir/bitnetd#" \
    -e "s#file:///usr/local/share/doc/bitnetd/#file://$docdir/#" \
    systemd/bitnetd.service > "$D$unitdir/bitnetd.service"
sed -e "s#file:///usr/local/share/doc/bitnetd/#file://$docdir/#" \
    systemd/bitnetd.socket > "$D$unitdir/bitnetd.socket"
chmod 0644 "$D$unitdir/bitnetd.service" "$D$unitdir/bitnetd.socket"
install -m 0644 systemd/bitnetd.sysusers "$D$sysusersdir/bitnetd.conf"
install -m 0644 systemd/bitnetd.tmpfiles "$D$tmpfilesdir/bitnetd.conf"
install -m 0644 docs/OPERATIONS.md "$D$docdir/OPERATIONS.md"
install -m 0644 deploy/bitnetd.conf.example "$D$confdir/bitnetd.conf.example"
if [ ! -e "$D$confdir/bitnetd.conf" ]; then
  install -m 0644 deploy/bitnetd.conf.example "$D$confdir/bitnetd.conf"
  echo "install.sh: wrote $D$confdir/bitnetd.conf from the example"
else
  echo "install.sh: kept the existing $D$confdir/bitnetd.conf (the example is beside it)"
fi
echo "install.sh: installed bitnetd $("$build/daemon/bitnetd" --version 2>/dev/null | head -n 1) into ${D:-/}${D:+ }(prefix $prefix)"

if [ "$activate" = 1 ] && [ -z "$D" ] && [ -d /run/systemd/system ]; then
  systemd-sysusers "$sysusersdir/bitnetd.conf"
  systemd-tmpfiles --create "$tmpfilesdir/bitnetd.conf"
  systemctl daemon-reload
  echo "install.sh: user bitnetd and /var/lib/bitnetd ready; systemd reloaded"
fi
cat <<EOF

Next steps:
  edit   $confdir/bitnetd.conf        (documented line by line)
  start  systemctl enable --now bitnetd.service
     or  systemctl enable --now bitnetd.socket   (socket activation)
  check  systemctl status bitnetd; journalctl -u bitnetd -f
  docs   $docdir/OPERATIONS.md
EOF
