/* test_options.c - job options from JSON: defaults, every error names its JSON path,
 * unknown keys rejected, to_json -> from_json round trip; stage and metric names. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "bn_engine.h"
#include "bn_test.h"

static int parse(const char *json, bn_options *o, bn_err *err)
{
    cJSON *j = cJSON_Parse(json);
    ck_assert_ptr_nonnull(j);
    int rc = bn_options_from_json(j, o, err);
    cJSON_Delete(j);
    return rc;
}

START_TEST(defaults)
{
    bn_options o;
    bn_err err;
    ck_assert_int_eq(bn_options_from_json(NULL, &o, &err), 0);
    ck_assert_double_eq(o.sparsity_threshold, 0.5);
    ck_assert(!o.sparsity_auto);
    ck_assert_int_eq(o.scale, BN_SCALE_PER_CHANNEL);
    ck_assert_int_eq(o.n_preserve, 4);
    ck_assert_int_eq(o.seed, 42);
    ck_assert(o.calibration.enabled && o.calibration.refine_scales);
    ck_assert_int_eq(o.calibration.samples, 256);
    ck_assert_double_eq(o.fine_tune.lr, 1e-3);
    ck_assert_int_eq(o.fine_tune.checkpoint_every, 50);
    /* the budget rule: no epoch or step limit, 30 minutes, patience, never synthetic text */
    ck_assert_int_eq(o.fine_tune.epochs, 0);
    ck_assert_int_eq(o.fine_tune.precision, BN_FT_PRECISION_AUTO);
    ck_assert_int_eq(o.fine_tune.max_steps, 0);
    ck_assert_double_eq(o.fine_tune.max_minutes, 30);
    ck_assert_int_eq(o.fine_tune.patience, BN_FT_DEFAULT_PATIENCE);
    ck_assert(o.fine_tune.cooldown == BN_FT_DEFAULT_COOLDOWN);
    ck_assert(!o.fine_tune.allow_synthetic);
    ck_assert_double_eq(o.calibration.eval_fraction, 0.1);
    ck_assert_double_eq(o.calibration.selection_fraction, 0.05);
    ck_assert(o.export.gguf_tq2_0 && !o.export.gguf_tq1_0);
    ck_assert_str_eq(o.export.embedding_dtype, "f16");
    ck_assert_int_eq(o.evaluate.windows, 16);
    bn_options_free(&o);
    bn_options_default(&o); /* allocates nothing: freeing is optional */
    bn_options_free(&o);
}
END_TEST

START_TEST(values_and_dependent_defaults)
{
    bn_options o;
    bn_err err = { 0 };
    ck_assert_msg(parse("{\"sparsity_threshold\":\"auto\",\"scale\":\"per_tensor\",\"preserve\":[\"layers.0.\"],"
                        "\"seed\":7,\"threads\":2,\"calibration\":{\"dataset\":\"custom\",\"texts\":[\"a b\",\"c\"],"
                        "\"sequence_length\":128},\"fine_tune\":{\"lr\":0.01,\"enabled\":false,\"precision\":\"fp32\"},"
                        "\"export\":{\"gguf\":[\"tq1_0\"],\"embedding_dtype\":\"q8_0\"},\"evaluate\":{\"act_quant\":true}}",
                        &o, &err) == 0, "%s", err.msg);
    ck_assert(o.sparsity_auto);
    ck_assert_int_eq(o.scale, BN_SCALE_PER_TENSOR);
    ck_assert_int_eq(o.n_preserve, 1);
    ck_assert_str_eq(o.preserve[0], "layers.0.");
    ck_assert_int_eq(o.calibration.n_texts, 2);
    ck_assert_str_eq(o.calibration.texts[1], "c");
    ck_assert_int_eq(o.fine_tune.sequence_length, 128); /* follows calibration */
    ck_assert_int_eq(o.fine_tune.seed, 7);              /* follows seed */
    ck_assert(!o.fine_tune.enabled);
    ck_assert_int_eq(o.fine_tune.precision, BN_FT_PRECISION_FP32);
    ck_assert(o.export.gguf_explicit && o.export.gguf_tq1_0 && !o.export.gguf_tq2_0);
    ck_assert(o.evaluate.act_quant);
    /* round trip through to_json */
    cJSON *j = bn_options_to_json(&o);
    char *a = cJSON_PrintUnformatted(j);
    bn_options o2;
    ck_assert_msg(bn_options_from_json(j, &o2, &err) == 0, "%s", err.msg);
    cJSON *j2 = bn_options_to_json(&o2);
    char *b = cJSON_PrintUnformatted(j2);
    ck_assert_str_eq(a, b);
    free(a); free(b);
    cJSON_Delete(j); cJSON_Delete(j2);
    bn_options_free(&o);
    bn_options_free(&o2);
    ck_assert_int_eq(parse("{\"calibration\":{\"dataset\":\"none\"}}", &o, &err), 0);
    ck_assert(!o.calibration.enabled);
    bn_options_free(&o);
}
END_TEST

