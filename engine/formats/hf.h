/* hf.h - a Hugging Face model folder: config.json, weights, tokenizer files.
 *
 * Supports model_type llama, mistral, qwen2 and qwen3 (Llama-family decoder-only models;
 * qwen3 adds an RMSNorm over each query and key head before the rotary embedding).
 * bn_hf_open reads config.json, opens the weights, maps every HF tensor name to a role
 * and checks that each expected tensor exists with the expected shape; errors name the
 * file and tensor.
 */
#ifndef BN_HF_H
#define BN_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "formats/safetensors.h"

typedef enum bn_arch { BN_ARCH_LLAMA, BN_ARCH_MISTRAL, BN_ARCH_QWEN2, BN_ARCH_QWEN3 } bn_arch;

/* Rotary embedding variants computed exactly as transformers does (others are refused). */
typedef enum bn_rope_type { BN_ROPE_DEFAULT = 0, BN_ROPE_LINEAR, BN_ROPE_LLAMA3, BN_ROPE_YARN } bn_rope_type;

typedef struct bn_model_config {
    bn_arch arch;
    char model_type[32];
    int dim;          /* hidden_size */
    int hidden_dim;   /* intermediate_size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;     /* head_dim, default dim / n_heads (qwen3: 128) */
    int vocab_size;
    int max_seq_len;  /* max_position_embeddings */
    float rms_norm_eps;
    float rope_theta;
    bn_rope_type rope_type;   /* rope_scaling / rope_parameters "rope_type" */
    float rope_factor;        /* linear, llama3, yarn: the scaling factor (1 for default) */
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_orig_ctx;        /* llama3, yarn: original_max_position_embeddings */
    float rope_beta_fast, rope_beta_slow; /* yarn: the ramp's rotation counts (32, 1) */
    float rope_attn_factor;   /* yarn: cos and sin are multiplied by it (1 otherwise) */
    bool rope_truncate;       /* yarn: the ramp's ends rounded to whole dimensions (true) */
    int sliding_window;       /* mistral / qwen2 window; 0 = none (max_seq_len never exceeds it) */
    bool tied_embeddings;
    bool attention_bias; /* q/k/v biases (qwen2 default true) */
    bool qk_norm;        /* qwen3: RMSNorm (weight [head_dim], rms_norm_eps) on each q and k head */
    int bos_id, eos_id;  /* -1 if absent */
} bn_model_config;

typedef enum bn_role {
    BN_ROLE_EMBED = 0,  /* model.embed_tokens.weight [V, D] */
    BN_ROLE_ATTN_NORM,  /* model.layers.N.input_layernorm.weight [D] */
    BN_ROLE_WQ,         /* ...self_attn.q_proj.weight [H*hd, D] */
    BN_ROLE_WK,         /* [KV*hd, D] */
    BN_ROLE_WV,         /* [KV*hd, D] */
    BN_ROLE_WO,         /* ...self_attn.o_proj.weight [D, H*hd] */
    BN_ROLE_BQ, BN_ROLE_BK, BN_ROLE_BV, /* biases (qwen2) */
    BN_ROLE_FFN_NORM,   /* post_attention_layernorm.weight [D] */
    BN_ROLE_W_GATE,     /* mlp.gate_proj.weight [F, D] */
    BN_ROLE_W_UP,       /* mlp.up_proj.weight [F, D] */
    BN_ROLE_W_DOWN,     /* mlp.down_proj.weight [D, F] */
    BN_ROLE_FINAL_NORM, /* model.norm.weight [D] */
    BN_ROLE_HEAD,       /* lm_head.weight [V, D]; absent when tied */
    BN_ROLE_Q_NORM,     /* ...self_attn.q_norm.weight [hd] (qwen3) */
    BN_ROLE_K_NORM,     /* ...self_attn.k_norm.weight [hd] (qwen3) */
    BN_ROLE_OTHER,      /* anything else (e.g. rotary inv_freq buffers): copied as is */
    BN_ROLE_COUNT
} bn_role;

/* True for the 2-D projection roles that are ternarized by default. */
bool bn_role_is_linear(bn_role r);
const char *bn_role_name(bn_role r); /* "wq", "attn_norm", ... */
/* HF tensor name -> role (+ layer, -1 for global). */
bn_role bn_hf_role_of(const char *name, int *layer);
/* role + layer -> HF name into buf. */
const char *bn_hf_name(bn_role r, int layer, char *buf, size_t len);

int bn_hf_config_parse(const char *json, size_t len, bn_model_config *cfg, bn_err *err);
int bn_hf_config_load(const char *path, bn_model_config *cfg, bn_err *err);
/* The rope type's name as config.json writes it ("default", "linear", "llama3", "yarn"). */
const char *bn_hf_rope_type_name(bn_rope_type t);

/* As bn_hf_config_parse, with `file` naming the source in error messages. */
int bn_hf_config_parse_named(const char *json, size_t len, const char *file, bn_model_config *cfg, bn_err *err);
/* The shape config implies for role r (ndim returned; 0 for BN_ROLE_OTHER). */
int bn_hf_expected_shape(const bn_model_config *cfg, bn_role r, int64_t shape[2]);

typedef struct bn_hf_model {
    char *dir;
    bn_model_config cfg;
    bn_st_set *weights;
    uint64_t n_params;     /* sum of numel over all tensors */
    uint64_t weight_bytes; /* tensor data bytes on disk */
} bn_hf_model;

int bn_hf_open(const char *dir, bn_hf_model **out, bn_err *err);
void bn_hf_close(bn_hf_model *m);
/* Tensor for role/layer or NULL (tied head, no biases, no q/k norms). */
const bn_st_tensor *bn_hf_tensor(const bn_hf_model *m, bn_role r, int layer);

#endif
