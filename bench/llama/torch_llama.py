#!/usr/bin/python3
"""torch_llama.py - the bench_llama model in PyTorch (Debian python3-torch), for comparison.

Same architecture and sizes as bitnetd's engine (HF Llama: RMSNorm, rotate_half RoPE,
causal multi-head attention with GQA, SwiGLU, untied head), random weights, the same
batch and thread count. Modes:
  forward  logits under torch.no_grad()
  train    forward + cross-entropy + backward + optimizer step (AdamW with
           clip_grad_norm_(1.0), or SGD)
Prints one JSON line like bench_llama. Written for this benchmark (no transformers).
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

SHAPES = {  # dim, hidden, layers, heads, kv_heads, vocab (as engine/formats/initmodel.c)
    "25m": (512, 1536, 8, 8, 8, 8192),
}


class Block(torch.nn.Module):
    def __init__(self, d, f, h, kv):
        super().__init__()
        self.h, self.kv, self.hd = h, kv, d // h
        self.n1 = torch.nn.Parameter(torch.ones(d))
        self.n2 = torch.nn.Parameter(torch.ones(d))
        self.wq = torch.nn.Linear(d, h * self.hd, bias=False)
        self.wk = torch.nn.Linear(d, kv * self.hd, bias=False)
        self.wv = torch.nn.Linear(d, kv * self.hd, bias=False)
        self.wo = torch.nn.Linear(h * self.hd, d, bias=False)
        self.wg = torch.nn.Linear(d, f, bias=False)
        self.wu = torch.nn.Linear(d, f, bias=False)
        self.wd = torch.nn.Linear(f, d, bias=False)


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Llama(torch.nn.Module):
    def __init__(self, d, f, L, h, kv, V):
        super().__init__()
        self.emb = torch.nn.Embedding(V, d)
        self.blocks = torch.nn.ModuleList(Block(d, f, h, kv) for _ in range(L))
        self.nf = torch.nn.Parameter(torch.ones(d))
        self.head = torch.nn.Linear(d, V, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, tok):
        B, T = tok.shape
        x = self.emb(tok)
        hd = self.blocks[0].hd
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(T).float(), inv)
        cos = torch.cat((ang.cos(), ang.cos()), -1)
        sin = torch.cat((ang.sin(), ang.sin()), -1)
        mask = torch.full((T, T), float("-inf")).triu(1)
        for b in self.blocks:
            n = rmsnorm(x, b.n1)
            q = b.wq(n).view(B, T, b.h, hd).transpose(1, 2)
            k = b.wk(n).view(B, T, b.kv, hd).transpose(1, 2)
            v = b.wv(n).view(B, T, b.kv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if b.kv != b.h:
                k = k.repeat_interleave(b.h // b.kv, dim=1)
                v = v.repeat_interleave(b.h // b.kv, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
            y = att.softmax(-1) @ v
            x = x + b.wo(y.transpose(1, 2).reshape(B, T, -1))
            n = rmsnorm(x, b.n2)
            x = x + b.wd(F.silu(b.wg(n)) * b.wu(n))
        return self.head(rmsnorm(x, self.nf))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["forward", "train"])
    ap.add_argument("--shape", default="25m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--optim", default="adamw", choices=["adamw", "sgd"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)
    d, f, L, h, kv, V = SHAPES[a.shape]
    m = Llama(d, f, L, h, kv, V)
    tok = torch.randint(0, V, (a.batch, a.seq + 1))
    inp, tgt = tok[:, :-1], tok[:, 1:]
    opt = (torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
           if a.optim == "adamw" else torch.optim.SGD(m.parameters(), lr=1e-3))
    loss = torch.zeros(())
    for it in range(a.warmup + a.iters):
        if it == a.warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        if a.mode == "forward":
            with torch.no_grad():
                m(inp)
            continue
        logits = m(inp)
        loss = F.cross_entropy(logits.view(-1, V), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.optim == "adamw":
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    dt = (time.perf_counter() - t0) / a.iters
    cpu = (time.process_time() - c0) / a.iters
    print(json.dumps({"engine": "pytorch " + torch.__version__, "mode": a.mode,
                      "shape": a.shape, "threads": a.threads, "batch": a.batch,
                      "seq": a.seq, "optim": a.optim if a.mode == "train" else "-",
                      "seconds_per_step": round(dt, 4), "cpu_seconds_per_step": round(cpu, 4),
                      "tokens_per_s": round(a.batch * a.seq / dt, 1),
                      "loss": round(float(loss), 4)}))


if __name__ == "__main__":
    main()
