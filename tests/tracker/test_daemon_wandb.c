/* test_daemon_wandb.c - issue 6's acceptance scenarios against the real daemon.
 *
 * Each test starts bitnetd on a loopback port (tests/service/svc.h) with WANDB_BASE_URL
 * pointing at an in-process fake W&B server (tests/fake_wandb), submits a job, and checks
 * the server's final state (tracker_check.h): structure (one run, contiguous offsets, no
 * conflicting rewrite, one complete and nothing after it, wrapped config string) and
 * values (exactly the metrics the daemon recorded, each once). The binary is given by
 * BN_TRACKER_DAEMON (default: bitnetd-fake, the daemon built on a stand-in engine whose
 * stages only sleep); with the real bitnetd the 19 keys and the 8 phase keys are checked
 * too (BN_TRACKER_REAL=1).
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bn_test.h"
#include "fake_wandb.h"
#include "svc.h"
#include "tracker_check.h"

#define KEY "dmn0123456789abcdefghijklmnopqrstuvwxyzKEY"

static fake_wandb *fw;
static svc s;
static char env_url[256], env_key[256];
static bool real_engine;
static double t_setup;

static const char *daemon_binary(void)
{
    const char *b = getenv("BN_TRACKER_DAEMON");
    static char path[4096];
    snprintf(path, sizeof path, "%s", bn_test_build_path(b ? b : "tests/service/bitnetd-fake"));
    return path;
}

static void make_real_model(void);

static void setup(void)
{
    t_setup = svc_now();
    real_engine = getenv("BN_TRACKER_REAL") != NULL;
    fw = fake_wandb_start(0, KEY);
    ck_assert_ptr_nonnull(fw);
    svc_init(&s, daemon_binary());
    snprintf(env_url, sizeof env_url, "WANDB_BASE_URL=%s", fake_wandb_url(fw));
    svc_setenv(&s, env_url);
    svc_setenv(&s, "BN_FAKE_STAGE_MS=40");
    svc_flag(&s, "--set");
    svc_flag(&s, "wandb.backoff_base_ms=50");
    svc_flag(&s, "--set");
    svc_flag(&s, "wandb.backoff_cap_ms=300");
    svc_flag(&s, "--set");
    svc_flag(&s, "wandb.min_interval_ms=10");
    if (real_engine) make_real_model();
}

static void teardown(void)
{
    if (getenv("BN_TRACKER_TIMING")) fprintf(stderr, "test took %.2f s\n", svc_now() - t_setup);
    svc_cleanup(&s);
    fake_wandb_stop(fw);
}

static void with_key(const char *key)
{
    snprintf(env_key, sizeof env_key, "WANDB_API_KEY=%s", key);
    svc_setenv(&s, env_key);
}

static cJSON *get_json(const char *path)
{
    svc_resp r;
    svc_req(&s, "GET", path, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "GET %s: %ld %s", path, r.status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    svc_resp_free(&r);
    ck_assert_ptr_nonnull(j);
    return j;
}

/* The real engine gets a random tiny Llama (bitnetctl init-model) and a small but
 * complete configuration: calibration and evaluation on a few short windows, a few
 * fine-tuning steps (threshold 0: it always runs), so every one of the 19 keys and the
 * per-step fine-tuning history are real measurements. */
static const char real_config[] =
    "{\"seed\":7,\"calibration\":{\"samples\":8,\"sequence_length\":32},"
    "\"evaluate\":{\"windows\":2},"
    "\"fine_tune\":{\"threshold\":0,\"max_steps\":4,\"batch_size\":1,\"checkpoint_every\":2,"
    "\"allow_synthetic\":true}}";

static void make_real_model(void)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s init-model %s/real --shape tiny >/dev/null 2>&1",
             bn_test_build_path("cli/bitnetctl"), s.models);
    ck_assert_int_eq(system(cmd), 0);
}

