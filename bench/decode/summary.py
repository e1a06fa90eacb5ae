#!/usr/bin/env python3
"""summary.py RESULTS.jsonl LOAD_BEFORE LOAD_AFTER [JSON_OUT]: the table of bench/decode/run.sh
(median per engine and thread count over the rounds present, ratios, bytes per token, tg
as a fraction of the bandwidth limit) from the JSON lines bench_decode and llama_round.sh
wrote; works on a partial run too."""
import json, statistics, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
out = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z",
       "load_before": sys.argv[2].strip(), "load_after": sys.argv[3].strip(), "rounds": rows, "median": []}
print(f"load before: {out['load_before']}\nload after:  {out['load_after']}")
print(f"{'threads':>7} {'engine':>10} {'tg64 tok/s':>11} {'pp128 tok/s':>12} {'MB/token':>9} {'GB/s':>6} {'tg/limit':>8}")
for t in sorted({r["threads"] for r in rows}):
    med = {}
    for e in ("bitnetd", "llama.cpp"):
        rs = [r for r in rows if r["threads"] == t and r["engine"] == e]
        if not rs: continue
        bw = statistics.median([r["read_gb_s"] for r in rows if r["threads"] == t and "read_gb_s" in r])
        m = {"engine": e, "threads": t, "tg_tok_s": statistics.median(r["tg_tok_s"] for r in rs),
             "pp_tok_s": statistics.median(r["pp_tok_s"] for r in rs), "bytes_per_token": rs[0]["bytes_per_token"],
             "read_gb_s": bw}
        m["tg_fraction_of_bandwidth_limit"] = m["tg_tok_s"] * m["bytes_per_token"] / (bw * 1e9)
        med[e] = m
        out["median"].append(m)
        print(f"{t:>7} {e:>10} {m['tg_tok_s']:>11.1f} {m['pp_tok_s']:>12.1f} {m['bytes_per_token']/1e6:>9.1f} "
              f"{bw:>6.1f} {m['tg_fraction_of_bandwidth_limit']:>8.2f}")
    if len(med) == 2:
        rt = med["bitnetd"]["tg_tok_s"] / med["llama.cpp"]["tg_tok_s"]
        rp = med["bitnetd"]["pp_tok_s"] / med["llama.cpp"]["pp_tok_s"]
        out["median"].append({"threads": t, "ratio_tg": rt, "ratio_pp": rp})
        print(f"{t:>7} {'ratio':>10} {rt:>10.2f}x {rp:>11.2f}x   (bitnetd / llama.cpp)")
if len(sys.argv) > 4:
    json.dump(out, open(sys.argv[4], "w"), indent=1)
