/* test_nonfinite.c - NaN/Inf never turns into a silent number in a job:
 *   - a model with a NaN (or Inf) weight is refused by the load stage, naming the tensor
 *     and the element;
 *   - a model whose weights are finite but whose forward pass overflows (activations
 *     become Inf, then NaN) fails the job with "non-finite activations" in the error,
 *     before any metric is recorded from them;
 *   - bn_first_nonfinite finds the first NaN/Inf in F32, F16, BF16 and F64 data.
 * The worker turns the job's error into an "error" event (workers.c). */
#include <check.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_engine.h"
#include "bn_test.h"
#include "base/tensor.h"
#include "formats/initmodel.h"
#include "formats/safetensors.h"

static char *root;
static int n_runs;

/* A fresh tiny F32 model in root/<tag>. */
static void make_model(const char *tag, char *dir, size_t len)
{
    snprintf(dir, len, "%s/%s", root, tag);
    bn_init_spec spec = {.dim = 32, .hidden = 64, .layers = 2, .heads = 4, .kv_heads = 2,
                         .vocab = bn_initmodel_tokenizer_size(), .ctx = 64, .tied = false,
                         .dtype = BN_DTYPE_F32, .seed = 3};
    bn_err e = {0};
    ck_assert_msg(bn_initmodel_write(dir, &spec, &e) == 0, "%s", e.msg);
}

/* Overwrites elements [first, first+count) of F32 tensor `name` with v (count < 0: all). */
static void poke(const char *dir, const char *name, int64_t first, int64_t count, float v)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    bn_st_file *f;
    bn_err e = {0};
    ck_assert_msg(bn_st_open(path, &f, &e) == 0, "%s", e.msg);
    const bn_st_tensor *t = bn_st_find(f, name);
    ck_assert_msg(t != NULL, "no tensor %s", name);
    ck_assert_int_eq(t->dtype, BN_DTYPE_F32);
    if (count < 0) count = (int64_t)t->numel - first;
    int64_t off = t->file_offset + first * 4;
    bn_st_close(f);
    int fd = open(path, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    for (int64_t i = 0; i < count; i++)
        ck_assert_int_eq(pwrite(fd, &v, 4, off + 4 * i), 4);
    close(fd);
}

static void write_text(char *path, size_t len)
{
    snprintf(path, len, "%s/train.txt", root);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int p = 0; p < 60; p++)
        fprintf(f, "the cat sat on the mat number %d. a dog ran to the park.\n\n", p);
    fclose(f);
}

static int run_job(const char *model, bn_err *e)
{
    char text[4200], cfg[8192], out[4200], work[4200];
    write_text(text, sizeof text);
    snprintf(cfg, sizeof cfg,
             "{\"threads\": 1, \"calibration\": {\"dataset\": \"custom\", \"path\": \"%s\","
             " \"sequence_length\": 32, \"samples\": 8, \"batch_size\": 4},"
             " \"evaluate\": {\"windows\": 4}}", text);
    cJSON *j = cJSON_Parse(cfg);
    ck_assert_ptr_nonnull(j);
    bn_options o;
    ck_assert_msg(bn_options_from_json(j, &o, e) == 0, "%s", e->msg);
    cJSON_Delete(j);
    snprintf(out, sizeof out, "%s/out%d", root, n_runs);
    snprintf(work, sizeof work, "%s/work%d", root, n_runs++);
    bn_pipeline_paths paths = {.model_dir = model, .output_dir = out, .work_dir = work};
    int rc = bn_pipeline_run(&paths, &o, NULL, e);
    bn_options_free(&o);
    return rc;
}