static void submit(const char *tracking, const char *output, char id[64])
{
    char body[8192];
    snprintf(body, sizeof body, "{\"model\":\"%s/%s\",\"output\":\"%s\",\"config\":%s%s%s}",
             s.models, real_engine ? "real" : "tiny", output,
             real_engine ? real_config : "{\"seed\":7}", tracking ? ",\"tracking\":" : "",
             tracking ? tracking : "");
    long st = svc_submit(&s, body, NULL, id);
    ck_assert_msg(st == 202 || st == 201, "submit: HTTP %ld", st);
}

/* GET /v1/jobs/{id} -> tracking.wandb (caller deletes the returned root). */
static cJSON *tracking_of(const char *id, const cJSON **w)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    cJSON *j = get_json(path);
    *w = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tracking"), "wandb");
    ck_assert_ptr_nonnull(*w);
    return j;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Waits for the job to end and its tracking to leave pending/active. */
static void wait_tracked(const char *id, const char *want_job, const char *want_tracking)
{
    ck_assert_str_eq(svc_wait(&s, id, 60), want_job);
    double t0 = svc_now();
    for (;;) {
        const cJSON *w;
        cJSON *j = tracking_of(id, &w);
        const char *st = str(w, "status");
        bool done = st && strcmp(st, "pending") && strcmp(st, "active");
        if (done) {
            ck_assert_msg(!strcmp(st, want_tracking), "tracking status %s, wanted %s (%s)", st,
                          want_tracking, str(w, "last_error") ? str(w, "last_error") : "");
            cJSON_Delete(j);
            return;
        }
        cJSON_Delete(j);
        ck_assert_msg(svc_now() - t0 < 60, "tracking of %s still %s", id, st ? st : "?");
        usleep(50 * 1000);
    }
}

static void assert_delivered(const char *id, int exitcode)
{
    cJSON *state = fake_wandb_state(fw);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/metrics", id);
    cJSON *m = get_json(path);
    tc_report rep;
    bool ok = tc_check_run(state, id, exitcode, &rep) && tc_check_values(state, id, m, &rep) &&
              (!real_engine || tc_check_19(state, id, &rep));
    if (!ok) {
        char *txt = cJSON_Print(tc_find_run(state, id));
        fprintf(stderr, "run: %s\nmetrics: %s\n", txt ? txt : "(none)", cJSON_PrintUnformatted(m));
        free(txt);
    }
    ck_assert_msg(ok, "job %s: %s", id, rep.msg);
    ck_assert_int_gt(rep.n_history, 0);
    cJSON_Delete(m);
    cJSON_Delete(state);
    const cJSON *w;
    cJSON *j = tracking_of(id, &w);
    ck_assert_int_eq(cJSON_GetObjectItem(w, "pending_rows")->valueint, 0);
    ck_assert_int_eq(cJSON_GetObjectItem(w, "delivered_rows")->valueint, rep.n_history + 2);
    ck_assert_ptr_nonnull(str(w, "run_url"));
    ck_assert_ptr_nonnull(strstr(str(w, "run_url"), id));
    cJSON_Delete(j);
}

static bool log_has_key(void)
{
    char *log = svc_read_file(s.log);
    bool leak = log && strstr(log, KEY);
    free(log);
    return leak;
}

/* ---- scenarios ----------------------------------------------------------------------- */

START_TEST(online_one_run_exactly_once)
{
    with_key(KEY);
    svc_start(&s);
    char id[64];
    submit("{\"wandb\":{\"project\":\"acc\",\"tags\":[\"t1\"],\"group\":\"g\"}}", "on1", id);
    wait_tracked(id, "succeeded", "finished");
    assert_delivered(id, 0);
    cJSON *state = fake_wandb_state(fw);
    const cJSON *run = tc_find_run(state, id);
    ck_assert_str_eq(str(run, "project"), "acc");
    const cJSON *cfg = cJSON_GetObjectItem(run, "config");
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "seed"), "value")->valueint, 7);
    cJSON_Delete(state);
    /* /metrics reports the delivery */
    svc_resp r;
    svc_req(&s, "GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_wandb_backlog_rows 0"));
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_wandb_runs{status=\"finished\"} 1"));
    ck_assert_ptr_null(strstr(r.body, KEY));
    svc_resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    svc_req(&s, "GET", path, NULL, NULL, &r);
    ck_assert_ptr_null(strstr(r.body, KEY));
    svc_resp_free(&r);
    /* an orderly stop (under the sanitizers: no leak, no race in the tracker's shutdown) */
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert(!log_has_key());
}
END_TEST

