/* test_compress.c - the pipeline and `bitnetctl compress` end to end on stories260K:
 * the output folder is re-read and checked tensor by tensor against the input; the
 * metadata's sizes, hashes and ratios match the files; a truncated model fails naming
 * the file and leaves no folder; cancel and resume through the API; inspect and
 * init-model through the built binary (BN_BUILD_ROOT). */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bn_engine.h"
#include "bn_test.h"
#include "base/fsutil.h"
#include "formats/initmodel.h"
#include "quant/pack.h"
#include "quant/quant.h"
#include "base/checksum.h"

static char *tmp;

static int run(const char *args, const char *log)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s >%s/%s.out 2>%s/%s.err", bn_test_build_path("cli/bitnetctl"), args, tmp, log, tmp,
             log);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *dir, const char *name)
{
    char p[8192], *t;
    size_t n;
    bn_err err;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return bn_fs_read_file(p, 64 << 20, &t, &n, &err) ? NULL : t;
}

static void setup(void)
{
    tmp = bn_test_tmpdir("compress");
}
static void teardown(void)
{
    bn_test_rmtree(tmp);
    free(tmp);
}

/* The whole acceptance check of the output folder. */
static void check_output(const char *model_dir, const char *out)
{
    bn_err err = { 0 };
    char p[4096];
    bn_st_set *in;
    ck_assert_int_eq(bn_st_set_open(model_dir, &in, &err), 0);
    bn_st_file *fp16, *qf;
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    ck_assert_msg(bn_st_open(p, &fp16, &err) == 0, "%s", err.msg);
    snprintf(p, sizeof p, "%s/quantized/model.safetensors", out);
    ck_assert_msg(bn_st_open(p, &qf, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(bn_st_count(fp16), bn_st_set_count(in));
    int n_quant = 0, n_pres = 0;
    for (size_t i = 0; i < bn_st_set_count(in); i++) {
        const bn_st_tensor *t = bn_st_set_at(in, i), *o = bn_st_find(fp16, t->name), *q = bn_st_find(qf, t->name);
        ck_assert_ptr_nonnull(o);
        ck_assert_ptr_nonnull(q);
        ck_assert_int_eq(o->dtype, BN_DTYPE_F16);
        ck_assert_int_eq(o->ndim, t->ndim);
        for (int d = 0; d < t->ndim; d++) ck_assert_int_eq(o->shape[d], t->shape[d]);
        uint16_t *got = malloc(o->nbytes);
        memcpy(got, o->data, o->nbytes);
        int bad = 0;
        if (q->dtype == BN_DTYPE_U8) { /* ternarized: packed codes + FP16 scale */
            n_quant++;
            int64_t rows = t->shape[0], cols = t->shape[1];
            char sn[512];
            snprintf(sn, sizeof sn, "%.*s.weight_scale", (int)(strlen(t->name) - 7), t->name);
            const bn_st_tensor *st = bn_st_find(qf, sn);
            ck_assert_ptr_nonnull(st);
            ck_assert_int_eq(st->dtype, BN_DTYPE_F16);
            ck_assert_int_eq(st->numel, rows);
            ck_assert_int_eq(q->shape[0], bn_pack2_rows(rows));
            int8_t *codes = malloc((size_t)(rows * cols)), *ref = malloc((size_t)(rows * cols));
            ck_assert_int_eq(bn_unpack2_hf(q->data, rows, cols, codes), 0);
            /* the codes are the quantizer's on the input (no calibration in this build) */
            float *scales = malloc((size_t)rows * 4);
            bn_quant_params prm;
            bn_quant_params_default(&prm);
            ck_assert_int_eq(bn_quant_tensor(t->name, t->data, t->dtype, rows, cols, &prm, ref, scales, NULL, &err), 0);
            ck_assert_mem_eq(codes, ref, (size_t)(rows * cols));
            uint16_t hs[4096];
            memcpy(hs, st->data, st->nbytes);
            for (int64_t r = 0; r < rows; r++) {
                bad += hs[r] != bn_f32_to_f16(scales[r]);
                for (int64_t c = 0; c < cols; c++) {
                    int8_t k = codes[r * cols + c];
                    uint16_t want = bn_f32_to_f16(scales[r] * (float)k); /* FP16(scale x code) */
                    bad += got[r * cols + c] != want;
                    bad += want != (k > 0 ? hs[r] : k < 0 ? (uint16_t)(hs[r] ^ 0x8000) : 0);
                }
            }
            free(codes); free(ref); free(scales);
        } else { /* preserved: FP16 of the input in both outputs */
            n_pres++;
            float *f = malloc(t->numel * 4);
            bn_to_f32(t->data, t->dtype, f, t->numel);
            uint16_t *qh = malloc(q->nbytes);
            memcpy(qh, q->data, q->nbytes);
            for (uint64_t k = 0; k < t->numel; k++) {
                bad += got[k] != bn_f32_to_f16(f[k]);
                bad += qh[k] != got[k];
            }
            free(f);
            free(qh);
        }
        free(got);
        ck_assert_msg(bad == 0, "tensor %s: %d mismatches", t->name, bad);
    }
    ck_assert_int_eq(n_quant, 35); /* 5 layers x 7 projections */
    ck_assert_int_eq(n_pres, 12);  /* embedding, 11 norms */
    /* configs */
    char *cfg = slurp(out, "config.json");
    cJSON *c = cJSON_Parse(cfg);
    ck_assert_str_eq(cJSON_GetObjectItem(c, "torch_dtype")->valuestring, "float16");
    ck_assert_ptr_null(cJSON_GetObjectItem(c, "quantization_config"));
    cJSON_Delete(c);
    free(cfg);
    cfg = slurp(out, "quantized/config.json");
    c = cJSON_Parse(cfg);
    cJSON *qc = cJSON_GetObjectItem(c, "quantization_config");
    ck_assert_str_eq(cJSON_GetObjectItem(qc, "quant_method")->valuestring, "bitnet");
    ck_assert_str_eq(cJSON_GetObjectItem(qc, "quantization_mode")->valuestring, "offline");
    ck_assert_double_eq(cJSON_GetObjectItem(qc, "bits")->valuedouble, 1.58);
    cJSON_Delete(c);
    free(cfg);
    snprintf(p, sizeof p, "%s/tokenizer.json", out);
    ck_assert(bn_fs_exists(p));
    /* metadata: sizes + hashes of every file, ratios from bytes on disk, the metrics */
    char *md = slurp(out, "compression_metadata.json");
    cJSON *m = cJSON_Parse(md);
    free(md);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(cJSON_GetObjectItem(m, "compression_method")->valuestring, "BitNet-1.58");
    ck_assert_double_eq(cJSON_GetObjectItem(m, "quantization_bits")->valuedouble, 1.58);
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(m, "config"));
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(m, "tensors")), 35);
    cJSON *files = cJSON_GetObjectItem(m, "files");
    int nf = 0;
    int64_t qbytes = -1;
    for (cJSON *f = files->child; f; f = f->next, nf++) {
        const char *rel = cJSON_GetObjectItem(f, "path")->valuestring;
        char full[8192], hex[65];
        snprintf(full, sizeof full, "%s/%s", out, rel);
        ck_assert_int_eq((int64_t)cJSON_GetObjectItem(f, "bytes")->valuedouble, bn_fs_file_size(full));
        ck_assert_int_eq(bn_sha256_file(full, hex, &err), 0);
        ck_assert_str_eq(cJSON_GetObjectItem(f, "sha256")->valuestring, hex);
        if (!strcmp(rel, "quantized/model.safetensors")) qbytes = bn_fs_file_size(full);
    }
    ck_assert_int_ge(nf, 8);
    ck_assert_int_gt(qbytes, 0);
    double ratio = cJSON_GetObjectItem(m, "compression_ratio")->valuedouble;
    ck_assert_double_eq_tol(ratio, (double)bn_st_set_bytes(in) / (double)qbytes, 1e-9);
    ck_assert_double_eq_tol(cJSON_GetObjectItem(m, "compression_ratio_vs_fp16")->valuedouble, 260032.0 * 2 / qbytes, 1e-9);
    cJSON *mt = cJSON_GetObjectItem(m, "metrics");
    static const char *const must[] = { "compression/original_size_mb", "compression/compressed_size_mb",
                                        "compression/ratio", "compression/layers_compressed",
                                        "compression/sparsity_ratio", "compression/quantized_params",
                                        "compression/total_params", "compression/layers_quantized" };
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) ck_assert_ptr_nonnull(cJSON_GetObjectItem(mt, must[i]));
    ck_assert_double_eq_tol(cJSON_GetObjectItem(mt, "compression/ratio")->valuedouble, ratio, 1e-9);
    ck_assert_double_eq(cJSON_GetObjectItem(mt, "compression/layers_compressed")->valuedouble, 5);
    double sp = cJSON_GetObjectItem(mt, "compression/sparsity_ratio")->valuedouble;
    ck_assert(sp > 0.2 && sp < 0.5);
    cJSON *sum = cJSON_GetObjectItem(m, "summary");
    ck_assert_str_eq(cJSON_GetObjectItem(sum, "phase/quantization_method")->valuestring, "BitNet-1.58");
    ck_assert_double_eq(cJSON_GetObjectItem(sum, "phase/success")->valuedouble, 1);
    cJSON_Delete(m);
    bn_st_close(fp16);
    bn_st_close(qf);
    bn_st_set_close(in);
}

