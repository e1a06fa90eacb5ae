#!/usr/bin/env bash
# Load and soak of bitnetd's status routes with wrk, while a job computes.
#
#   bench/load/load.sh [--build DIR] [--seconds N] [--soak-minutes M] [--connections C]
#                      [--json FILE]
#
# Starts the built bitnetd on a random loopback port with a fresh state folder, submits a
# tiny random-weight model whose fine-tuning keeps a worker busy for the whole run, then:
#   load: wrk -c C for N seconds against GET /v1/jobs/{id} and against GET /v1/jobs,
#         printing requests/s, p50, p99 and errors (non-2xx or socket errors);
#   soak: (if M > 0) the same two routes for M minutes while bitnetd's RSS is sampled
#         every 5 s; growth = last sample / first sample after a 30 s warm-up - 1.
# Exits non-zero if any request failed or RSS grew by 5% or more.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build
seconds=20
soak=0
conns=50
json=""
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2;;
    --seconds) seconds=$2; shift 2;;
    --soak-minutes) soak=$2; shift 2;;
    --connections) conns=$2; shift 2;;
    --json) json=$2; shift 2;;
    *) echo "usage: $0 [--build DIR] [--seconds N] [--soak-minutes M] [--connections C] [--json FILE]" >&2; exit 2;;
  esac
done
command -v wrk >/dev/null || { echo "load.sh: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/models" "$tmp/out"
"$build/cli/bitnetctl" init-model "$tmp/models/tiny" --shape tiny --seed 1 >/dev/null
"$build/daemon/bitnetd" --listen 127.0.0.1:0 --state-dir "$tmp/state" --model-root "$tmp/models" \
  --output-root "$tmp/out" --log-level warn 2>"$tmp/daemon.log" &
pid=$!
for _ in $(seq 200); do [ -s "$tmp/state/bitnetd.url" ] && break; sleep 0.05; done
url=$(cat "$tmp/state/bitnetd.url")
busy_minutes=$(( (seconds * 2 + 59) / 60 + soak * 2 + 2 ))
id=$(curl -sf -H 'Content-Type: application/json' "$url/v1/jobs" -d "{\"model\":\"tiny\",\"output\":\"load\",\
\"config\":{\"calibration\":{\"samples\":8,\"sequence_length\":64},\"evaluate\":{\"windows\":1},\
\"fine_tune\":{\"enabled\":true,\"threshold\":0,\"epochs\":1000,\"max_steps\":0,\"allow_synthetic\":true,\"max_minutes\":$busy_minutes,\
\"sequence_length\":64,\"batch_size\":2,\"checkpoint_every\":1000}}}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
for _ in $(seq 600); do
  curl -sf "$url/v1/jobs/$id" | grep -q '"status":"running"' && break; sleep 0.1
done

# run_wrk SECONDS PATH -> "rps p50_ms p99_ms errors"
run_wrk() {
  local out
  out=$(wrk -t2 -c"$conns" -d"${1}s" --latency --timeout 5s "$url$2" 2>&1)
  local rps p50 p99 non2xx sock
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
  sock=$(awk -F'[ ,]+' '/Socket errors/ {s=0; for(i=1;i<=NF;i++) if ($i ~ /^[0-9]+$/) s+=$i; print s}' <<<"$out"); sock=${sock:-0}
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $((non2xx + sock))"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0; else if (v ~ /s$/) printf "%.3f", v*1000; else print "nan" }'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

printf "bitnetd load (wrk, %d connections, %d threads on %d cores; a fine-tuning job computing)\n" "$conns" 2 "$(nproc)"
printf "%-22s %10s %10s %10s %8s\n" route "req/s" "p50 ms" "p99 ms" errors
read -r s_rps s_p50 s_p99 s_err <<<"$(run_wrk "$seconds" "/v1/jobs/$id")"
printf "%-22s %10s %10s %10s %8s\n" "GET /v1/jobs/{id}" "$s_rps" "$s_p50" "$s_p99" "$s_err"
read -r l_rps l_p50 l_p99 l_err <<<"$(run_wrk "$seconds" "/v1/jobs")"
printf "%-22s %10s %10s %10s %8s\n" "GET /v1/jobs" "$l_rps" "$l_p50" "$l_p99" "$l_err"
curl -sf "$url/v1/jobs/$id" | grep -q '"status":"running"' || { echo "load.sh: the job stopped computing during the run" >&2; exit 1; }

growth=null; rss0=null; rss1=null; soak_err=0
if [ "$soak" -gt 0 ]; then
  end=$(( $(date +%s) + soak * 60 ))
  samples=()
  ( while [ "$(date +%s)" -lt "$end" ]; do wrk -t1 -c10 -d30s "$url/v1/jobs/$id" >/dev/null 2>&1; \
      wrk -t1 -c10 -d30s "$url/v1/jobs" >/dev/null 2>&1; done ) &
  loadpid=$!
  warm=$(( $(date +%s) + 30 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ "$(date +%s)" -ge "$warm" ] && samples+=("$(rss_kb)")
    sleep 5
  done
  kill "$loadpid" 2>/dev/null || true; wait "$loadpid" 2>/dev/null || true
  rss0=${samples[0]}; rss1=${samples[-1]}
  growth=$(awk -v a="$rss0" -v b="$rss1" 'BEGIN { printf "%.4f", b/a - 1 }')
  printf "soak %d min: RSS %d kB -> %d kB (growth %.2f%%, %d samples)\n" "$soak" "$rss0" "$rss1" \
    "$(awk -v g="$growth" 'BEGIN{print g*100}')" "${#samples[@]}"
fi

if [ -n "$json" ]; then
  cat >"$json" <<JSON
{"connections": $conns, "seconds": $seconds,
 "status": {"rps": $s_rps, "p50_ms": $s_p50, "p99_ms": $s_p99, "errors": $s_err},
 "list": {"rps": $l_rps, "p50_ms": $l_p50, "p99_ms": $l_p99, "errors": $l_err},
 "soak_minutes": $soak, "rss_start_kb": $rss0, "rss_end_kb": $rss1, "rss_growth": $growth}
JSON
fi
[ "$s_err" -eq 0 ] && [ "$l_err" -eq 0 ] || { echo "load.sh: requests failed" >&2; exit 1; }
if [ "$growth" != null ] && awk -v g="$growth" 'BEGIN{exit !(g >= 0.05)}'; then
  echo "load.sh: RSS grew by 5% or more" >&2; exit 1
fi
