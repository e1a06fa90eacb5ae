/* llama_load.c - FP32 parameters from an HF folder, and ternary projections.
 *
 * Kept apart from llama.c so that the numerics do not depend on the file readers.
 * bn_llama_load: each tensor is looked up by role, its element count checked against
 * the config, and converted to F32 (from F32, F16 or BF16) straight from the mmap.
 * bn_llama_ternarize: each linear projection becomes scale x code, read from an output
 * folder's quantized/model.safetensors (export.c's layout: 2-bit packed codes under the
 * weight's name, "<module>.weight_scale" beside it) or quantized on the spot.
 */
#include "model/llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant/pack.h"
#include "quant/quant.h"
#include "formats/safetensors.h"
#include "base/tensor.h"

int bn_llama_alloc_(const bn_model_config *cfg, bn_llama **out, bn_err *err); /* llama.c */

int bn_llama_load(const bn_hf_model *hf, bn_llama **out, bn_err *err)
{
    bn_llama *m;
    int rc = bn_llama_alloc_(&hf->cfg, &m, err);
    if (rc) return rc;
    static const bn_role roles[] = { BN_ROLE_EMBED, BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK,
                                     BN_ROLE_WV, BN_ROLE_BQ, BN_ROLE_BK, BN_ROLE_BV,
                                     BN_ROLE_Q_NORM, BN_ROLE_K_NORM, BN_ROLE_WO, BN_ROLE_FFN_NORM, BN_ROLE_W_GATE,
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


/* ---- ternary weights ------------------------------------------------------------- */

static void scale_name_of(const char *name, char *buf, size_t len)
{
    size_t n = strlen(name);
    if (n > 7 && !strcmp(name + n - 7, ".weight"))
        snprintf(buf, len, "%.*s.weight_scale", (int)(n - 7), name);
    else
        snprintf(buf, len, "%s_scale", name);
}

/* One projection from the packed file: codes [rows, cols] and scales [n]. */
static int read_packed(const bn_st_file *f, const char *path, const char *name, int rows,
                       int cols, int8_t *codes, float *scales, int *n_scales, bn_err *err)
{
    const bn_st_tensor *t = bn_st_find(f, name);
    if (!t)
        return bn_err_set(err, BN_EFORMAT, "%s: missing packed tensor %s", path, name);
    if (t->dtype != BN_DTYPE_U8 || t->ndim != 2 || t->shape[0] != bn_pack2_rows(rows) ||
        t->shape[1] != cols)
        return bn_err_set(err, BN_EFORMAT, "%s: %s is not U8 [%lld, %d] 2-bit codes", path,
                          name, (long long)bn_pack2_rows(rows), cols);
    if (bn_unpack2_hf(t->data, rows, cols, codes) != 0)
        return bn_err_set(err, BN_EFORMAT, "%s: %s holds the unused 2-bit code 3", path, name);
    char sname[512];
    scale_name_of(name, sname, sizeof sname);
    const bn_st_tensor *s = bn_st_find(f, sname);
    if (!s || s->ndim != 1 || (s->shape[0] != rows && s->shape[0] != 1))
        return bn_err_set(err, BN_EFORMAT, "%s: missing or misshapen scale tensor %s", path,
                          sname);
    *n_scales = (int)s->shape[0];
    if (bn_to_f32(s->data, s->dtype, scales, s->numel) != 0)
        return bn_err_set(err, BN_EFORMAT, "%s: %s has dtype %s, want F16/BF16/F32", path,
                          sname, bn_dtype_name(s->dtype));
    return 0;
}

int bn_llama_ternarize(bn_llama *m, const char *dir, bool *from_packed, bn_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/quantized/model.safetensors", dir);
    bn_st_file *f = NULL;
    if (access(path, R_OK) == 0) {
        int rc = bn_st_open(path, &f, err);
        if (rc) return rc;
    }
    if (from_packed) *from_packed = f != NULL;
    bn_quant_params qp;
    bn_quant_params_default(&qp);
    qp.threads = m->threads;
    int rc = 0, maxr = m->cfg.dim > m->cfg.hidden_dim ? m->cfg.dim : m->cfg.hidden_dim;
    if (m->cfg.n_heads * m->cfg.head_dim > maxr) maxr = m->cfg.n_heads * m->cfg.head_dim;
    int8_t *codes = malloc((size_t)maxr * (size_t)maxr);
    float *scales = malloc((size_t)maxr * sizeof(float));
    if (!codes || !scales) rc = bn_err_set(err, BN_ENOMEM, "ternarize: out of memory");
    for (int r = 0; !rc && r < BN_ROLE_COUNT; r++) {
        if (!bn_role_is_linear((bn_role)r)) continue;
        for (int l = 0; !rc && l < m->cfg.n_layers; l++) {
            int rows, cols, ns = 0;
            bn_llama_float *w = bn_llama_tensor(m, &m->params, (bn_role)r, l, &rows, &cols);
            char name[256];
            bn_hf_name((bn_role)r, l, name, sizeof name);
            if (f)
                rc = read_packed(f, path, name, rows, cols, codes, scales, &ns, err);
            else {
                ns = rows;
                rc = bn_quant_tensor(name, w, BN_DTYPE_F32, rows, cols, &qp, codes, scales,
                                     NULL, err);
            }
            if (!rc)
                rc = bn_llama_set_linear_codes(m, (bn_role)r, l, codes, scales, ns, err);
        }
    }
    free(codes);
    free(scales);
    bn_st_close(f);
    return rc;
}
