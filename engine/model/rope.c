/* rope.c - see rope.h. */
#include "model/rope.h"

#include <math.h>

double bn_rope_attention_factor(const bn_model_config *c)
{
    return c->rope_type == BN_ROPE_YARN ? c->rope_attn_factor : 1.0;
}

double bn_rope_inv_freq(const bn_model_config *c, int i)
{
    double inv = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
    if (c->rope_type == BN_ROPE_LINEAR) return inv / c->rope_factor;
    if (c->rope_type == BN_ROPE_YARN) {
        /* the pair index where a wavelength makes `rot` turns over the original context */
        double hd = c->head_dim, base = c->rope_theta, orig = c->rope_orig_ctx;
        double lo = hd * log(orig / (c->rope_beta_fast * 2 * M_PI)) / (2 * log(base));
        double hi = hd * log(orig / (c->rope_beta_slow * 2 * M_PI)) / (2 * log(base));
        if (c->rope_truncate) lo = floor(lo), hi = ceil(hi);
        lo = fmax(lo, 0), hi = fmin(hi, hd - 1);
        if (lo == hi) hi += 0.001;
        /* ramp 0 below lo (frequency kept), 1 above hi (divided by factor); float as torch */
        double ramp = fmin(fmax((float)((i - lo) / (hi - lo)), 0.0), 1.0);
        return inv / c->rope_factor * ramp + inv * (1.0 - ramp);
    }
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