START_TEST(nan_or_inf_weight_is_refused_at_load)
{
    const float bad[2] = {NAN, -INFINITY};
    const char *what[2] = {"NaN", "Inf"};
    for (int i = 0; i < 2; i++) {
        char dir[4096];
        make_model(i ? "inf-weight" : "nan-weight", dir, sizeof dir);
        /* a norm weight: preserved, never quantized, so only the load check can see it */
        poke(dir, "model.layers.1.post_attention_layernorm.weight", 5, 1, bad[i]);
        bn_err e = {0};
        ck_assert_int_eq(run_job(dir, &e), BN_ENUMERIC);
        ck_assert_msg(strstr(e.msg, "load: ") == e.msg, "%s", e.msg);
        ck_assert_msg(strstr(e.msg, "model.layers.1.post_attention_layernorm.weight"), "%s", e.msg);
        ck_assert_msg(strstr(e.msg, what[i]) && strstr(e.msg, "element 5"), "%s", e.msg);
    }
}
END_TEST

START_TEST(overflowing_activations_fail_the_job)
{
    char dir[4096];
    make_model("overflow", dir, sizeof dir);
    /* finite, but the first FFN's output overflows float: the residual stream becomes
     * Inf and the next RMSNorm turns it into NaN */
    poke(dir, "model.layers.0.mlp.up_proj.weight", 0, -1, 1e30f);
    poke(dir, "model.layers.0.mlp.down_proj.weight", 0, -1, 3e38f);
    bn_err e = {0};
    int rc = run_job(dir, &e);
    ck_assert_msg(rc == BN_ENUMERIC, "rc %d: %s", rc, e.msg);
    ck_assert_msg(strstr(e.msg, "non-finite activations"), "%s", e.msg);
    ck_assert_msg(strstr(e.msg, "calibrate: ") == e.msg, "%s", e.msg);
}
END_TEST

START_TEST(first_nonfinite_all_float_types)
{
    float f[5] = {1, 2, 3, 4, 5};
    ck_assert_int_eq(bn_first_nonfinite(f, BN_DTYPE_F32, 5), -1);
    f[3] = NAN;
    f[4] = INFINITY;
    ck_assert_int_eq(bn_first_nonfinite(f, BN_DTYPE_F32, 5), 3);
    ck_assert_int_eq(bn_first_nonfinite(f + 4, BN_DTYPE_F32, 1), 0);
    uint16_t h[4] = {bn_f32_to_f16(65504.0f), bn_f32_to_f16(-1.5f), bn_f32_to_f16(INFINITY), 0};
    ck_assert_int_eq(bn_first_nonfinite(h, BN_DTYPE_F16, 2), -1); /* 65504 is F16's max */
    ck_assert_int_eq(bn_first_nonfinite(h, BN_DTYPE_F16, 4), 2);
    uint16_t b[3] = {bn_f32_to_bf16(3e38f), bn_f32_to_bf16(NAN), 0};
    ck_assert_int_eq(bn_first_nonfinite(b, BN_DTYPE_BF16, 1), -1);
    ck_assert_int_eq(bn_first_nonfinite(b, BN_DTYPE_BF16, 3), 1);
    double d[3] = {1e308, -1e308, -INFINITY};
    ck_assert_int_eq(bn_first_nonfinite(d, BN_DTYPE_F64, 2), -1);
    ck_assert_int_eq(bn_first_nonfinite(d, BN_DTYPE_F64, 3), 2);
    int32_t i[2] = {-1, 0x7fffffff}; /* not a float type: nothing to find */
    ck_assert_int_eq(bn_first_nonfinite(i, BN_DTYPE_I32, 2), -1);
    /* unaligned data (a tensor inside an mmap) */
    unsigned char raw[9];
    float nan = NAN;
    memset(raw, 0, sizeof raw);
    memcpy(raw + 5, &nan, 4);
    ck_assert_int_eq(bn_first_nonfinite(raw + 1, BN_DTYPE_F32, 2), 1);
}
END_TEST

int main(void)
{
    root = bn_test_tmpdir("nonfinite");
    Suite *s = suite_create("nonfinite");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, first_nonfinite_all_float_types);
    tcase_add_test(tc, nan_or_inf_weight_is_refused_at_load);
    tcase_add_test(tc, overflowing_activations_fail_the_job);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    bn_test_rmtree(root);
    free(root);
    return rc;
}
