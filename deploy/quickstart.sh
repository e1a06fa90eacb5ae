#!/usr/bin/env bash
# quickstart.sh - from a fresh clone to a compressed model in one command.
#
#   bash deploy/quickstart.sh [--ci] [--port N] [--config JSON] [MODEL_FOLDER]
#   bash deploy/quickstart.sh --stop
#
# What it does, in order:
#   1. installs missing Debian packages (deploy/install-deps.sh);
#   2. builds bitnetd and bitnetctl with meson/ninja into ./build (or $BN_BUILD_DIR);
#   3. starts bitnetd on 127.0.0.1 (port 8787 if free, else any free port) with its state
#      in ./var/state, models under ./var/models, outputs under ./var/outputs (./var is
#      $BN_VAR_DIR), or reuses the daemon a previous run left running;
#   4. without MODEL_FOLDER, creates a demo model with `bitnetctl init-model --shape tiny`:
#      RANDOM weights, so its numbers show that the pipeline works, not a useful model.
#      With MODEL_FOLDER (a Hugging Face Llama-family folder, e.g.
#      ../shared/data/stories260K-hf), the folder's parent becomes an extra model root;
#   5. submits the job, follows it with `bitnetctl watch` (progress bar per stage, then
#      the metrics table), prints the output folder;
#   6. leaves the daemon running and prints the dashboard URL and how to stop it.
#
# Options: --ci        non-interactive: no progress-bar redraws, no colour (also when
#                      CI or BN_QUICKSTART_CI is set); never prompts in any mode.
#          --port N    listen on this port (default 8787, or a free one if 8787 is busy).
#          --config J  the job's engine config as JSON (default: a short demo budget for
#                      the demo model, the engine's defaults for a real model).
#          --stop      stop the daemon a previous run started, and exit.
# Environment: BN_BUILD_DIR (default ./build; an existing build dir is reused as is),
#          BN_VAR_DIR (default ./var), BN_SKIP_DEPS=1 (skip step 1).
# Exit codes: 0 the job succeeded; 1 usage or setup error; 2 build failed;
#          3 the daemon did not start; 4 the job failed or was cancelled.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
build=${BN_BUILD_DIR:-$root/build}
var=${BN_VAR_DIR:-$root/var}
ci=${BN_QUICKSTART_CI:-${CI:-}}
port=""
config=""
model=""
stop_only=0

say()  { printf '\n== %s\n' "$*"; }
die()  { local code=$1; shift; printf 'quickstart: %s\n' "$*" >&2; exit "$code"; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case $1 in
    --ci) ci=1 ;;
    --port) port=${2:?--port needs a number}; shift ;;
    --port=*) port=${1#--port=} ;;
    --config) config=${2:?--config needs JSON}; shift ;;
    --config=*) config=${1#--config=} ;;
    --stop) stop_only=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die 1 "unknown option $1" ;;
    *) [ -z "$model" ] || die 1 "only one MODEL_FOLDER, got '$model' and '$1'"; model=$1 ;;
  esac
  shift
done

pidfile=$var/bitnetd.pid
urlfile=$var/state/bitnetd.url
logfile=$var/bitnetd.log

daemon_pid() { # prints the pid of the daemon we started, if it is still running
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be a bitnetd.
  [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null || echo x)")" = bitnetd ] || return 1
  echo "$pid"
}

stop_daemon() {
  local pid
  if ! pid=$(daemon_pid); then echo "quickstart: no bitnetd started by quickstart is running"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "quickstart: bitnetd $pid ignored SIGTERM for 30 s; killing"; kill -KILL "$pid"; fi
  rm -f "$pidfile"
  echo "quickstart: stopped bitnetd (pid $pid)"
}

if [ "$stop_only" = 1 ]; then stop_daemon; exit 0; fi

if [ -n "$model" ]; then
  [ -d "$model" ] || die 1 "model folder not found: $model"
  model=$(realpath "$model")
  [ -f "$model/config.json" ] || die 1 "$model has no config.json: not a Hugging Face model folder"
fi

# --- 1. dependencies ---------------------------------------------------------------
if [ -z "${BN_SKIP_DEPS:-}" ]; then
  say "1/6 checking dependencies (deploy/install-deps.sh)"
  BN_DEPS_MINIMAL=1 bash deploy/install-deps.sh || die 1 "installing dependencies failed"
fi

# --- 2. build ----------------------------------------------------------------------
say "2/6 building into $build"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" -Dbuildtype=release -Dtests=false -Dbench=false >/dev/null \
    || die 2 "meson setup failed (run: meson setup $build)"
fi
ninja -C "$build" daemon/bitnetd cli/bitnetctl | tail -n 1 || die 2 "build failed (run: ninja -C $build)"
bitnetd=$build/daemon/bitnetd
bitnetctl=$build/cli/bitnetctl
[ -x "$bitnetd" ] && [ -x "$bitnetctl" ] || die 2 "build produced no bitnetd/bitnetctl in $build"

