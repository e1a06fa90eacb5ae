/* tk_fixture.c - test helper: ternarize a model folder the simple way and write both
 * forms an engine can load, from the SAME codes and scales:
 *
 *   tk_fixture MODEL_DIR OUT_DIR
 *     OUT_DIR/            HF folder: config + tokenizer files copied, model.safetensors
 *                         with every projection replaced by code * scale (F32), the rest
 *                         unchanged (what `bitnetctl generate --ternary` reads exactly);
 *     OUT_DIR/model-tq2_0.gguf, OUT_DIR/model-tq1_0.gguf   (bn_gguf_export).
 *
 * Ternarization (per row): s = mean|w|, t = sign(w) where |w| >= s/2, else 0. This is
 * only a fixture for engine-agreement tests; the product's quantizer is engine/quant.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_export.h"
#include "tensor.h"

static int copy_file(const char *from_dir, const char *to_dir, const char *name)
{
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    FILE *in = fopen(a, "rb");
    if (!in) return 0; /* optional file */
    FILE *out = fopen(b, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tk_fixture MODEL_DIR OUT_DIR\n");
        return 2;
    }
    bn_err err = {0};
    bn_hf_model *hf;
    if (bn_hf_open(argv[1], &hf, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const char *files[] = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < 4; i++)
        if (copy_file(argv[1], argv[2], files[i])) {
            fprintf(stderr, "cannot copy %s\n", files[i]);
            return 1;
        }
    size_t nt = bn_st_set_count(hf->weights);
    bn_qtensor *qt = calloc(nt, sizeof *qt);
    size_t nq = 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", argv[2]);
    bn_st_writer *w;
    if (bn_st_writer_new(path, &w, &err)) goto fail;
    for (size_t i = 0; i < nt; i++) {
        const bn_st_tensor *t = bn_st_set_at(hf->weights, i);
        if (bn_st_writer_declare(w, t->name, BN_DTYPE_F32, t->ndim, t->shape, &err)) goto fail;
    }
    for (size_t i = 0; i < nt; i++) {
        const bn_st_tensor *t = bn_st_set_at(hf->weights, i);
        float *x = malloc(sizeof(float) * t->numel);
        bn_to_f32(t->data, t->dtype, x, t->numel);
        int layer;
        bn_role role = bn_hf_role_of(t->name, &layer);
        if (bn_role_is_linear(role)) {
            bn_qtensor *q = &qt[nq++];
            q->name = strdup(t->name), q->role = role, q->layer = layer;
            q->rows = t->shape[0], q->cols = t->shape[1], q->n_scales = q->rows;
            q->codes = malloc((size_t)t->numel);
            q->scales = malloc(sizeof(float) * (size_t)q->rows);
            for (int64_t r = 0; r < q->rows; r++) {
                float *xr = x + r * q->cols;
                double s = 0;
                for (int64_t k = 0; k < q->cols; k++) s += fabsf(xr[k]);
                float sc = (float)(s / (double)q->cols);
                /* the GGUF keeps d in fp16: use the fp16 value on both sides */
                sc = bn_f16_to_f32(bn_f32_to_f16(sc));
                q->scales[r] = sc;
                for (int64_t k = 0; k < q->cols; k++) {
                    int8_t c = fabsf(xr[k]) >= 0.5f * sc ? (xr[k] > 0 ? 1 : -1) : 0;
                    q->codes[r * q->cols + k] = c;
                    xr[k] = (float)c * sc;
                }
            }
        }
        int rc = bn_st_writer_write(w, x, sizeof(float) * t->numel, &err);
        free(x);
        if (rc) goto fail;
    }
    if (bn_st_writer_finish(w, &err)) goto fail;
    const bn_gguf_type types[2] = {BN_GGUF_TQ2_0, BN_GGUF_TQ1_0};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/model-%s.gguf", argv[2], bn_gguf_type_name(types[i]));
        bn_gguf_report rep;
        if (bn_gguf_export(hf, qt, nq, NULL, 0, path, types[i], "f16", &rep, &err)) goto fail;
        printf("%s: %zu tensors, %zu ternary, %zu fallbacks\n", path, rep.n_tensors, rep.n_ternary, rep.n_fallback);
        bn_gguf_report_free(&rep);
    }
    for (size_t i = 0; i < nq; i++) free(qt[i].name), free(qt[i].codes), free(qt[i].scales);
    free(qt);
    bn_hf_close(hf);
    return 0;
fail:
    fprintf(stderr, "tk_fixture: %s\n", err.msg);
    return 1;
}
