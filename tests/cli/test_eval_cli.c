/* test_eval_cli.c - `bitnetctl eval` end to end (runs the built binary).
 *
 * "unit" mode: argument and input errors give exit status 2 / 1 with a message naming
 * the problem. "data" mode: the stories260K reference NLL over 64 windows of 512 tokens
 * (1.40559 nats/token, perplexity 4.078) within 1e-4, JSON keys as documented, from the
 * .u16 ids and from tinystories_eval.txt through the tokenizer (the same 32,769 ids).
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "bn_test.h"

/* Runs bitnetctl with args; stdout (and stderr when merge) into out; returns exit code. */
static int run(const char *args, char *out, size_t cap)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bn_test_build_path("cli/bitnetctl"), args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(usage_errors)
{
    char out[8192], args[2048];
    ck_assert_int_eq(run("eval", out, sizeof out), 2);
    ck_assert_ptr_nonnull(strstr(out, "usage"));
    ck_assert_int_eq(run("eval /nonexistent --tokens x --text y", out, sizeof out), 2);
    ck_assert_ptr_nonnull(strstr(out, "exactly one"));
    ck_assert_int_eq(run("eval /nonexistent --tokens x --ctx 0", out, sizeof out), 2);
    ck_assert_ptr_nonnull(strstr(out, "--ctx"));
    ck_assert_int_eq(run("eval /nonexistent-model-dir --tokens x", out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "nonexistent-model-dir"));
    /* a model folder exists (written by init-model), but the token file does not */
    char *dir = bn_test_tmpdir("evalcli");
    snprintf(args, sizeof args, "init-model %s/m --dim 32 --hidden 64 --layers 1 --heads 2 "
             "--kv-heads 1 --vocab 300 --ctx 16", dir);
    ck_assert_msg(run(args, out, sizeof out) == 0, "%s", out);
    snprintf(args, sizeof args, "eval %s/m --tokens %s/missing.u16", dir, dir);
    ck_assert_int_eq(run(args, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "missing.u16"));
    /* ids outside the vocab are named */
    char path[1024];
    snprintf(path, sizeof path, "%s/t.u16", dir);
    FILE *f = fopen(path, "wb");
    unsigned short ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (unsigned short)(i == 33 ? 999 : i);
    fwrite(ids, 2, 40, f);
    fclose(f);
    snprintf(args, sizeof args, "eval %s/m --tokens %s --ctx 8", dir, path);
    ck_assert_int_eq(run(args, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "token 999 at index 33"));
    /* context beyond the model's */
    snprintf(args, sizeof args, "eval %s/m --tokens %s --ctx 32", dir, path);
    ck_assert_int_eq(run(args, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "exceeds the model's context 16"));
    /* a valid run on the random model: 4 windows of 8 tokens from the first 33 */
    ids[33] = 7;
    f = fopen(path, "wb");
    fwrite(ids, 2, 40, f);
    fclose(f);
    snprintf(args, sizeof args, "eval %s/m --tokens %s --ctx 8 --windows 4 --json", dir, path);
    ck_assert_msg(run(args, out, sizeof out) == 0, "%s", out);
    cJSON *j = cJSON_Parse(strchr(out, '{'));
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "tokens")->valueint, 32);
    ck_assert(cJSON_GetObjectItem(j, "perplexity")->valuedouble > 1);
    cJSON_Delete(j);
    /* --decoder's options: --f16-head only with it, --act-quant never (int8 already) */
    snprintf(args, sizeof args, "eval %s/m --tokens %s --ctx 8 --f16-head", dir, path);
    ck_assert_int_eq(run(args, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "--f16-head is an option of --decoder"));
    snprintf(args, sizeof args, "eval %s/m --tokens %s --ctx 8 --decoder --act-quant", dir, path);
    ck_assert_int_eq(run(args, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "--act-quant"));
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

