/* llama_load.c - bn_llama_load: FP32 parameters from an opened HF folder.
 *
 * Kept apart from llama.c so that the numerics do not depend on the file readers: each
 * tensor is looked up by role, its element count checked against the config, and it is
 * converted to F32 (from F32, F16 or BF16) straight from the mmap into the flat buffer.
 */
#include "llama.h"

#include "tensor.h"

int bn_llama_alloc_(const bn_model_config *cfg, bn_llama **out, bn_err *err); /* llama.c */

int bn_llama_load(const bn_hf_model *hf, bn_llama **out, bn_err *err)
{
    bn_llama *m;
    int rc = bn_llama_alloc_(&hf->cfg, &m, err);
    if (rc) return rc;
    static const bn_role roles[] = { BN_ROLE_EMBED, BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK,
                                     BN_ROLE_WV, BN_ROLE_BQ, BN_ROLE_BK, BN_ROLE_BV,
                                     BN_ROLE_WO, BN_ROLE_FFN_NORM, BN_ROLE_W_GATE,
                                     BN_ROLE_W_UP, BN_ROLE_W_DOWN, BN_ROLE_FINAL_NORM,
                                     BN_ROLE_HEAD };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        bn_role role = roles[i];
        bool global = role == BN_ROLE_EMBED || role == BN_ROLE_FINAL_NORM ||
                      role == BN_ROLE_HEAD;
        if (role == BN_ROLE_HEAD && m->cfg.tied_embeddings) continue;
        int nl = global ? 1 : m->cfg.n_layers;
        for (int l = 0; l < nl; l++) {
            int layer = global ? -1 : l, r, c;
            bn_llama_float *dst = bn_llama_tensor(m, &m->params, role, global ? 0 : l, &r, &c);
            if (!dst) continue; /* no biases in this config */
            const bn_st_tensor *t = bn_hf_tensor(hf, role, layer);
            char name[256];
            bn_hf_name(role, layer, name, sizeof name);
            if (!t) {
                bn_llama_free(m);
                return bn_err_set(err, BN_EFORMAT, "%s: missing tensor %s", hf->dir, name);
            }
            if (t->numel != (uint64_t)r * (uint64_t)c) {
                bn_llama_free(m);
                return bn_err_set(err, BN_EFORMAT,
                                  "%s: tensor %s has %llu elements, want %d x %d", hf->dir,
                                  name, (unsigned long long)t->numel, r, c);
            }
            if (bn_to_f32(t->data, t->dtype, dst, t->numel) != 0) {
                bn_llama_free(m);
                return bn_err_set(err, BN_EUNSUPPORTED,
                                  "%s: tensor %s has dtype %s, want F32/F16/BF16", hf->dir,
                                  name, bn_dtype_name(t->dtype));
            }
        }
    }
    *out = m;
    return 0;
}

