/* test_config.c - config.json fidelity: both layouts transformers writes are read, and
 * every key whose value would change the math in a way the engine does not compute is
 * refused with its name and value (and its JSON field), never ignored. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bn_test.h"
#include "formats/hf.h"

#define BASE "\"model_type\": \"%s\", \"hidden_size\": 64, \"intermediate_size\": 128, " \
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100"

static int parse(const char *model_type, const char *extra, bn_model_config *cfg, bn_err *err)
{
    char json[2048];
    snprintf(json, sizeof json, "{" BASE "%s%s}", model_type, extra[0] ? ", " : "", extra);
    memset(err, 0, sizeof *err);
    return bn_hf_config_parse(json, strlen(json), cfg, err);
}

START_TEST(rope_theta_from_either_layout)
{
    bn_model_config c;
    bn_err e;
    ck_assert_int_eq(parse("llama", "\"rope_theta\": 500000", &c, &e), 0);
    ck_assert_float_eq(c.rope_theta, 500000.0f);
    ck_assert_int_eq(parse("llama", "\"rope_parameters\": {\"rope_theta\": 250000, \"rope_type\": \"default\"}", &c, &e), 0);
    ck_assert_float_eq(c.rope_theta, 250000.0f);
    ck_assert_int_eq(c.rope_type, BN_ROPE_DEFAULT);
    ck_assert_int_eq(parse("llama", "\"rope_scaling\": null", &c, &e), 0);
    ck_assert_float_eq(c.rope_theta, 10000.0f);
}
END_TEST

START_TEST(rope_types_read)
{
    bn_model_config c;
    bn_err e;
    ck_assert_msg(parse("llama", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 4}", &c, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(c.rope_type, BN_ROPE_LINEAR);
    ck_assert_float_eq(c.rope_factor, 4.0f);
    ck_assert_msg(parse("llama", "\"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 32, \"low_freq_factor\": 1,"
                                 " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192,"
                                 " \"rope_theta\": 500000}", &c, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(c.rope_type, BN_ROPE_LLAMA3);
    ck_assert_float_eq(c.rope_factor, 32.0f);
    ck_assert_int_eq(c.rope_orig_ctx, 8192);
    ck_assert_float_eq(c.rope_theta, 500000.0f);
    /* yarn: transformers 5.x's defaults (beta 32/1, attention factor 0.1 ln(factor) + 1,
     * original context = max_position_embeddings, factor given wins over the ratio) */
    ck_assert_msg(parse("qwen2", "\"max_position_embeddings\": 32768, \"rope_scaling\": {\"type\": \"yarn\","
                                 " \"factor\": 4}", &c, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(c.rope_type, BN_ROPE_YARN);
    ck_assert_float_eq(c.rope_factor, 4.0f);
    ck_assert_int_eq(c.rope_orig_ctx, 32768);
    ck_assert_float_eq(c.rope_beta_fast, 32.0f);
    ck_assert_float_eq(c.rope_beta_slow, 1.0f);
    ck_assert_float_eq_tol(c.rope_attn_factor, 0.1 * log(4.0) + 1.0, 1e-6);
    ck_assert(c.rope_truncate);
    ck_assert_msg(parse("llama", "\"max_position_embeddings\": 4096, \"rope_parameters\": {\"rope_type\": \"yarn\","
                                 " \"original_max_position_embeddings\": 1024, \"mscale\": 2, \"mscale_all_dim\": 1,"
                                 " \"truncate\": false}", &c, &e) == 0, "%s", e.msg);
    ck_assert_float_eq(c.rope_factor, 4.0f);
    ck_assert_float_eq_tol(c.rope_attn_factor, (0.2 * log(4.0) + 1.0) / (0.1 * log(4.0) + 1.0), 1e-6);
    ck_assert(!c.rope_truncate);
}
END_TEST

/* key JSON, the field named in err.field, and a part of the message */
static const struct { const char *type, *extra, *field, *msg; } refused[] = {
    { "llama", "\"rope_scaling\": {\"rope_type\": \"su\", \"factor\": 4}", "/rope_scaling/rope_type", "su" },
    { "llama", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, \"truncate\": 1}", "/rope_scaling/truncate",
      "true or false" },
    { "llama", "\"rope_parameters\": {\"rope_type\": \"yarn\", \"beta_fast\": -1}", "/rope_parameters/beta_fast",
      "positive" },
    { "llama", "\"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 2}", "/rope_parameters/rope_type", "dynamic" },
    { "qwen2", "\"rope_scaling\": {\"type\": \"longrope\"}", "/rope_scaling/rope_type", "longrope" },
    { "llama", "\"hidden_act\": \"gelu\"", "/hidden_act", "\"gelu\"" },
    { "llama", "\"mlp_bias\": true", "/mlp_bias", "mlp_bias" },
    { "llama", "\"attention_bias\": true", "/attention_bias", "o_proj" },
    { "llama", "\"partial_rotary_factor\": 0.5", "/partial_rotary_factor", "0.5" },
    { "llama", "\"final_logit_softcapping\": 30", "/final_logit_softcapping", "30" },
    { "llama", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 1}",
      "/rope_scaling", "high_freq_factor" },
    { "llama", "\"rope_scaling\": 3", "/rope_scaling", "object" },
};