START_TEST(down_for_the_whole_job)
{
    with_key(KEY);
    ck_assert_int_eq(fake_wandb_set_down(fw, true), 0);
    svc_start(&s);
    char id[64];
    submit(NULL, "down1", id);
    ck_assert_str_eq(svc_wait(&s, id, 60), "succeeded");
    usleep(300 * 1000);
    const cJSON *w;
    cJSON *j = tracking_of(id, &w);
    ck_assert_str_eq(str(w, "status"), "pending");
    ck_assert_int_gt(cJSON_GetObjectItem(w, "pending_rows")->valueint, 0);
    ck_assert_ptr_nonnull(str(w, "last_error"));
    cJSON_Delete(j);
    svc_resp r;
    svc_req(&s, "GET", "/metrics", NULL, NULL, &r);
    ck_assert_ptr_null(strstr(r.body, "bitnetd_wandb_backlog_rows 0\n"));
    svc_resp_free(&r);
    ck_assert_int_eq(fake_wandb_set_down(fw, false), 0);
    wait_tracked(id, "succeeded", "finished");
    assert_delivered(id, 0);
}
END_TEST

START_TEST(thirty_percent_faults)
{
    with_key(KEY);
    svc_setenv(&s, "BN_FAKE_STAGE_MS=200");
    fake_wandb_faults f = { .fail_percent = 30, .retry_after_s = 1, .seed = 5 };
    fake_wandb_set_faults(fw, &f);
    svc_start(&s);
    char id[64];
    submit(NULL, "f30", id);
    wait_tracked(id, "succeeded", "finished");
    assert_delivered(id, 0);
    cJSON *state = fake_wandb_state(fw);
    ck_assert_int_gt(cJSON_GetObjectItem(state, "faults_injected")->valueint, 0);
    cJSON_Delete(state);
}
END_TEST

START_TEST(stored_then_500)
{
    with_key(KEY);
    svc_setenv(&s, "BN_FAKE_STAGE_MS=200"); /* rows arrive over ~1 s: several requests */
    fake_wandb_faults f = { .store_then_fail_percent = 30, .seed = 9 };
    fake_wandb_set_faults(fw, &f);
    fake_wandb_queue(fw, "file_stream", 500, NULL, 0, true, 2); /* the first two for sure */
    svc_start(&s);
    char id[64];
    submit(NULL, "st500", id);
    wait_tracked(id, "succeeded", "finished");
    assert_delivered(id, 0);
    cJSON *state = fake_wandb_state(fw);
    const cJSON *run = tc_find_run(state, id);
    if (getenv("BN_TRACKER_TIMING")) fprintf(stderr, "%s\n", cJSON_Print(run));
    ck_assert_int_gt(cJSON_GetObjectItem(run, "rewrites")->valueint, 0);
    cJSON_Delete(state);
}
END_TEST

