#!/usr/bin/env bash
# deploy/gpu-daemon-job.sh - a fine-tune of a random TinyLlama-1.1B-shaped model on the GPU
# through the daemon: bitnetd --gpus 0, one REST job with "device": "cuda", its progress
# polled while it runs, then its events and fine-tune loss curve (docs/GPU.md).
#   deploy/gpu-daemon-job.sh BUILD_DIR TEXT_FILE [MINUTES]
# (SHAPE, DEVICE, GPUS override tinyllama-1.1b, cuda, 0: SHAPE=tiny DEVICE=cpu GPUS=none
# checks the script on a machine without a GPU)
# BUILD_DIR holds daemon/bitnetd and cli/bitnetctl built with -Dcuda=enabled; TEXT_FILE is
# calibration/fine-tuning text (.txt). Needs python3 (the HTTP client), about 10 GB of disk.
set -euo pipefail
build=$(cd "${1:?usage: gpu-daemon-job.sh BUILD_DIR TEXT_FILE [MINUTES]}" && pwd)
text=$(cd "$(dirname "${2:?text file}")" && pwd)/$(basename "$2")
minutes=${3:-2}
shape=${SHAPE:-tinyllama-1.1b} device=${DEVICE:-cuda} gpus=${GPUS:-0}
root=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$root"' EXIT
mkdir -p "$root/models" "$root/data/datasets/wikitext" "$root/state"
cp "$text" "$root/data/datasets/wikitext/"
t0=$(date +%s)
"$build/cli/bitnetctl" init-model "$root/models/tl1b" --shape "$shape" --dtype f16 >/dev/null
echo "init-model $shape (random, f16): $(( $(date +%s) - t0 )) s"
"$build/daemon/bitnetd" --listen 127.0.0.1:0 --state-dir "$root/state" --model-root "$root/models" \
  --data-dir "$root/data" --workers 1 --gpus "$gpus" --log-format text >"$root/bitnetd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$root/state/bitnetd.url" ] && break; sleep 0.1; done
url=$(cat "$root/state/bitnetd.url")
grep -i "gpu" "$root/bitnetd.log" || true
python3 - "$url" "$root/models/tl1b" "$minutes" "$device" <<'PY'
import json, sys, time, urllib.request
url, model, minutes, device = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
def req(method, path, body=None):
    r = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                               headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(r) as f:
        return json.load(f)
job = req("POST", "/v1/jobs", {"model": model, "output": "tl1b-ternary", "config": {
    "device": device,
    "calibration": {"dataset": "wikitext", "samples": 16, "sequence_length": 256},
    "evaluate": {"windows": 4},
    "fine_tune": {"enabled": True, "threshold": -1, "max_minutes": minutes, "sequence_length": 256,
                  "batch_size": 4},
    "export": {"gguf": []}}})
jid = job["id"]
print("submitted", jid, flush=True)
t0, last = time.time(), None
while True:
    j = req("GET", f"/v1/jobs/{jid}")
    line = f"{time.time() - t0:6.0f} s  {j['status']:<9} {j.get('stage') or '':<9} {100 * (j.get('progress') or 0):5.1f}%  {j.get('detail') or ''}"
    if line != last:
        print(line, flush=True)
        last = line
    if j["status"] in ("succeeded", "failed", "cancelled"):
        break
    time.sleep(5)
for e in req("GET", f"/v1/jobs/{jid}/events")["events"]:
    if e.get("stage") in (None, "load", "evaluate", "finetune") or e["level"] != "info":
        print(f"event [{e['level']}] {e.get('stage') or '-'}: {e['message']}")
m = req("GET", f"/v1/jobs/{jid}/metrics")
loss = m.get("history", {}).get("fine_tune/loss", [])
print(f"fine_tune/loss: {len(loss)} points")
for p in loss[:: max(1, len(loss) // 12)] + loss[-1:]:
    print("  ", p)
for k in ("compression/post_perplexity", "compression/post_finetune_perplexity", "compression/fine_tune_epochs"):
    print(k, j.get("metrics", {}).get(k))
sys.exit(0 if j["status"] == "succeeded" else 1)
PY