/* mean_nll of `bitnetctl eval ARGS --json` */
static double eval_nll(const char *args)
{
    char cmd[4096], out[8192];
    snprintf(cmd, sizeof cmd, "eval %s --json", args);
    ck_assert_msg(run(cmd, out, sizeof out) == 0, "%s", out);
    cJSON *j = cJSON_Parse(strchr(out, '{'));
    ck_assert_msg(j != NULL, "not JSON: %s", out);
    double nll = cJSON_GetObjectItem(j, "mean_nll")->valuedouble;
    cJSON_Delete(j);
    return nll;
}

START_TEST(stories_reference_nll)
{
    bn_test_require_data("stories260K-hf/model.safetensors");
    bn_test_require_data("corpora/tinystories_val.tok512.u16");
    char args[4096], out[8192];
    /* bn_test_data returns a static buffer: copy each path */
    char model[1024], toks[1024];
    snprintf(model, sizeof model, "%s", bn_test_data("stories260K-hf"));
    snprintf(toks, sizeof toks, "%s", bn_test_data("corpora/tinystories_val.tok512.u16"));
    snprintf(args, sizeof args, "eval %s --tokens %s --ctx 512 --windows 64 --json", model, toks);
    ck_assert_msg(run(args, out, sizeof out) == 0, "%s", out);
    cJSON *j = cJSON_Parse(strchr(out, '{'));
    ck_assert_msg(j != NULL, "not JSON: %s", out);
    double nll = cJSON_GetObjectItem(j, "mean_nll")->valuedouble;
    double ppl = cJSON_GetObjectItem(j, "perplexity")->valuedouble;
    ck_assert_msg(nll > 1.40549 && nll < 1.40569, "mean_nll %.6f, want 1.40559", nll);
    ck_assert_double_eq_tol(ppl, 4.078, 1e-3);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "tokens")->valueint, 64 * 512);
    cJSON_Delete(j);
    /* the same stories as text, tokenized by the folder's tokenizer.json */
    snprintf(toks, sizeof toks, "%s", bn_test_data("corpora/tinystories_eval.txt"));
    snprintf(args, sizeof args, "eval %s --text %s --ctx 512 --json", model, toks);
    ck_assert_msg(run(args, out, sizeof out) == 0, "%s", out);
    j = cJSON_Parse(strchr(out, '{'));
    ck_assert_msg(j != NULL, "not JSON: %s", out);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "windows")->valueint, 64);
    nll = cJSON_GetObjectItem(j, "mean_nll")->valuedouble;
    ck_assert_msg(nll > 1.40549 && nll < 1.40569, "--text mean_nll %.6f, want 1.40559", nll);
    cJSON_Delete(j);
    /* the ternary decoder (packed kernels, KV cache, int8 or F16 LM head) scores like the
     * FP32 engine's W1.58A8 forward on the same ternarization: measured 5.880900 (FP32),
     * 5.880708 (decoder), 5.881166 (F16 head) over 8 windows */
    snprintf(toks, sizeof toks, "%s", bn_test_data("corpora/tinystories_val.tok512.u16"));
    snprintf(args, sizeof args, "%s --tokens %s --windows 8 --ternary --act-quant", model, toks);
    double fp = eval_nll(args);
    snprintf(args, sizeof args, "%s --tokens %s --windows 8 --decoder", model, toks);
    double dec = eval_nll(args);
    snprintf(args, sizeof args, "%s --tokens %s --windows 8 --decoder --f16-head", model, toks);
    double dec16 = eval_nll(args);
    ck_assert_msg(fabs(dec - fp) < 2e-3 && fabs(dec16 - fp) < 2e-3, "decoder %.6f, F16 head %.6f, FP32 %.6f", dec,
                  dec16, fp);
    ck_assert(fp > 5.5); /* ternarized on load without fine-tuning: far from 1.406 */
}
END_TEST

int main(int argc, char **argv)
{
    bool data = argc > 1 && !strcmp(argv[1], "data");
    Suite *s = suite_create("eval_cli");
    TCase *tc = tcase_create("eval");
    tcase_set_timeout(tc, 0); /* meson enforces the timeout */
    tcase_add_test(tc, data ? stories_reference_nll : usage_errors);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
