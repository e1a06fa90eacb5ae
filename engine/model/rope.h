/* rope.h - the rotary position embedding's frequencies for every rope type the engine
 * computes (formats/hf.h, bn_rope_type), shared by the FP32 model, the ternary decoder
 * and the GGUF writer, so that all three compute the model config.json describes. */
#ifndef BN_ROPE_H
#define BN_ROPE_H

#include "formats/hf.h"

/* The inverse frequency of rotary pair i (0 <= i < head_dim / 2), in double precision,
 * as transformers' modeling_rope_utils defines it for c's rope type:
 *   default  theta^(-2i/hd)
 *   linear   default / factor
 *   llama3   default / factor for wavelengths longer than orig_ctx / low_freq_factor,
 *            default for those shorter than orig_ctx / high_freq_factor, a linear blend
 *            in 1/wavelength between the two
 *   yarn     default for pairs below the correction range of beta_fast turns over
 *            original_max_position_embeddings, default / factor above that of beta_slow,
 *            a linear ramp in the pair index between. */
double bn_rope_inv_freq(const bn_model_config *c, int i);
/* The factor cos and sin are multiplied by (yarn's attention_factor; 1 for the others). */
double bn_rope_attention_factor(const bn_model_config *c);

#endif
