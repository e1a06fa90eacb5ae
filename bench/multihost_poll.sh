#!/bin/bash
# multihost_poll.sh - status polling across hosts: two bitnetd processes share one
# PostgreSQL queue (a throw-away server, tests/common/pgtest.sh); a long job is submitted
# to host A and runs there, and poll_bench polls it through host B. The same poll_bench
# run against a single SQLite-backed host is the peer. Prints both tables.
#   bench/multihost_poll.sh [BUILD_DIR] [SECONDS]   (run from the source root)
set -euo pipefail
build=${1:-build} secs=${2:-10}
bin=$build/tests/service/bitnetd-fake
[ -x "$build/daemon/bitnetd" ] && bin=$build/daemon/bitnetd
model=${BN_MODEL:-../shared/data/stories260K-hf}
tmp=$(mktemp -d)

cleanup() {
    [ -f "$tmp/pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null || true; done < "$tmp/pids"
    bash tests/common/pgtest.sh stop "$tmp/pg" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
url=$(bash tests/common/pgtest.sh start "$tmp/pg" $((30000 + RANDOM % 20000)))
mroot=$(cd "$(dirname "$model")" && pwd -P)
start() { # NAME STORE
    mkdir -p "$tmp/$1"
    BN_FAKE_STAGE_MS=600000 "$bin" --listen 127.0.0.1:0 --state-dir "$tmp/$1" --store "$2" \
        --model-root "$mroot" --output-root "$tmp/out" --log-level warn >/dev/null 2>"$tmp/$1.log" &
    echo $! >> "$tmp/pids"
    for _ in $(seq 100); do [ -s "$tmp/$1/bitnetd.url" ] && break; sleep 0.1; done
    cat "$tmp/$1/bitnetd.url"
}
submit() { # URL -> job id
    curl -s -X POST "$1/v1/jobs" -H 'Content-Type: application/json' \
        -d "{\"model\":\"$mroot/$(basename "$model")\",\"output\":\"o$RANDOM\",\"config\":{\"fine_tune\":{\"max_minutes\":30}}}" |
        python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get(\"id\") or sys.exit(str(d)))"
}
a=$(start a "$url"); b=$(start b "$url"); s=$(start s "sqlite:$tmp/s.db")
ja=$(submit "$a"); js=$(submit "$s")
sleep 1
echo "== PostgreSQL: job submitted to host A, polled through host B"
"$build/bench/poll_bench" --server "$b" --job "$ja" --seconds "$secs" --json "$tmp/pg.json"
echo "== SQLite: one host (peer)"
"$build/bench/poll_bench" --server "$s" --job "$js" --seconds "$secs" --json "$tmp/sqlite.json"
