/* initmodel.h - random-weight Llama Hugging Face folders for demos, tests, benchmarks.
 *
 * bn_initmodel_write writes config.json (labelled as random weights), model.safetensors
 * (N(0, 0.02) projections and embeddings, norms 1.0, deterministic for a seed),
 * a byte-level BPE tokenizer.json (3 special tokens, 256 byte tokens, a few merges),
 * tokenizer_config.json, special_tokens_map.json and README.md. The folder is built as
 * <out>.partial and renamed, so it appears complete or not at all.
 */
#ifndef BN_INITMODEL_H
#define BN_INITMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "base/tensor.h"
#include "formats/hf.h"

typedef struct bn_init_spec {
    int dim, hidden, layers, heads, kv_heads, vocab, ctx;
    bool tied;
    bn_dtype dtype;   /* F32, F16 or BF16 */
    uint64_t seed;
    bn_arch arch;     /* llama (0, the default), mistral, qwen2 (random q/k/v biases) or
                       * qwen3 (q/k norm weights 1 + N(0, 0.1)) */
} bn_init_spec;

/* Named shapes: "tiny" (~1M), "25m" (35.7M), "tinyllama-1.1b". Returns -1 if unknown. */
int bn_initmodel_shape(const char *name, bn_init_spec *spec);
/* model_type name ("llama", "mistral", "qwen2", "qwen3") -> arch; -1 if unknown. */
int bn_initmodel_arch(const char *name, bn_arch *arch);
/* Number of parameters the spec produces. */
uint64_t bn_initmodel_params(const bn_init_spec *spec);
/* Tokens the generated tokenizer.json holds (the vocab must be at least this). */
int bn_initmodel_tokenizer_size(void);
int bn_initmodel_write(const char *out_dir, const bn_init_spec *spec, bn_err *err);

#endif
