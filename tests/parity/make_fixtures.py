#!/usr/bin/env python3
"""make_fixtures.py - small random models made by transformers itself, with its logits.

Each row of ROWS is one model: transformers builds it from the config, the weights are
drawn with a fixed seed, save_pretrained writes it (dtype and sharding as the row says),
and the FP32 logits of transformers' own forward over TOKENS, computed from the weights
as saved, go to logits.f32 (float32 little-endian, [T, vocab]) beside tokens.json. The C
test tests/parity/test_parity.c checks bitnetd's forward against every folder.

Run where transformers 5.x and PyTorch are installed (the GPU machine has both):
    python3 tests/parity/make_fixtures.py OUT_DIR [ROW_NAME...]   (no names: every row)
then copy OUT_DIR/* to tests/parity/fixtures/. Keep the models tiny: the fixtures are
committed and must stay well under 1 MB in all.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

T = 48
VOCAB = 128
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=256, rms_norm_eps=1e-5)

# name, config class, config overrides, saved dtype, shard the weights
ROWS = [
    ("llama_mha_f32", LlamaConfig, dict(num_key_value_heads=4), torch.float32, False),
    ("llama_gqa_tied_f16", LlamaConfig, dict(num_key_value_heads=2, tie_word_embeddings=True,
                                             rope_theta=500000.0), torch.float16, False),
    ("llama3_rope_bf16", LlamaConfig, dict(num_key_value_heads=2, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)), torch.bfloat16, False),
    ("llama_linear_rope_sharded", LlamaConfig, dict(num_key_value_heads=2, rope_scaling=dict(
        rope_type="linear", factor=4.0)), torch.float32, True),
    ("mistral_gqa_head_dim", MistralConfig, dict(num_key_value_heads=2, sliding_window=128,
                                                 head_dim=16), torch.float32, False),
    ("qwen2_bias_tied", Qwen2Config, dict(num_key_value_heads=2, tie_word_embeddings=True),
     torch.float32, False),
    ("qwen3_qk_norm_f16", Qwen3Config, dict(num_key_value_heads=2, head_dim=16), torch.float16, False),
    ("llama_yarn_f32", LlamaConfig, dict(num_key_value_heads=2, rope_scaling=dict(
        rope_type="yarn", factor=4.0, original_max_position_embeddings=64)), torch.float32, False),
    ("qwen2_yarn_untied_bf16", Qwen2Config, dict(num_key_value_heads=2, rope_scaling=dict(
        rope_type="yarn", factor=2.0, beta_fast=16.0, beta_slow=2.0, attention_factor=1.2,
        original_max_position_embeddings=128)), torch.bfloat16, False),
    ("qwen3_yarn_tied_bf16", Qwen3Config, dict(num_key_value_heads=1, tie_word_embeddings=True,
        rope_scaling=dict(rope_type="yarn", factor=8.0, original_max_position_embeddings=32)),
     torch.bfloat16, False),
]


def randomize(model, seed):
    """Weights large enough that every part of the forward moves the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


EXTRA = {"llama_yarn_f32", "qwen3_yarn_tied_bf16"}


def main(out, only):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, VOCAB, (T,), generator=g)
    table = []
    for i, (name, cls, over, dtype, shard) in enumerate(ROWS):
        if (only and name not in only) or (not only and name in EXTRA):
            continue
        cfg = cls(**{**BASE, **over})
        print(name, "rope:", getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None))
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        randomize(model, 100 + i)
        model.to(dtype)
        d = os.path.join(out, name)
        model.save_pretrained(d, safe_serialization=True, max_shard_size="12KB" if shard else "1GB")
        # The reference: FP32 from the weights as saved, loaded the way a user loads them
        # (so buffers such as the rotary frequencies are computed afresh in FP32).
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = ref(tokens[None]).logits[0].float().contiguous()
        logits.numpy().astype("<f4").tofile(os.path.join(d, "logits.f32"))
        with open(os.path.join(d, "tokens.json"), "w") as f:
            json.dump({"tokens": tokens.tolist(), "vocab": VOCAB,
                       "transformers": transformers.__version__, "torch": torch.__version__}, f)
        files = sorted(os.listdir(d))
        size = sum(os.path.getsize(os.path.join(d, x)) for x in files)
        table.append((name, str(dtype).replace("torch.", ""), len(files), size,
                      float(logits.abs().max())))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, T={T}")
    print(f"{'fixture':28} {'dtype':9} {'files':>5} {'bytes':>8} {'max|logit|':>10}")
    for r in table:
        print(f"{r[0]:28} {r[1]:9} {r[2]:5d} {r[3]:8d} {r[4]:10.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures", set(sys.argv[2:]))