START_TEST(refused_keys_name_key_and_value)
{
    bn_model_config c;
    bn_err e;
    int i = _i;
    ck_assert_msg(parse(refused[i].type, refused[i].extra, &c, &e) != 0, "accepted: %s", refused[i].extra);
    ck_assert_msg(strstr(e.msg, refused[i].msg) != NULL, "message '%s' lacks '%s'", e.msg, refused[i].msg);
    ck_assert_str_eq(e.field, refused[i].field);
}
END_TEST

START_TEST(unknown_model_type_refused)
{
    bn_model_config c;
    bn_err e;
    ck_assert_int_ne(parse("gemma2", "", &c, &e), 0);
    ck_assert_msg(strstr(e.msg, "model_type") && strstr(e.msg, "\"gemma2\""), "%s", e.msg);
    ck_assert_str_eq(e.field, "/model_type");
    ck_assert_int_eq(e.code, BN_EUNSUPPORTED);
    /* qwen3: q/k norms, head_dim 128 unless given, an attention_bias would bias o_proj too */
    ck_assert_msg(parse("qwen3", "", &c, &e) == 0, "%s", e.msg);
    ck_assert(c.qk_norm);
    ck_assert(!c.attention_bias);
    ck_assert_int_eq(c.head_dim, 128);
    ck_assert_int_eq(c.arch, BN_ARCH_QWEN3);
    ck_assert_int_ne(parse("qwen3", "\"attention_bias\": true", &c, &e), 0);
    ck_assert_str_eq(e.field, "/attention_bias");
}
END_TEST

START_TEST(sliding_window_caps_the_context)
{
    bn_model_config c;
    bn_err e;
    ck_assert_int_eq(parse("mistral", "\"sliding_window\": 4096, \"max_position_embeddings\": 32768", &c, &e), 0);
    ck_assert_int_eq(c.sliding_window, 4096);
    ck_assert_int_eq(c.max_seq_len, 4096);
    ck_assert_int_eq(parse("mistral", "\"sliding_window\": null, \"max_position_embeddings\": 32768", &c, &e), 0);
    ck_assert_int_eq(c.max_seq_len, 32768);
    /* qwen2 only slides with use_sliding_window */
    ck_assert_int_eq(parse("qwen2", "\"sliding_window\": 4096, \"use_sliding_window\": false, "
                                    "\"max_position_embeddings\": 32768", &c, &e), 0);
    ck_assert_int_eq(c.max_seq_len, 32768);
    ck_assert_int_eq(parse("qwen2", "\"sliding_window\": 4096, \"use_sliding_window\": true, "
                                    "\"max_position_embeddings\": 32768", &c, &e), 0);
    ck_assert_int_eq(c.max_seq_len, 4096);
}
END_TEST

START_TEST(neutral_values_accepted)
{
    bn_model_config c;
    bn_err e;
    ck_assert_msg(parse("llama", "\"hidden_act\": \"silu\", \"mlp_bias\": false, \"attention_bias\": false, "
                                 "\"partial_rotary_factor\": 1.0, \"pretraining_tp\": 1", &c, &e) == 0, "%s", e.msg);
    ck_assert_msg(parse("qwen2", "\"attention_bias\": true", &c, &e) == 0, "%s", e.msg);
    ck_assert(c.attention_bias);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, rope_theta_from_either_layout);
    tcase_add_test(tc, rope_types_read);
    tcase_add_loop_test(tc, refused_keys_name_key_and_value, 0, (int)(sizeof refused / sizeof refused[0]));
    tcase_add_test(tc, unknown_model_type_refused);
    tcase_add_test(tc, sliding_window_caps_the_context);
    tcase_add_test(tc, neutral_values_accepted);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