START_TEST(errors_name_the_path)
{
    static const struct { const char *json, *expect; } bad[] = {
        { "{\"foo\":1}", "config.foo: unknown key" },
        { "{\"fine_tune\":{\"lr\":\"x\"}}", "config.fine_tune.lr: must be a number" },
        { "{\"fine_tune\":{\"lr\":0}}", "config.fine_tune.lr: 0 is out of range" },
        { "{\"fine_tune\":{\"epochs\":1.5}}", "config.fine_tune.epochs: must be an integer" },
        { "{\"fine_tune\":{\"bogus\":true}}", "config.fine_tune.bogus: unknown key" },
        { "{\"fine_tune\":[]}", "config.fine_tune: must be a JSON object" },
        { "{\"sparsity_threshold\":-0.1}", "config.sparsity_threshold: must be a number in [0, 2] or \"auto\"" },
        { "{\"sparsity_threshold\":\"big\"}", "config.sparsity_threshold" },
        { "{\"scale\":\"per_row\"}", "config.scale: must be \"per_channel\" or \"per_tensor\"" },
        { "{\"preserve\":[\"ok\",3]}", "config.preserve[1]: must be a non-empty string" },
        { "{\"preserve\":\"embed\"}", "config.preserve: must be an array of strings" },
        { "{\"threads\":-1}", "config.threads: -1 is out of range" },
        { "{\"calibration\":{\"dataset\":\"imagenet\"}}", "config.calibration.dataset: must be one of" },
        { "{\"calibration\":{\"dataset\":\"custom\"}}", "config.calibration.dataset: \"custom\" needs" },
        { "{\"calibration\":{\"path\":\"x.txt\"}}", "config.calibration.path: only allowed with dataset \"custom\"" },
        { "{\"calibration\":{\"enabled\":1}}", "config.calibration.enabled: must be true or false" },
        { "{\"calibration\":{\"eval_fraction\":0}}", "config.calibration.eval_fraction: 0 is out of range" },
        { "{\"calibration\":{\"selection_fraction\":0.6}}", "config.calibration.selection_fraction: 0.6 is out of range" },
        { "{\"calibration\":{\"eval_fraction\":0.5,\"selection_fraction\":0.5}}",
          "config.calibration.selection_fraction: with eval_fraction 0.5 it leaves under 5%" },
        { "{\"fine_tune\":{\"patience\":-1}}", "config.fine_tune.patience: -1 is out of range" },
        { "{\"fine_tune\":{\"cooldown\":1.5}}", "config.fine_tune.cooldown: 1.5 is out of range" },
        { "{\"fine_tune\":{\"allow_synthetic\":1}}", "config.fine_tune.allow_synthetic: must be true or false" },
        { "{\"fine_tune\":{\"precision\":\"fp16\"}}", "config.fine_tune.precision: must be \"auto\", \"bf16\" or \"fp32\"" },
        { "{\"fine_tune\":{\"precision\":\"bf16\"}}", "config.fine_tune.precision: \"bf16\" needs device \"cuda\"" },
        { "{\"export\":{\"gguf\":[\"q4_0\"]}}", "config.export.gguf[0]: must be \"tq2_0\" or \"tq1_0\"" },
        { "{\"export\":{\"embedding_dtype\":\"f32\"}}", "config.export.embedding_dtype" },
        { "{\"evaluate\":{\"windows\":0}}", "config.evaluate.windows: 0 is out of range" },
        { "[1]", "config: must be a JSON object" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bn_options o;
        bn_err err = { 0 };
        int rc = parse(bad[i].json, &o, &err);
        if (rc != BN_EINVAL || strncmp(err.msg, bad[i].expect, strlen(bad[i].expect)))
            ck_abort_msg("%s: rc %d, '%s' (want '%s')", bad[i].json, rc, err.msg, bad[i].expect);
        bn_options_free(&o); /* failure leaves defaults: freeing is safe */
    }
}
END_TEST

START_TEST(names)
{
    ck_assert_str_eq(bn_stage_name(BN_STAGE_FINETUNE), "finetune");
    ck_assert_int_eq(bn_stage_parse("export"), BN_STAGE_EXPORT);
    ck_assert_int_eq(bn_stage_parse("nope"), -1);
    for (int i = 0; i < BN_N_JOB_METRICS; i++) {
        ck_assert_ptr_nonnull(strstr(bn_job_metric_names[i], "compression/"));
        for (int k = 0; k < i; k++) ck_assert_str_ne(bn_job_metric_names[i], bn_job_metric_names[k]);
    }
    for (int i = 0; i < BN_N_SUMMARY_KEYS; i++) ck_assert_ptr_nonnull(strstr(bn_summary_key_names[i], "phase/"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine-options");
    TCase *tc = tcase_create("options");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, values_and_dependent_defaults);
    tcase_add_test(tc, errors_name_the_path);
    tcase_add_test(tc, names);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