/* kill -9 while the server holds a stored-but-unanswered file_stream request. */
START_TEST(kill9_mid_delivery)
{
    with_key(KEY);
    svc_setenv(&s, "BN_FAKE_STAGE_MS=300");
    fake_wandb_faults f = { .delay_ms = 400 };
    fake_wandb_set_faults(fw, &f);
    svc_start(&s);
    char id[64];
    submit(NULL, "k9", id);
    double t0 = svc_now();
    for (;;) { /* wait until a file_stream request has been stored */
        cJSON *state = fake_wandb_state(fw);
        const cJSON *run = tc_find_run(state, id);
        int n = run ? cJSON_GetObjectItem(run, "file_stream_requests")->valueint : 0;
        cJSON_Delete(state);
        if (n >= 1) break;
        ck_assert_msg(svc_now() - t0 < 30, "no file_stream request arrived");
        usleep(20 * 1000);
    }
    ck_assert_int_eq(svc_stop(&s, SIGKILL), 128 + SIGKILL);
    fake_wandb_faults none = { 0 };
    fake_wandb_set_faults(fw, &none);
    svc_start(&s);
    wait_tracked(id, "succeeded", "finished");
    assert_delivered(id, 0);
    cJSON *state = fake_wandb_state(fw);
    ck_assert_int_gt(cJSON_GetObjectItem(tc_find_run(state, id), "rewrites")->valueint, 0);
    cJSON_Delete(state);
}
END_TEST

static void tracking_failed(const char *key, int auth_status, const char *needle)
{
    with_key(key);
    if (auth_status) {
        fake_wandb_faults f = { .auth_status = auth_status };
        snprintf(f.auth_message, sizeof f.auth_message, "%s", needle);
        fake_wandb_set_faults(fw, &f);
    }
    svc_start(&s);
    char id[64];
    submit(NULL, "auth", id);
    wait_tracked(id, "succeeded", "failed");
    const cJSON *w;
    cJSON *j = tracking_of(id, &w);
    ck_assert_msg(strstr(str(w, "last_error"), needle), "last_error: %s", str(w, "last_error"));
    cJSON_Delete(j);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    svc_resp r;
    svc_req(&s, "GET", path, NULL, NULL, &r);
    ck_assert_ptr_nonnull(strstr(r.body, "W&B tracking failed"));
    ck_assert_ptr_nonnull(strstr(r.body, needle));
    svc_resp_free(&r);
    ck_assert_int_eq(fake_wandb_request_count(fw), 1); /* no retry */
    ck_assert(!log_has_key());
}

START_TEST(unauthorized_401)
{
    tracking_failed("bad0123456789abcdefghijklmnopqrstuvwxyz0000", 0, "invalid API key");
}
END_TEST

START_TEST(forbidden_403)
{
    tracking_failed(KEY, 403, "permission denied on entity");
}
END_TEST

static char *spool_of(const char *output)
{
    char *p = malloc(4400);
    snprintf(p, 4400, "%s/%s/wandb/offline-run.jsonl", s.outputs, output);
    return p;
}

static int run_sync(const char *arg, const char *extra)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "WANDB_BASE_URL=%s WANDB_API_KEY=%s %s wandb-sync %s %s >%s/sync.out 2>&1",
             fake_wandb_url(fw), KEY, bn_test_build_path("cli/bitnetctl"), arg, extra ? extra : "",
             s.root);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(offline_then_sync_equals_online)
{
    svc_setenv(&s, "WANDB_MODE=offline");
    with_key(KEY);
    svc_start(&s);
    char off[64];
    submit(NULL, "off1", off);
    wait_tracked(off, "succeeded", "offline");
    ck_assert_int_eq(fake_wandb_request_count(fw), 0); /* zero HTTP requests */
    char *spool = spool_of("off1");
    ck_assert_int_eq(access(spool, R_OK), 0);
    char *txt = svc_read_file(spool);
    ck_assert_ptr_null(strstr(txt, KEY));
    free(txt);
    const cJSON *w;
    cJSON *j = tracking_of(off, &w);
    ck_assert_str_eq(str(w, "spool"), spool);
    cJSON_Delete(j);
    /* the same job, online */
    char on[64];
    submit("{\"wandb\":{\"mode\":\"online\"}}", "on2", on);
    wait_tracked(on, "succeeded", "finished");
    /* upload the spool by output folder, then again by job id (already synced) */
    char dir[4300];
    snprintf(dir, sizeof dir, "%s/off1", s.outputs);
    ck_assert_int_eq(run_sync(dir, NULL), 0);
    char url_arg[512];
    snprintf(url_arg, sizeof url_arg, "--url %s", s.url);
    ck_assert_int_eq(run_sync(off, url_arg), 0);
    char out[4300];
    snprintf(out, sizeof out, "%s/sync.out", s.root);
    txt = svc_read_file(out);
    ck_assert_ptr_nonnull(strstr(txt, "already synced"));
    free(txt);
    assert_delivered(on, 0);
    cJSON *state = fake_wandb_state(fw);
    tc_report rep;
    ck_assert_msg(tc_check_run(state, off, 0, &rep), "%s", rep.msg);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/metrics", off);
    cJSON *m = get_json(path);
    ck_assert_msg(tc_check_values(state, off, m, &rep), "%s", rep.msg);
    cJSON_Delete(m);
    if (!real_engine) { /* the stand-in engine is deterministic: identical runs */
        char *a = tc_canonical_run(tc_find_run(state, off));
        char *b = tc_canonical_run(tc_find_run(state, on));
        ck_assert_str_eq(a, b);
        free(a);
        free(b);
    }
    cJSON_Delete(state);
    free(spool);
}
END_TEST

