/* test_ft_data.c - calibration and fine-tuning on the real stories260K model (suite 'data').
 *
 *   - calibration-aware scales give a lower ternary perplexity than plain absmean (both
 *     printed);
 *   - a short fine-tune on tinystories_train.txt clearly improves the ternary model;
 *   - kill -9 of `bitnetctl compress` during fine-tuning, then the same command again: it
 *     resumes from the checkpoint and ends within 1% of an uninterrupted run.
 * Only tinystories_train.txt is used for calibration and training.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bn_engine.h"
#include "bn_test.h"
#include "base/fsutil.h"
#include "stages/finetune.h"

static char *root;
static char model[4096], train[4096];

typedef struct rec {
    cJSON *m;
    char events[8192];
} rec;

static void on_event(void *c, bn_stage st, const char *level, const char *msg)
{
    rec *r = c;
    size_t l = strlen(r->events);
    snprintf(r->events + l, sizeof r->events - l, "[%s/%s] %s\n", bn_stage_name(st), level, msg);
}

static void on_metric(void *c, const char *key, double v, int64_t step)
{
    rec *r = c;
    if (step >= 0) return;
    cJSON_DeleteItemFromObject(r->m, key);
    cJSON_AddNumberToObject(r->m, key, v);
}

static double metric(const rec *r, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->m, key);
    ck_assert_msg(cJSON_IsNumber(v), "metric %s missing; events:\n%s", key, r->events);
    return v->valuedouble;
}

static void run(const char *tag, const char *config, rec *r)
{
    char cfg[8192], out[4200], work[4200];
    snprintf(cfg, sizeof cfg, config, train);
    cJSON *j = cJSON_Parse(cfg);
    ck_assert_ptr_nonnull(j);
    bn_options o;
    bn_err e = {0};
    ck_assert_msg(bn_options_from_json(j, &o, &e) == 0, "%s", e.msg);
    cJSON_Delete(j);
    snprintf(out, sizeof out, "%s/out-%s", root, tag);
    snprintf(work, sizeof work, "%s/work-%s", root, tag);
    memset(r, 0, sizeof *r);
    r->m = cJSON_CreateObject();
    bn_pipeline_paths paths = {model, out, work, NULL, NULL};
    bn_progress pr = {r, NULL, on_event, on_metric, NULL, NULL};
    int rc = bn_pipeline_run(&paths, &o, &pr, &e);
    bn_options_free(&o);
    ck_assert_msg(rc == 0, "%s: %s\n%s", tag, e.msg, r->events);
}

#define CALIB "\"calibration\": {\"dataset\": \"custom\", \"path\": \"%s\", \"samples\": 32}"

/* Checkpoint spacing: every `every` steps while they are cheap; after a slow one (a large
 * model's state) only once training has run 9 times as long. */
START_TEST(checkpoint_spacing)
{
    ck_assert(bn_ft_checkpoint_due(50, 50, 1.0, 0.01));
    ck_assert(!bn_ft_checkpoint_due(49, 50, 100.0, 0.01));
    ck_assert(!bn_ft_checkpoint_due(50, 0, 100.0, 0.01));
    ck_assert(bn_ft_checkpoint_due(4, 4, 0.001, 1.99));  /* under 2 s: every `every` steps */
    ck_assert(!bn_ft_checkpoint_due(100, 50, 19.0, 25.0)); /* 25 s each: wait 225 s */
    ck_assert(!bn_ft_checkpoint_due(550, 50, 224.0, 25.0));
    ck_assert(bn_ft_checkpoint_due(600, 50, 225.0, 25.0));
    ck_assert(!bn_ft_checkpoint_due(601, 50, 500.0, 25.0)); /* still on step multiples */
}
END_TEST

START_TEST(calibration_aware_scales_beat_absmean)
{
    rec a, b;
    run("absmean", "{\"threads\": 2, " CALIB ", \"fine_tune\": {\"enabled\": false},"
        " \"export\": {\"gguf\": []}, \"evaluate\": {\"windows\": 32}}", &a);
    /* the same, with refinement off */
    run("plain", "{\"threads\": 2, \"calibration\": {\"dataset\": \"custom\", \"path\": \"%s\","
        " \"samples\": 32, \"refine_scales\": false}, \"fine_tune\": {\"enabled\": false},"
        " \"export\": {\"gguf\": []}, \"evaluate\": {\"windows\": 32}}", &b);
    double refined = metric(&a, "compression/post_perplexity");
    double plain = metric(&b, "compression/post_perplexity");
    double pre = metric(&a, "compression/pre_perplexity");
    printf("stories260K held-out perplexity: FP32 %.3f, ternary absmean %.3f, ternary "
           "calibration-aware %.3f\n", pre, plain, refined);
    ck_assert(metric(&b, "compression/pre_perplexity") == pre);
    ck_assert_msg(refined < plain, "calibration-aware %g vs absmean %g", refined, plain);
    ck_assert_msg(strstr(a.events, "calibration-aware"), "%s", a.events);
    ck_assert(metric(&a, "compression/dequantization_accuracy") >= 0.995);
    ck_assert(metric(&a, "compression/gradient_flow_test_passed") == 1.0);
    cJSON_Delete(a.m);
    cJSON_Delete(b.m);
}
END_TEST

