/* gguf_model.h - a compressed model as a GGUF file that stock llama.cpp loads.
 *
 * Architecture "llama" for model_type llama and mistral (Q and K rows permuted from
 * HF's half-split rotary layout to llama.cpp's interleaved one), "qwen2" for qwen2 (no
 * permutation: llama.cpp runs qwen2 with NEOX rotary, HF's layout).
 *
 * Tensor types:
 *   ternary linears       the requested type (TQ2_0 or TQ1_0), every block of a row
 *                         carrying the row's scale as d (fp16);
 *   ... whose row length  FALLBACK, recorded in the report (never silent):
 *       is not % 256      Q8_0 of the dequantized values (code * scale) if the row
 *                         length is a multiple of 32, else F16;
 *   embeddings, lm_head   embedding_dtype "f16" or "q8_0" (F16 if the row length is not
 *                         a multiple of 32: also a recorded fallback);
 *   other 2-D preserved   F16;  norms and biases  F32.
 * A tied lm_head is not written (llama.cpp then uses token_embd). Preserved tensors
 * changed by fine-tuning (bn_ptensor) replace the HF originals.
 *
 * Tokenizer metadata comes from the model folder's tokenizer.json (engine/tokenizer/tokenizer.h):
 * "llama" (tokens, scores, token types) or "gpt2" (tokens, token types, merges, pre);
 * bos/eos/unk/pad ids and add_bos/add_eos. Token ids the tokenizer does not cover up to
 * the model's vocab_size are written as "[PAD<id>]" with type UNUSED.
 */
#ifndef BN_GGUF_EXPORT_H
#define BN_GGUF_EXPORT_H

#include "formats/gguf.h"
#include "quant/qtensor.h"

typedef struct bn_gguf_fallback {
    char tensor[96];     /* GGUF tensor name */
    bn_gguf_type type;   /* type written instead */
    char reason[160];
} bn_gguf_fallback;

typedef struct bn_gguf_report {
    bn_gguf_type type;   /* the ternary type requested */
    size_t n_tensors, n_ternary;
    uint64_t file_bytes;
    size_t n_fallback;
    bn_gguf_fallback *fallback; /* [n_fallback], owned */
} bn_gguf_report;

void bn_gguf_report_free(bn_gguf_report *r);

/* bn_stage_export_gguf (stages.h) writes model-tq2_0.gguf / model-tq1_0.gguf as the
 * options select, a job event per fallback, and this JSON array of reports (one per
 * file, bn_gguf_report_json) into the output folder, for compression_metadata.json. */
#define BN_GGUF_REPORT_FILE "gguf_export.json"

/* Writes the GGUF file `path` (atomically). qt: the ternarized tensors; pt: preserved
 * tensors replaced by fine-tuning (may be NULL/0). type: BN_GGUF_TQ2_0 or BN_GGUF_TQ1_0.
 * embedding_dtype: "f16" or "q8_0" (NULL = "f16"). rep (may be NULL) receives the
 * report; free it with bn_gguf_report_free. */
int bn_gguf_export(const bn_hf_model *m, const bn_qtensor *qt, size_t n_qt, const bn_ptensor *pt,
                   size_t n_pt, const char *path, bn_gguf_type type, const char *embedding_dtype,
                   bn_gguf_report *rep, bn_err *err);

/* The report as JSON: {"file", "type", "tensors", "ternary_tensors", "bytes",
 * "fallbacks": [{"tensor", "type", "reason"}]}. Caller frees with cJSON_Delete. */
struct cJSON *bn_gguf_report_json(const bn_gguf_report *r, const char *file);

/* HF role/layer -> GGUF tensor name ("blk.3.attn_q.weight"); NULL for roles GGUF has
 * no name for. */
const char *bn_gguf_tensor_name(bn_role role, int layer, char *buf, size_t len);
/* True when a yarn config uses transformers' defaults for everything but factor and
 * original context (beta_fast 32, beta_slow 1, attention factor 0.1 ln(factor) + 1,
 * truncate): the yarn llama.cpp computes from a GGUF. Other yarn models get no GGUF. */
bool bn_gguf_yarn_default(const bn_model_config *c);
/* Row r of the llama.cpp layout of Q/K takes HF row bn_gguf_qk_source_row(r, ...). */
int64_t bn_gguf_qk_source_row(int64_t r, int head_dim);

#endif
