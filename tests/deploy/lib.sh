# lib.sh - helpers sourced by the shell tests in tests/deploy/.
#
# bn_need TOOL WHY       skip (77) when TOOL is missing, fail under CI=true.
# bn_start_daemon BUILD DIR [ARGS...]
#                        starts BUILD/daemon/bitnetd (or $BN_BITNETD) on a free loopback port with its
#                        state, models and outputs under DIR; sets BN_DAEMON_PID, BN_URL.
# bn_stop_daemon         SIGTERM, wait up to 30 s, then SIGKILL; only the pid we started.

bn_need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ -n "${CI:-}" ]; then echo "FAIL: $1 missing ($2); deploy/install-deps.sh installs it" >&2; exit 1; fi
    echo "SKIP: $1 missing ($2)"; exit 77
  fi
}

bn_start_daemon() {
  local build=$1 dir=$2; shift 2
  mkdir -p "$dir/state" "$dir/models" "$dir/outputs"
  rm -f "$dir/state/bitnetd.url"
  "${BN_BITNETD:-$build/daemon/bitnetd}" --listen 127.0.0.1:0 --state-dir "$dir/state" --model-root "$dir/models" \
    --output-root "$dir/outputs" "$@" >"$dir/bitnetd.log" 2>&1 </dev/null &
  BN_DAEMON_PID=$!
  local i
  for i in $(seq 1 600); do
    [ -s "$dir/state/bitnetd.url" ] && break
    if ! kill -0 "$BN_DAEMON_PID" 2>/dev/null; then
      cat "$dir/bitnetd.log" >&2; echo "FAIL: bitnetd exited during start-up" >&2; exit 1
    fi
    sleep 0.1
  done
  [ -s "$dir/state/bitnetd.url" ] || { cat "$dir/bitnetd.log" >&2; echo "FAIL: no bitnetd.url after 60 s" >&2; exit 1; }
  BN_URL=$(head -n 1 "$dir/state/bitnetd.url")
}

bn_stop_daemon() {
  [ -n "${BN_DAEMON_PID:-}" ] || return 0
  kill -TERM "$BN_DAEMON_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 300); do kill -0 "$BN_DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$BN_DAEMON_PID" 2>/dev/null || true
  wait "$BN_DAEMON_PID" 2>/dev/null || true
  BN_DAEMON_PID=
}