START_TEST(short_finetune_clearly_improves)
{
    rec r;
    run("short", "{\"threads\": 2, " CALIB ", \"fine_tune\": {\"max_steps\": 60, \"epochs\": 10,"
        " \"checkpoint_every\": 20}, \"export\": {\"gguf\": []}}", &r);
    double pre = metric(&r, "compression/pre_perplexity");
    double post = metric(&r, "compression/post_perplexity");
    double ft = metric(&r, "compression/post_finetune_perplexity");
    printf("stories260K, 60 fine-tuning steps: pre %.3f, post %.3f, post-finetune %.3f, recovery "
           "%.3f\n", pre, post, ft, metric(&r, "compression/perplexity_recovery"));
    ck_assert_msg(ft < 0.25 * post, "post-finetune %g vs post %g", ft, post);
    char p[4400];
    snprintf(p, sizeof p, "%s/out-short/training_history.json", root);
    ck_assert(bn_fs_exists(p));
    cJSON_Delete(r.m);
}
END_TEST

/* ---- kill -9 of bitnetctl compress ------------------------------------------------------ */

static pid_t spawn(const char *out, const char *work, const char *cfg)
{
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        execl(bn_test_build_path("cli/bitnetctl"), "bitnetctl", "compress", model, out,
              "--calibration", train, "--fine-tune", "--work-dir", work, "--config", cfg,
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static double ft_ppl(const char *out)
{
    char p[4400], *text;
    size_t len;
    bn_err e = {0};
    snprintf(p, sizeof p, "%s/compression_metadata.json", out);
    ck_assert_msg(bn_fs_read_file(p, 1u << 24, &text, &len, &e) == 0, "%s", e.msg);
    const char *k = strstr(text, "\"compression/post_finetune_perplexity\"");
    ck_assert_ptr_nonnull(k);
    double v = strtod(strchr(k, ':') + 1, NULL);
    free(text);
    return v;
}

START_TEST(kill9_then_resume_matches_uninterrupted)
{
    const char *cfg = "{\"threads\": 2, \"seed\": 3, \"calibration\": {\"samples\": 16},"
                      " \"fine_tune\": {\"max_steps\": 40, \"epochs\": 10, \"sequence_length\": 128,"
                      " \"checkpoint_every\": 5}, \"export\": {\"gguf\": []}}";
    char out1[4200], work1[4200], out2[4200], work2[4200], ck[4400];
    snprintf(out1, sizeof out1, "%s/k-ref", root);
    snprintf(work1, sizeof work1, "%s/k-ref.work", root);
    snprintf(out2, sizeof out2, "%s/k-kill", root);
    snprintf(work2, sizeof work2, "%s/k-kill.work", root);
    int st;
    pid_t p = spawn(out1, work1, cfg);
    ck_assert(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    p = spawn(out2, work2, cfg);
    snprintf(ck, sizeof ck, "%s/finetune/ckpt.json", work2);
    time_t t0 = time(NULL);
    while (!bn_fs_exists(ck) && time(NULL) - t0 < 600) usleep(20000);
    ck_assert_msg(bn_fs_exists(ck), "no fine-tune checkpoint appeared");
    usleep(300000);
    kill(p, SIGKILL);
    ck_assert(waitpid(p, &st, 0) == p && WIFSIGNALED(st));
    ck_assert(!bn_fs_exists(out2));
    p = spawn(out2, work2, cfg);
    ck_assert(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    double a = ft_ppl(out1), b = ft_ppl(out2);
    printf("kill -9 + resume: %.5f, uninterrupted: %.5f\n", b, a);
    ck_assert_msg(fabs(a - b) <= 0.01 * a, "%g vs %g", b, a);
}
END_TEST

int main(void)
{
    bn_test_require_data("stories260K-hf/model.safetensors");
    bn_test_require_data("corpora/tinystories_train.txt");
    snprintf(model, sizeof model, "%s", bn_test_data("stories260K-hf"));
    snprintf(train, sizeof train, "%s", bn_test_data("corpora/tinystories_train.txt"));
    root = bn_test_tmpdir("ftdata");
    Suite *s = suite_create("finetune-data");
    TCase *tc = tcase_create("stories260K");
    tcase_set_timeout(tc, 1500);
    tcase_add_test(tc, checkpoint_spacing);
    tcase_add_test(tc, calibration_aware_scales_beat_absmean);
    tcase_add_test(tc, short_finetune_clearly_improves);
    tcase_add_test(tc, kill9_then_resume_matches_uninterrupted);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    bn_test_rmtree(root);
    free(root);
    return rc;
}