START_TEST(disabled_sends_and_writes_nothing)
{
    with_key(KEY);
    svc_start(&s);
    char id[64];
    submit("{\"wandb\":{\"mode\":\"disabled\"}}", "dis1", id);
    ck_assert_str_eq(svc_wait(&s, id, 60), "succeeded");
    usleep(300 * 1000);
    ck_assert_int_eq(fake_wandb_request_count(fw), 0);
    char p[4300];
    snprintf(p, sizeof p, "%s/dis1/wandb", s.outputs);
    ck_assert_int_ne(access(p, F_OK), 0);
    const cJSON *w;
    cJSON *j = tracking_of(id, &w);
    ck_assert_str_eq(str(w, "status"), "disabled");
    cJSON_Delete(j);
}
END_TEST

/* The key from wandb.api_key_file (no WANDB_API_KEY), entity/project from WANDB_ENTITY
 * and WANDB_PROJECT. */
START_TEST(key_file_and_env_defaults)
{
    char kf[4300], flag[4400];
    snprintf(kf, sizeof kf, "%s/wandb.key", s.root);
    FILE *f = fopen(kf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "  %s  \n", KEY);
    fclose(f);
    snprintf(flag, sizeof flag, "wandb.api_key_file=%s", kf);
    svc_flag(&s, "--set");
    svc_flag(&s, flag);
    svc_setenv(&s, "WANDB_ENTITY=team-x");
    svc_setenv(&s, "WANDB_PROJECT=proj-y");
    svc_start(&s);
    char id[64];
    submit(NULL, "kf1", id);
    wait_tracked(id, "succeeded", "finished");
    assert_delivered(id, 0);
    cJSON *state = fake_wandb_state(fw);
    const cJSON *run = tc_find_run(state, id);
    ck_assert_str_eq(str(run, "entity"), "team-x");
    ck_assert_str_eq(str(run, "project"), "proj-y");
    cJSON_Delete(state);
    ck_assert(!log_has_key());
}
END_TEST

/* Every value of an object is a string starting with "synthetic"; at least min of them. */
static void all_synthetic(const cJSON *o, int min, const char *where)
{
    ck_assert_msg(cJSON_IsObject(o), "%s: no metric sources", where);
    int n = 0;
    for (const cJSON *it = o->child; it; it = it->next, n++)
        ck_assert_msg(cJSON_IsString(it) && !strncmp(it->valuestring, "synthetic", 9), "%s: %s = %s",
                      where, it->string, cJSON_IsString(it) ? it->valuestring : "?");
    ck_assert_msg(n >= min, "%s: %d sources", where, n);
}

/* Issue 13: a default job without calibration data calibrates on the synthetic templates,
 * does not fine-tune on them (a warning event, the skipped-fine-tune metrics), and every
 * perplexity says "synthetic" in the API, the metadata and the W&B run's config and
 * summary. Real engine only (the stand-in engine measures nothing). */
