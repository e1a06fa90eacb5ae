/* rope.c - see rope.h. */
#include "model/rope.h"

#include <math.h>

double bn_rope_inv_freq(const bn_model_config *c, int i)
{
    double inv = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
    if (c->rope_type == BN_ROPE_LINEAR) return inv / c->rope_factor;
    if (c->rope_type != BN_ROPE_LLAMA3) return inv;
    /* llama3: long wavelengths scaled by 1/factor, short ones kept, a smooth blend between */
    double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor, orig = c->rope_orig_ctx;
    double wavelen = 2.0 * M_PI / inv;
    double low_wavelen = orig / lo, high_wavelen = orig / hi;
    if (wavelen > low_wavelen) return inv / c->rope_factor;
    if (wavelen < high_wavelen) return inv;
    double smooth = (orig / wavelen - lo) / (hi - lo);
    return (1.0 - smooth) * inv / c->rope_factor + smooth * inv;
}