START_TEST(compress_stories)
{
    char out[1024], args[8192];
    snprintf(out, sizeof out, "%s/out", tmp);
    /* exact absmean codes are checked: no calibration-aware scales, no fine-tuning */
    snprintf(args, sizeof args, "compress %s %s --config '{\"calibration\":{\"enabled\":false},"
             "\"fine_tune\":{\"enabled\":false}}'", bn_test_data("stories260K-hf"), out);
    int rc = run(args, "compress");
    ck_assert_msg(rc == 0, "exit %d: %s", rc, slurp(tmp, "compress.err"));
    check_output(bn_test_data("stories260K-hf"), out);
    char w[1100];
    snprintf(w, sizeof w, "%s.work", out);
    ck_assert(!bn_fs_exists(w));
    /* an existing output folder is refused and left alone */
    ck_assert_int_eq(run(args, "again"), 1);
    char *e = slurp(tmp, "again.err");
    ck_assert_ptr_nonnull(strstr(e, "already exists"));
    free(e);
}
END_TEST

START_TEST(compress_truncated_model)
{
    char model[1024], out[1024], args[8192], src[2048], dst[2048];
    bn_err err;
    snprintf(model, sizeof model, "%s/trunc-model", tmp);
    bn_fs_mkdir_p(model, &err);
    const char *files[] = { "config.json", "tokenizer.json", "model.safetensors" };
    for (int i = 0; i < 3; i++) {
        snprintf(src, sizeof src, "%s/%s", bn_test_data("stories260K-hf"), files[i]);
        snprintf(dst, sizeof dst, "%s/%s", model, files[i]);
        ck_assert_int_eq(bn_fs_copy_file(src, dst, &err), 0);
    }
    ck_assert_int_eq(truncate(dst, bn_fs_file_size(dst) / 2), 0);
    snprintf(out, sizeof out, "%s/out-trunc", tmp);
    snprintf(args, sizeof args, "compress %s %s", model, out);
    ck_assert_int_ne(run(args, "trunc"), 0);
    char *e = slurp(tmp, "trunc.err");
    ck_assert_msg(strstr(e, dst) != NULL, "error does not name %s: %s", dst, e);
    free(e);
    ck_assert(!bn_fs_exists(out));
    char partial[1100];
    snprintf(partial, sizeof partial, "%s.partial", out);
    ck_assert(!bn_fs_exists(partial));
}
END_TEST