START_TEST(synthetic_text_labelled_everywhere)
{
    with_key(KEY);
    svc_start(&s);
    char id[64], body[8192];
    snprintf(body, sizeof body, "{\"model\":\"%s/real\",\"output\":\"syn\",\"config\":"
             "{\"calibration\":{\"samples\":8,\"sequence_length\":32},\"evaluate\":{\"windows\":2},"
             "\"fine_tune\":{\"threshold\":0,\"max_minutes\":0.05}},"
             "\"tracking\":{\"wandb\":{\"project\":\"syn\"}}}", s.models);
    long st = svc_submit(&s, body, NULL, id);
    ck_assert_msg(st == 202 || st == 201, "submit: HTTP %ld", st);
    wait_tracked(id, "succeeded", "finished");
    char path[4200 + 64];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    cJSON *ev = get_json(path);
    char *evs = cJSON_PrintUnformatted(ev);
    ck_assert_msg(strstr(evs, "fine-tuning skipped") && strstr(evs, "synthetic templates"), "%s", evs);
    free(evs);
    cJSON_Delete(ev);
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    cJSON *job = get_json(path);
    const cJSON *m = cJSON_GetObjectItem(job, "metrics");
    ck_assert(cJSON_GetObjectItem(m, "compression/fine_tune_epochs")->valuedouble == 0);
    all_synthetic(cJSON_GetObjectItem(job, "metric_sources"), 5, "API");
    for (const cJSON *it = m->child; it; it = it->next)
        if (strstr(it->string, "perplexity"))
            ck_assert_msg(cJSON_GetObjectItem(cJSON_GetObjectItem(job, "metric_sources"), it->string),
                          "API: %s has no source", it->string);
    cJSON_Delete(job);
    snprintf(path, sizeof path, "%s/syn/compression_metadata.json", s.outputs);
    char *md_text = svc_read_file(path);
    ck_assert_ptr_nonnull(md_text);
    cJSON *md = cJSON_Parse(md_text);
    free(md_text);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(md, "text"), "synthetic")));
    all_synthetic(cJSON_GetObjectItem(md, "metric_sources"), 5, "metadata");
    cJSON_Delete(md);
    cJSON *state = fake_wandb_state(fw);
    const cJSON *run = tc_find_run(state, id);
    ck_assert_ptr_nonnull(run);
    const cJSON *cfg = cJSON_GetObjectItem(run, "config");
    all_synthetic(cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "metric_sources"), "value"), 5, "W&B config");
    const cJSON *sl = cJSON_GetObjectItem(run, "summary");
    ck_assert(cJSON_IsString(sl));
    cJSON *summary = cJSON_Parse(sl->valuestring);
    all_synthetic(cJSON_GetObjectItem(summary, "metric_sources"), 5, "W&B summary");
    cJSON_Delete(summary);
    cJSON_Delete(state);
}
END_TEST

/* BN_TEST_ONLY=<name> runs one scenario (for debugging). */
#define ADD(tc, name)                                                  \
    do {                                                               \
        const char *only = getenv("BN_TEST_ONLY");                     \
        if (!only || !strcmp(only, #name)) tcase_add_test(tc, name);   \
    } while (0)

int main(void)
{
    Suite *su = suite_create("daemon_wandb");
    TCase *tc = tcase_create("daemon");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    ADD(tc, online_one_run_exactly_once);
    ADD(tc, down_for_the_whole_job);
    ADD(tc, thirty_percent_faults);
    ADD(tc, stored_then_500);
    ADD(tc, kill9_mid_delivery);
    ADD(tc, unauthorized_401);
    ADD(tc, forbidden_403);
    ADD(tc, offline_then_sync_equals_online);
    ADD(tc, disabled_sends_and_writes_nothing);
    ADD(tc, key_file_and_env_defaults);
    if (getenv("BN_TRACKER_REAL")) ADD(tc, synthetic_text_labelled_everywhere);
    suite_add_tcase(su, tc);
    return bn_test_run(su);
}
