#!/bin/bash
# pgtest.sh - a throw-away PostgreSQL 15 server for the tests (never a server the machine
# happens to run): initdb + pg_ctl in DIR, listening on 127.0.0.1:PORT only, no socket
# file outside DIR. PostgreSQL refuses to run as root, so under root the server runs as
# the unprivileged user 'nobody' (DIR is handed to it); otherwise as the caller.
#   pgtest.sh start DIR PORT   -> prints the connection URL
#   pgtest.sh stop DIR | restart DIR | reset DIR (empties the database) | url DIR
set -euo pipefail
cmd=$1 dir=$2
bin=${BN_PG_BIN:-$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v initdb)")}
as_owner() {
    if [ "$(id -u)" = 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else "$@"; fi
}
url() { echo "postgresql://bitnetd@127.0.0.1:$(cat "$dir/port")/bitnetd?connect_timeout=5"; }
case $cmd in
start)
    port=$3
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then   # the server user must reach DIR (a temp dir of ours)
        chmod o+x "$(dirname "$dir")"; chown nobody:nogroup "$dir"; chmod 700 "$dir"; fi
    echo "$port" > "$dir/port.tmp" && mv "$dir/port.tmp" "$dir/port"
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$dir/port"
    as_owner "$bin/initdb" -D "$dir/data" -U bitnetd -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1
    cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
max_connections = 200
CONF
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U bitnetd bitnetd
    url ;;
stop)    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true ;;
restart) as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 restart -l "$dir/server.log" >/dev/null ;;
reset)
    "$bin/psql" -q -h 127.0.0.1 -p "$(cat "$dir/port")" -U bitnetd -d bitnetd \
        -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >/dev/null 2>&1 ;;
url) url ;;
*) echo "usage: pgtest.sh start|stop|restart|reset|url DIR [PORT]" >&2; exit 2 ;;
esac