START_TEST(compress_flags_and_json)
{
    char out[1024], args[8192];
    snprintf(out, sizeof out, "%s/out-flags", tmp);
    snprintf(args, sizeof args,
             "compress %s %s --json --per-tensor --sparsity-threshold 0.7 --preserve layers.4. --threads 2 "
             "--config '{\"calibration\":{\"enabled\":false}}'", bn_test_data("stories260K-hf"), out);
    int rc = run(args, "flags");
    ck_assert_msg(rc == 0, "exit %d: %s", rc, slurp(tmp, "flags.err"));
    char *o = slurp(tmp, "flags.out");
    cJSON *j = cJSON_Parse(o);
    free(o);
    ck_assert_ptr_nonnull(j);
    cJSON *m = cJSON_GetObjectItem(j, "metrics");
    ck_assert_double_eq(cJSON_GetObjectItem(m, "compression/layers_quantized")->valuedouble, 28); /* layer 4 kept */
    cJSON_Delete(j);
    char *md = slurp(out, "compression_metadata.json");
    cJSON *meta = cJSON_Parse(md);
    free(md);
    cJSON *cfg = cJSON_GetObjectItem(meta, "config");
    ck_assert_str_eq(cJSON_GetObjectItem(cfg, "scale")->valuestring, "per_tensor");
    ck_assert_double_eq_tol(cJSON_GetObjectItem(cfg, "sparsity_threshold")->valuedouble, 0.7, 1e-9);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(cfg, "preserve")), 5);
    cJSON_Delete(meta);
    /* bad configs: exit 2 with the JSON path */
    snprintf(args, sizeof args, "compress %s %s/x --config '{\"bogus\":1}'", bn_test_data("stories260K-hf"), tmp);
    ck_assert_int_eq(run(args, "bad"), 2);
    char *e = slurp(tmp, "bad.err");
    ck_assert_ptr_nonnull(strstr(e, "config.bogus: unknown key"));
    free(e);
    snprintf(args, sizeof args, "compress %s %s/x --sparsity-threshold 9", bn_test_data("stories260K-hf"), tmp);
    ck_assert_int_eq(run(args, "bad2"), 2);
    ck_assert_int_eq(run("compress onlyone", "usage"), 2);
}
END_TEST

