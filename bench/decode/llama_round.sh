#!/usr/bin/env bash
# bench/decode/llama_round.sh THREADS ROUND: one llama.cpp measurement for run.sh (called
# by bench_decode between its own): llama-bench tg64 and pp128 (2 repetitions each, their
# mean) on $GGUF, one JSON line appended to $RES. Env: LB (llama-bench), BINS (the folder
# of node-llama-cpp's libraries, where ggml finds its CPU backends), GGUF, CONFIG, RES.
set -euo pipefail
t=$1 r=$2
tg=$(cd "$BINS" && "$LB" -m "$GGUF" -p 0 -n 64 -t "$t" -r 2 -o jsonl 2>/dev/null | tail -1)
pp=$(cd "$BINS" && "$LB" -m "$GGUF" -p 128 -n 0 -t "$t" -r 2 -o jsonl 2>/dev/null | tail -1)
python3 - "$t" "$r" "$tg" "$pp" "$GGUF" "$CONFIG" >> "$RES" <<'PY'
import json, os, sys
t, r, tg, pp, gguf, cfg = sys.argv[1:]
tg, pp, c = json.loads(tg), json.loads(pp), json.load(open(cfg))
# weights read per token: the whole file but the F16 token embedding, of which one row
emb = c["vocab_size"] * c["hidden_size"] * 2
print(json.dumps({"engine": "llama.cpp", "threads": int(t), "round": int(r), "tg_tok_s": tg["avg_ts"],
                  "pp_tok_s": pp["avg_ts"], "bytes_per_token": os.path.getsize(gguf) - emb + c["hidden_size"] * 2}))
PY
