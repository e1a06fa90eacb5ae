/* export_gguf.c - the pipeline's GGUF step (bn_stage_export_gguf, stages.h).
 *
 * Writes model-tq2_0.gguf / model-tq1_0.gguf into the output folder as config.export
 * selects (by default TQ2_0, and only when at least one ternary tensor has rows that fit
 * the 256-weight block), one job event per fallback tensor, and gguf_export.json (the
 * reports) for compression_metadata.json. Kept apart from gguf_model.c so that tools
 * and tests can export without the pipeline.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "stages/gguf_model.h"
#include "stages/stages.h"

/* ---- the pipeline's export hook -------------------------------------------------- */

static bool any_ternary_fits(const bn_job_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_qt; i++)
        if (ctx->qt[i].cols % BN_GGUF_QK_K == 0) return true;
    return false;
}

int bn_stage_export_gguf(bn_job_ctx *ctx, const char *out_dir, bn_err *err)
{
    const bn_options *o = ctx->opt;
    bn_gguf_type types[2];
    int n = 0;
    if (o->export.gguf_tq2_0) types[n++] = BN_GGUF_TQ2_0;
    if (o->export.gguf_tq1_0) types[n++] = BN_GGUF_TQ1_0;
    const bn_model_config *c = &ctx->model->cfg;
    if (n > 0 && c->rope_type == BN_ROPE_LLAMA3 && (c->arch == BN_ARCH_QWEN2 || c->arch == BN_ARCH_QWEN3)) {
        bn_job_event(ctx, "warn", "gguf: not written: llama.cpp's qwen2/qwen3 architectures have no rope_freqs for "
                                  "llama3 rope scaling, so they would run a different model");
        return BN_OK;
    }
    if (n > 0 && c->rope_type == BN_ROPE_YARN && !bn_gguf_yarn_default(c)) {
        bn_job_event(ctx, "warn", "gguf: not written: llama.cpp runs yarn with transformers' default beta_fast, "
                                  "beta_slow, attention_factor and truncate only; this model sets others, so it "
                                  "would run a different model");
        return BN_OK;
    }
    if (n > 0 && !o->export.gguf_explicit && !any_ternary_fits(ctx)) {
        bn_job_event(ctx, "info", "gguf: not written: no ternary tensor has a row length that is a multiple of 256 "
                                  "(set config.export.gguf to force it with fallback types)");
        return BN_OK;
    }
    cJSON *all = cJSON_CreateArray();
    int rc = BN_OK;
    for (int i = 0; i < n && rc == BN_OK; i++) {
        char file[64], path[4096];
        snprintf(file, sizeof file, "model-%s.gguf", bn_gguf_type_name(types[i]));
        snprintf(path, sizeof path, "%s/%s", out_dir, file);
        bn_gguf_report rep;
        rc = bn_gguf_export(ctx->model, ctx->qt, ctx->n_qt, ctx->preserved, ctx->n_preserved, path, types[i],
                            o->export.embedding_dtype[0] ? o->export.embedding_dtype : "f16", &rep, err);
        if (rc) break;
        for (size_t f = 0; f < rep.n_fallback; f++)
            bn_job_event(ctx, "warn", "gguf %s: tensor %s stored as %s: %s", file, rep.fallback[f].tensor,
                         bn_gguf_type_name(rep.fallback[f].type), rep.fallback[f].reason);
        bn_job_event(ctx, "info", "gguf: wrote %s (%zu tensors, %zu %s, %zu fallbacks, %llu bytes)", file,
                     rep.n_tensors, rep.n_ternary, bn_gguf_type_name(types[i]), rep.n_fallback,
                     (unsigned long long)rep.file_bytes);
        cJSON_AddItemToArray(all, bn_gguf_report_json(&rep, file));
        bn_gguf_report_free(&rep);
    }
    if (rc == BN_OK) {
        /* the report export.c folds into compression_metadata.json ("gguf") */
        char path[4096];
        snprintf(path, sizeof path, "%s/" BN_GGUF_REPORT_FILE, out_dir);
        char *text = cJSON_Print(all);
        FILE *fp = text ? fopen(path, "w") : NULL;
        if (!fp || fputs(text, fp) < 0 || fclose(fp) != 0)
            rc = bn_err_set(err, BN_EIO, "%s: cannot write the gguf report", path);
        free(text);
    }
    cJSON_Delete(all);
    return rc;
}