# --- 3. the daemon -----------------------------------------------------------------
mkdir -p "$var/state" "$var/models" "$var/outputs"
model_roots=(--model-root "$var/models")
[ -n "$model" ] && model_roots+=(--model-root "$(dirname "$model")")

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if pid=$(daemon_pid) && [ -f "$urlfile" ]; then
  say "3/6 reusing the running bitnetd (pid $pid)"
  if [ -n "$model" ] && ! tr '\0' '\n' < "/proc/$pid/cmdline" | grep -qxF -- "$(dirname "$model")"; then
    say "   restarting it: $(dirname "$model") is not one of its model roots"
    stop_daemon >/dev/null
    pid=""
  fi
else
  pid=""
fi
if [ -z "$pid" ]; then
  if [ -z "$port" ]; then
    if port_free 8787; then port=8787; else port=0; fi
  fi
  say "3/6 starting bitnetd on 127.0.0.1:${port/#0/(any free port)} (state in $var/state, log in $logfile)"
  rm -f "$urlfile"
  nohup "$bitnetd" --listen "127.0.0.1:$port" --state-dir "$var/state" "${model_roots[@]}" \
    --output-root "$var/outputs" >>"$logfile" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$pidfile"
  for _ in $(seq 1 300); do
    [ -s "$urlfile" ] && break
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logfile" >&2; rm -f "$pidfile"; die 3 "bitnetd exited during start-up (log: $logfile)"; }
    sleep 0.1
  done
  [ -s "$urlfile" ] || { tail -n 20 "$logfile" >&2; die 3 "bitnetd wrote no $urlfile within 30 s (log: $logfile)"; }
fi
url=$(head -n 1 "$urlfile")
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$url/readyz" && break
  sleep 0.1
done
curl -fsS -o /dev/null "$url/readyz" || die 3 "bitnetd at $url is not ready (log: $logfile)"
echo "bitnetd is up at $url (pid $pid)"

ctl() { BITNETD_URL=$url "$bitnetctl" "$@"; }

# --- 4. the model ------------------------------------------------------------------
if [ -z "$model" ]; then
  model=$var/models/demo-tiny
  say "4/6 demo model: $model"
  if [ ! -f "$model/config.json" ]; then
    "$bitnetctl" init-model "$model" --shape tiny >/dev/null || die 1 "bitnetctl init-model failed"
  fi
  echo "NOTE: this demo model has RANDOM weights. Its metrics show that the pipeline works;"
  echo "      they say nothing about a real model. Pass a Hugging Face folder to compress one:"
  echo "      bash deploy/quickstart.sh ../shared/data/stories260K-hf"
  # A short budget: a small calibration set and a few fine-tuning steps. A negative
  # threshold fine-tunes even when ternarization does not make this random demo model
  # worse, so the dashboard has a loss curve to show; its text is the synthetic templates,
  # which a job trains on only when it says so (allow_synthetic: a demo, not a result).
  [ -n "$config" ] || config='{"calibration":{"samples":16,"sequence_length":32},"fine_tune":{"threshold":-1,"max_steps":24,"checkpoint_every":8,"allow_synthetic":true}}'
else
  say "4/6 model: $model"
fi

# --- 5. submit and follow ----------------------------------------------------------
name="quickstart-$(basename "$model")-$(date +%Y%m%d-%H%M%S)"
say "5/6 submitting $name"
submit_args=(submit "$model" --output "$name")
[ -n "$config" ] && submit_args+=(--config "$config")
job=$(ctl "${submit_args[@]}" --json) || die 1 "submit failed: $job"
id=$(printf '%s' "$job" | sed -n 's/.*"id"[[:space:]]*:[[:space:]]*"\{0,1\}\([A-Za-z0-9_-]*\).*/\1/p' | head -n 1)
[ -n "$id" ] || die 1 "submit answered no job id: $job"
echo "job $id queued; dashboard: $url/#/jobs/$id"
watch_rc=0
if [ -n "$ci" ]; then ctl watch "$id" </dev/null | cat || watch_rc=$?
else ctl watch "$id" || watch_rc=$?; fi
status=$(ctl status "$id" --json) || die 4 "cannot read job $id"
state=$(printf '%s' "$status" | sed -n 's/.*"status"[[:space:]]*:[[:space:]]*"\([a-z]*\)".*/\1/p' | head -n 1)
outdir=$(printf '%s' "$status" | sed -n 's/.*"output_dir"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1)

# --- 6. result ---------------------------------------------------------------------
say "6/6 result"
echo "job:        $id ($state)"
[ -n "$outdir" ] && echo "output:     $outdir" && ls -1 "$outdir" 2>/dev/null | sed 's/^/            /'
echo "dashboard:  $url/"
echo "API:        curl $url/v1/jobs/$id"
echo "log:        $logfile"
stop_cmd="bash deploy/quickstart.sh --stop"
[ "$var" = "$root/var" ] || stop_cmd="BN_VAR_DIR=$var $stop_cmd"
echo "stop it:    $stop_cmd    (or: kill $pid)"
if [ "$state" != succeeded ]; then
  die 4 "job $id ended '$state' (watch exit $watch_rc); see: $bitnetctl logs $id --server $url"
fi
