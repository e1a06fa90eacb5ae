"""torch_ste.py - the PyTorch peer of bench_gpu.c: the same Llama shapes, the same STE
ternary linears (absmean per output row, tau 0.5, straight-through gradient), the same
AdamW (0.9, 0.95, eps 1e-8, clip 1.0), bf16 autocast, eager or torch.compile. Prints one
JSON object per run, like bench_gpu.

  python3 torch_ste.py SHAPE eager|compile [B T STEPS]
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    "tinyllama-1.1b": dict(dim=2048, hidden=5632, layers=22, heads=32, kv=4, hd=64, vocab=32000),
    "25m": dict(dim=512, hidden=1408, layers=7, heads=8, kv=4, hd=64, vocab=4096),
}


class STELinear(nn.Linear):
    """y = x q(W)^T with q(W) = sign(W) s_r where |W| >= tau s_r, s_r = mean_j |W_rj|;
    the gradient reaches W unchanged."""

    def forward(self, x):
        w = self.weight
        s = w.abs().mean(dim=1, keepdim=True).clamp(min=1e-8)
        q = torch.where(w.abs() >= 0.5 * s, torch.sign(w) * s, torch.zeros_like(w))
        return F.linear(x, w + (q - w).detach())


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["dim"], c["hd"]
        self.h, self.kv, self.hd = c["heads"], c["kv"], hd
        self.n1 = nn.RMSNorm(d, eps=1e-5)
        self.q = STELinear(d, self.h * hd, bias=False)
        self.k = STELinear(d, self.kv * hd, bias=False)
        self.v = STELinear(d, self.kv * hd, bias=False)
        self.o = STELinear(self.h * hd, d, bias=False)
        self.n2 = nn.RMSNorm(d, eps=1e-5)
        self.g = STELinear(d, c["hidden"], bias=False)
        self.u = STELinear(d, c["hidden"], bias=False)
        self.dn = STELinear(c["hidden"], d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        n = self.n1(x)
        q = self.q(n).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k(n).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v(n).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, -1))
        n = self.n2(x)
        return x + self.dn(F.silu(self.g(n)) * self.u(n))


class Llama(nn.Module):
    def __init__(self, c, T):
        super().__init__()
        self.emb = nn.Embedding(c["vocab"], c["dim"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = nn.RMSNorm(c["dim"], eps=1e-5)
        self.head = nn.Linear(c["dim"], c["vocab"], bias=False)
        inv = 10000.0 ** (-torch.arange(0, c["hd"], 2, dtype=torch.float64) / c["hd"])
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tok, tgt):
        x = self.emb(tok)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.view(-1))


def main():
    shape, mode = sys.argv[1], sys.argv[2]
    B = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    T = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    c = SHAPES[shape]
    dev = "cuda"
    torch.manual_seed(1)
    model = Llama(c, T).to(dev)
    P = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.0, fused=True)
    step_model = torch.compile(model) if mode == "compile" else model
    tok = torch.randint(0, c["vocab"], (B, T + 1), device=dev)
    x, y = tok[:, :-1].contiguous(), tok[:, 1:].contiguous()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tps = B * T * steps / dt
    flops_tok = 6.0 * (P - c["vocab"] * c["dim"]) + 6.0 * c["layers"] * T * c["heads"] * c["hd"]
    print(json.dumps({"impl": "torch-" + mode, "shape": shape, "B": B, "T": T, "params": P,
                      "tokens_per_s": round(tps, 1), "step_ms": round(1000 * dt / steps, 2),
                      "peak_bytes": torch.cuda.max_memory_allocated(),
                      "mfu": round(tps * flops_tok / 989e12, 4), "loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