/* cancel through the API, then resume from the checkpoints without redoing quantize */
typedef struct { int cancel_stage; int seen[BN_STAGE_COUNT]; int events; } watch;
static bool w_update(void *p, bn_stage s, double f, const char *d)
{
    (void)f; (void)d;
    watch *w = p;
    w->seen[s]++;
    return (int)s == w->cancel_stage;
}
static void w_event(void *p, bn_stage s, const char *l, const char *m) { (void)s; (void)l; (void)m; ((watch *)p)->events++; }

START_TEST(cancel_and_resume)
{
    char out[1024], work[1024];
    snprintf(out, sizeof out, "%s/api-out", tmp);
    snprintf(work, sizeof work, "%s/api-work", tmp);
    bn_options opt;
    bn_options_default(&opt);
    opt.threads = 2;
    opt.calibration.enabled = false; /* check_output compares plain absmean codes */
    opt.fine_tune.enabled = false;
    bn_pipeline_paths paths = { bn_test_data("stories260K-hf"), out, work, NULL, NULL };
    watch w = { .cancel_stage = BN_STAGE_EXPORT };
    bn_progress pr = { &w, w_update, w_event, NULL, NULL, NULL };
    bn_err err = { 0 };
    ck_assert_int_eq(bn_pipeline_run(&paths, &opt, &pr, &err), BN_ECANCELLED);
    ck_assert(!bn_fs_exists(out));
    char partial[1100];
    snprintf(partial, sizeof partial, "%s.partial", out);
    ck_assert(!bn_fs_exists(partial));
    ck_assert_int_eq(bn_pipeline_resume_stage(work), BN_STAGE_EXPORT);
    watch w2 = { .cancel_stage = -1 };
    pr.ctx = &w2;
    ck_assert_msg(bn_pipeline_run(&paths, &opt, &pr, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(w2.seen[BN_STAGE_QUANTIZE], 0); /* restored, not rerun */
    ck_assert_int_gt(w2.seen[BN_STAGE_EXPORT], 0);
    ck_assert_int_eq(bn_pipeline_resume_stage(work), BN_STAGE_COUNT);
    check_output(bn_test_data("stories260K-hf"), out);
    /* cancel during quantize */
    snprintf(out, sizeof out, "%s/api-out2", tmp);
    snprintf(work, sizeof work, "%s/api-work2", tmp);
    watch w3 = { .cancel_stage = BN_STAGE_QUANTIZE };
    pr.ctx = &w3;
    ck_assert_int_eq(bn_pipeline_run(&paths, &opt, &pr, &err), BN_ECANCELLED);
    ck_assert_int_eq(bn_pipeline_resume_stage(work), BN_STAGE_QUANTIZE);
    ck_assert(!bn_fs_exists(out));
}
END_TEST

START_TEST(inspect_and_init_model)
{
    char dir[1024], args[8192];
    snprintf(dir, sizeof dir, "%s/tiny", tmp);
    snprintf(args, sizeof args, "init-model %s --shape tiny --layers 2 --dtype bf16 --seed 3", dir);
    ck_assert_int_eq(run(args, "init"), 0);
    bn_hf_model *m;
    bn_err err = { 0 };
    ck_assert_msg(bn_hf_open(dir, &m, &err) == 0, "%s", err.msg);
    bn_init_spec s;
    bn_initmodel_shape("tiny", &s);
    s.layers = 2;
    ck_assert_uint_eq(m->n_params, bn_initmodel_params(&s));
    ck_assert_int_eq(bn_hf_tensor(m, BN_ROLE_WQ, 0)->dtype, BN_DTYPE_BF16);
    bn_hf_close(m);
    char *tok = slurp(dir, "tokenizer.json");
    cJSON *t = cJSON_Parse(tok);
    free(tok);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(t, "model"), "vocab")),
                     bn_initmodel_tokenizer_size());
    cJSON_Delete(t);
    char *readme = slurp(dir, "README.md");
    ck_assert_ptr_nonnull(strstr(readme, "RANDOM WEIGHTS"));
    free(readme);
    /* same seed, same bytes */
    char dir2[1024];
    snprintf(dir2, sizeof dir2, "%s/tiny2", tmp);
    snprintf(args, sizeof args, "init-model %s --shape tiny --layers 2 --dtype bf16 --seed 3", dir2);
    ck_assert_int_eq(run(args, "init2"), 0);
    char h1[65], h2[65], p1[1100], p2[1100];
    snprintf(p1, sizeof p1, "%s/model.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model.safetensors", dir2);
    bn_sha256_file(p1, h1, &err);
    bn_sha256_file(p2, h2, &err);
    ck_assert_str_eq(h1, h2);
    /* compress it (BF16 input) */
    snprintf(args, sizeof args, "compress %s %s/tiny-out", dir, tmp);
    ck_assert_int_eq(run(args, "tinyc"), 0);
    /* inspect: good file, folder, malformed file */
    snprintf(args, sizeof args, "inspect %s", p1);
    ck_assert_int_eq(run(args, "inspect"), 0);
    char *o = slurp(tmp, "inspect.out");
    ck_assert_ptr_nonnull(strstr(o, "model.layers.1.mlp.down_proj.weight"));
    ck_assert_ptr_nonnull(strstr(o, "BF16"));
    free(o);
    snprintf(args, sizeof args, "inspect %s", bn_test_data("stories260K-hf"));
    ck_assert_int_eq(run(args, "inspect2"), 0);
    ck_assert_int_eq(truncate(p2, 100), 0);
    snprintf(args, sizeof args, "inspect %s", p2);
    ck_assert_int_eq(run(args, "inspect3"), 1);
    char *e = slurp(tmp, "inspect3.err");
    ck_assert_ptr_nonnull(strstr(e, p2));
    free(e);
    ck_assert_int_eq(run("init-model /tmp/x --shape huge", "badshape"), 2);
}
END_TEST

int main(void)
{
    bn_test_require_data("stories260K-hf/model.safetensors");
    Suite *s = suite_create("engine-compress");
    TCase *tc = tcase_create("compress");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, compress_stories);
    tcase_add_test(tc, compress_truncated_model);
    tcase_add_test(tc, compress_flags_and_json);
    tcase_add_test(tc, cancel_and_resume);
    tcase_add_test(tc, inspect_and_init_model);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
