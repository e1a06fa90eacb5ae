/* test_tracker.c - the tracker thread over a real SQLite store and the fake W&B server.
 *
 * Jobs are produced through the store's own producer functions (job create/claim,
 * bn_store_metric_add, bn_store_job_finish), exactly as workers do; the tracker is driven
 * pass by pass (bn_tracker_step) or as its thread. Each scenario ends with the same
 * acceptance check of the server state (tracker_check.h).
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bn_store.h"
#include "bn_store_wandb.h"
#include "bn_test.h"
#include "fake_wandb.h"
#include "bn_pgtest.h"
#include "tracker.h"
#include "tracker_check.h"
#include "wandb.h"
#include "wandb_spool.h"

#define KEY "trk0123456789abcdefghijklmnopqrstuvwxyzKEY"

static fake_wandb *fw;
static char *dir;
static char db[4096];
static bn_store *st;

/* BN_TEST_STORE=postgresql (test 'tracker-pg'): the same tests on a real PostgreSQL
 * server started once per program, emptied before each test. */
static char *pgdir;
static char pgurl[1024];

static void pg_up(void)
{
    if (!bn_pgtest_wanted()) return;
    pgdir = bn_test_tmpdir("tracker-pg");
    if (!pgdir || bn_pgtest_start(pgdir, pgurl, sizeof pgurl)) exit(1);
}

static void pg_down(void)
{
    if (!pgdir) return;
    bn_pgtest_cmd(pgdir, "stop");
    bn_test_rmtree(pgdir);
    free(pgdir);
}

static void setup(void)
{
    fw = fake_wandb_start(0, KEY);
    ck_assert_ptr_nonnull(fw);
    dir = bn_test_tmpdir("tracker");
    ck_assert_ptr_nonnull(dir);
    if (pgdir) {
        ck_assert_int_eq(bn_pgtest_cmd(pgdir, "reset"), 0);
        snprintf(db, sizeof db, "%s", pgurl);
    } else {
        snprintf(db, sizeof db, "%s/bitnetd.db", dir);
    }
    char err[256];
    ck_assert_int_eq(bn_store_open(db, &st, err, sizeof err), BN_STORE_OK);
}

static void teardown(void)
{
    bn_store_close(st);
    fake_wandb_stop(fw);
    bn_test_rmtree(dir);
    free(dir);
}

static bn_tracker *open_tracker(const char *key)
{
    bn_tracker_config c = { .db_path = db, .base_url = fake_wandb_url(fw), .api_key = key,
                            .default_project = "bitnetd-test", .poll_ms = 20,
                            .heartbeat_ms = 600000, .min_interval_ms = 5,
                            .backoff_base_ms = 20, .backoff_cap_ms = 200, .timeout_ms = 5000,
                            .max_batch_lines = 7 };
    bn_tracker *t;
    char err[256];
    ck_assert_msg(bn_tracker_open(&c, &t, err, sizeof err) == 0, "%s", err);
    return t;
}

/* A running job (created + claimed). Returns its id in a static-per-call buffer. */
static void make_job(const char *mode, const char *tracking, const char *out, char id[BN_STORE_ID_LEN])
{
    char odir[4200];
    snprintf(odir, sizeof odir, "%s/%s", dir, out);
    bn_store_new_job nj = { .model = "/models/tiny", .output = out, .output_dir = odir,
                            .config = "{\"seed\":42,\"fine_tune\":{\"enabled\":true,\"lr\":0.001}}",
                            .tracking = tracking, .wandb_mode = mode };
    bn_store_job j;
    bool existed;
    ck_assert_int_eq(bn_store_job_create(st, &nj, &j, &existed), BN_STORE_OK);
    snprintf(id, BN_STORE_ID_LEN, "%s", j.id);
    bn_store_job_free(&j);
    bn_store_job c;
    ck_assert_int_eq(bn_store_job_claim(st, "w1", 600000, &c), BN_STORE_OK);
    ck_assert_str_eq(c.id, id);
    bn_store_job_free(&c);
}

/* What a job's stages report: the 19 job keys, 6 numeric phase keys, fine-tune steps. */
static void produce_metrics(const char *id, int from, int to)
{
    for (int k = from; k < to && k < 19; k++)
        ck_assert_int_eq(bn_store_metric_add(st, id, NULL, tc_job_keys[k], -1, 1.5 + k * 0.25), BN_STORE_OK);
    if (to >= 19 && from <= 19) {
        for (int s = 0; s < 4; s++) {
            ck_assert_int_eq(bn_store_metric_add(st, id, NULL, "fine_tune/loss", s, 3.0 - s * 0.5), BN_STORE_OK);
            ck_assert_int_eq(bn_store_metric_add(st, id, NULL, "fine_tune/learning_rate", s, 1e-3), BN_STORE_OK);
        }
        for (int k = 0; k < 8; k++) {
            if (!strcmp(tc_phase_keys[k], "phase/success") ||
                !strcmp(tc_phase_keys[k], "phase/quantization_method"))
                continue;
            ck_assert_int_eq(bn_store_metric_add(st, id, NULL, tc_phase_keys[k], -1, 10.0 + k), BN_STORE_OK);
        }
    }
}

static void finish(const char *id, bn_job_status s)
{
    ck_assert_int_eq(bn_store_job_finish(st, id, "w1", s, s == BN_JOB_SUCCEEDED ? NULL : "boom"),
                     BN_STORE_OK);
}

/* Runs passes until the job's run is no longer pending/active (or timeout_ms). */
static void drive(bn_tracker *t, const char *id, int timeout_ms)
{
    int64_t end = bn_tracker_monotonic_ms() + timeout_ms;
    for (;;) {
        int64_t now = bn_tracker_monotonic_ms(), next;
        ck_assert_int_ge(bn_tracker_step(t, now, &next), 0);
        bn_store_wandb_status s;
        ck_assert_int_eq(bn_store_wandb_status_get(st, id, &s), BN_STORE_OK);
        bool done = strcmp(s.status, "pending") && strcmp(s.status, "active");
        bn_store_wandb_status_free(&s);
        if (done) return;
        ck_assert_msg(now < end, "tracker did not finish job %s in %d ms", id, timeout_ms);
        int64_t wait = next - bn_tracker_monotonic_ms();
        if (wait > 50) wait = 50;
        if (wait > 0) usleep((useconds_t)wait * 1000);
    }
}

static void assert_run_ok(const char *id, int exitcode)
{
    cJSON *s = fake_wandb_state(fw);
    tc_report rep;
    bool ok = tc_check_run(s, id, exitcode, &rep) && tc_check_19(s, id, &rep);
    if (!ok) {
        char *txt = cJSON_Print(tc_find_run(s, id));
        fprintf(stderr, "run state: %s\n", txt ? txt : "(none)");
        free(txt);
    }
    ck_assert_msg(ok, "job %s: %s", id, rep.msg);
    ck_assert_int_eq(rep.fine_tune_rows, 4);
    cJSON_Delete(s);
}

static void assert_status(const char *id, const char *status, int64_t pending)
{
    bn_store_wandb_status s;
    ck_assert_int_eq(bn_store_wandb_status_get(st, id, &s), BN_STORE_OK);
    ck_assert_str_eq(s.status, status);
    ck_assert_int_eq(s.pending_rows, pending);
    bn_store_wandb_status_free(&s);
}

static bool has_event(const char *id, const char *needle)
{
    bn_store_event *ev;
    int n;
    ck_assert_int_eq(bn_store_events_list(st, id, 0, 1000, &ev, &n), BN_STORE_OK);
    bool found = false;
    for (int i = 0; i < n; i++)
        if (strstr(ev[i].message, needle)) found = true;
    bn_store_events_free(ev, n);
    return found;
}

/* ---- scenarios ----------------------------------------------------------------------- */

/* Metric sources recorded by the job reach the W&B run: its config (a second upsert of
 * the same run before the final batch) and its summary. */
START_TEST(metric_sources_in_config_and_summary)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{\"wandb\":{}}", "src", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 30);
    ck_assert_int_eq(bn_store_metric_source_set(st, id, NULL, "compression/pre_perplexity",
                                                "synthetic (report split)"), BN_STORE_OK);
    ck_assert_int_eq(bn_store_metric_source_set(st, id, NULL, "compression/pre_perplexity",
                                                "file:a.txt (report split)"), BN_STORE_OK);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 2000);
    assert_run_ok(id, 0);
    cJSON *s = fake_wandb_state(fw);
    const cJSON *run = tc_find_run(s, id);
    ck_assert_int_eq(cJSON_GetObjectItem(run, "upserts")->valueint, 2);
    const cJSON *ms = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(run, "config"),
                                                               "metric_sources"), "value");
    ck_assert_str_eq(cJSON_GetObjectItem(ms, "compression/pre_perplexity")->valuestring,
                     "file:a.txt (report split)");
    cJSON *sum = cJSON_Parse(cJSON_GetObjectItem(run, "summary")->valuestring);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(sum, "metric_sources"),
                                         "compression/pre_perplexity")->valuestring,
                     "file:a.txt (report split)");
    cJSON_Delete(sum);
    cJSON_Delete(s);
    bn_tracker_close(t);
}
END_TEST

START_TEST(online_exactly_once)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{\"wandb\":{\"entity\":\"team\",\"tags\":[\"a\",\"b\"],\"group\":\"g1\"}}", "o1", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 7);
    int64_t next;
    ck_assert_int_gt(bn_tracker_step(t, bn_tracker_monotonic_ms(), &next), 0);
    for (int i = 0; i < 3; i++) { /* idle passes: nothing to send, no heartbeat due */
        usleep(20 * 1000);
        ck_assert_int_eq(bn_tracker_step(t, bn_tracker_monotonic_ms(), &next), 0);
    }
    produce_metrics(id, 7, 30);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 2000); /* new rows do not wait for the (10 min) heartbeat */
    assert_run_ok(id, 0);
    assert_status(id, "finished", 0);
    /* nothing more is sent for a finished run */
    int before = fake_wandb_request_count(fw);
    for (int i = 0; i < 3; i++) bn_tracker_step(t, bn_tracker_monotonic_ms() + 100000 * i, &next);
    ck_assert_int_eq(fake_wandb_request_count(fw), before);

    cJSON *s = fake_wandb_state(fw);
    const cJSON *run = tc_find_run(s, id);
    ck_assert_str_eq(cJSON_GetObjectItem(run, "entity")->valuestring, "team");
    ck_assert_str_eq(cJSON_GetObjectItem(run, "project")->valuestring, "bitnetd-test");
    ck_assert_int_eq(cJSON_GetObjectItem(run, "upserts")->valueint, 1);
    const cJSON *vars = cJSON_GetArrayItem(cJSON_GetObjectItem(run, "upsert_variables"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(vars, "groupName")->valuestring, "g1");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(vars, "tags")), 2);
    ck_assert_str_eq(cJSON_GetObjectItem(vars, "displayName")->valuestring, "o1");
    const cJSON *cfg = cJSON_GetObjectItem(run, "config");
    ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "seed"), "value")->valueint, 42);
    /* fine-tune rows keep their own step */
    const cJSON *h = cJSON_GetObjectItem(run, "history");
    bool saw_ft_step = false;
    for (const cJSON *l = h->child; l; l = l->next)
        if (strstr(l->valuestring, "\"fine_tune/step\":3")) saw_ft_step = true;
    ck_assert(saw_ft_step);
    /* batches were split (max 7 lines) with contiguous offsets, so several requests */
    ck_assert_int_ge(cJSON_GetObjectItem(run, "file_stream_requests")->valueint, 5);
    cJSON_Delete(s);

    bn_store_wandb_status ws;
    ck_assert_int_eq(bn_store_wandb_status_get(st, id, &ws), BN_STORE_OK);
    ck_assert_ptr_nonnull(ws.run_url);
    ck_assert_ptr_nonnull(strstr(ws.run_url, "/team/bitnetd-test/runs/"));
    ck_assert_int_eq(ws.delivered_rows, 19 + 8 + 6 + 2);
    bn_store_wandb_status_free(&ws);
    ck_assert(has_event(id, "W&B run"));
    bn_store_wandb_stats stats;
    ck_assert_int_eq(bn_store_wandb_stats_get(st, &stats), BN_STORE_OK);
    ck_assert_int_eq(stats.backlog_rows, 0);
    ck_assert_int_eq(stats.runs_finished, 1);
    ck_assert_int_eq(stats.delivered_rows, 35);
    bn_tracker_close(t);
}
END_TEST

START_TEST(thirty_percent_faults)
{
    fake_wandb_faults f = { .fail_percent = 30, .retry_after_s = 1, .seed = 7 };
    fake_wandb_set_faults(fw, &f);
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "f1", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 30);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 20000);
    assert_run_ok(id, 0);
    cJSON *s = fake_wandb_state(fw);
    ck_assert_int_gt(cJSON_GetObjectItem(s, "faults_injected")->valueint, 0);
    cJSON_Delete(s);
    bn_tracker_counters c;
    bn_tracker_get_counters(t, &c);
    ck_assert_int_gt(c.retries, 0);
    bn_tracker_close(t);
}
END_TEST

START_TEST(store_then_fail)
{
    fake_wandb_faults f = { .store_then_fail_percent = 50, .seed = 3 };
    fake_wandb_set_faults(fw, &f);
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "s1", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 30);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 20000);
    assert_run_ok(id, 0);
    cJSON *s = fake_wandb_state(fw);
    ck_assert_int_gt(cJSON_GetObjectItem(tc_find_run(s, id), "rewrites")->valueint, 0);
    cJSON_Delete(s);
    bn_tracker_close(t);
}
END_TEST

START_TEST(down_for_the_whole_job)
{
    ck_assert_int_eq(fake_wandb_set_down(fw, true), 0);
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "d1", id);
    bn_tracker *t = open_tracker(KEY);
    int64_t next;
    for (int i = 0; i < 5; i++) {
        produce_metrics(id, i * 6, i * 6 + 6);
        bn_tracker_step(t, bn_tracker_monotonic_ms(), &next);
        usleep(30000);
    }
    produce_metrics(id, 30, 31);
    finish(id, BN_JOB_SUCCEEDED);
    for (int i = 0; i < 5; i++) {
        bn_tracker_step(t, bn_tracker_monotonic_ms(), &next);
        usleep(30000);
    }
    bn_store_wandb_status ws;
    ck_assert_int_eq(bn_store_wandb_status_get(st, id, &ws), BN_STORE_OK);
    ck_assert_str_eq(ws.status, "pending");
    ck_assert_int_eq(ws.pending_rows, 35);
    ck_assert_ptr_nonnull(ws.last_error);
    ck_assert_ptr_nonnull(strstr(ws.last_error, "UpsertBucket"));
    bn_store_wandb_status_free(&ws);
    bn_store_wandb_stats stats;
    ck_assert_int_eq(bn_store_wandb_stats_get(st, &stats), BN_STORE_OK);
    ck_assert_int_eq(stats.backlog_rows, 35);
    ck_assert_int_eq(fake_wandb_set_down(fw, false), 0);
    drive(t, id, 10000);
    assert_run_ok(id, 0);
    ck_assert_int_eq(bn_store_wandb_stats_get(st, &stats), BN_STORE_OK);
    ck_assert_int_eq(stats.backlog_rows, 0);
    bn_tracker_close(t);
}
END_TEST

/* A tracker that dies after the server stored a batch but before it acknowledged it: a
 * fresh tracker (new memory, same store) re-sends identical lines at the same offsets. */
START_TEST(restart_mid_delivery)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "k1", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 12);
    fake_wandb_queue(fw, "file_stream", 0, NULL, 0, true, 2); /* store, then drop */
    int64_t next;
    bn_tracker_step(t, bn_tracker_monotonic_ms(), &next);
    bn_tracker_close(t); /* "killed": its in-memory schedule is gone */
    produce_metrics(id, 12, 30);
    finish(id, BN_JOB_SUCCEEDED);
    t = open_tracker(KEY);
    drive(t, id, 10000);
    assert_run_ok(id, 0);
    cJSON *s = fake_wandb_state(fw);
    ck_assert_int_gt(cJSON_GetObjectItem(tc_find_run(s, id), "rewrites")->valueint, 0);
    cJSON_Delete(s);
    bn_tracker_close(t);
}
END_TEST

START_TEST(failed_job_exitcode_one)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "x1", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 30);
    finish(id, BN_JOB_FAILED);
    drive(t, id, 10000);
    assert_run_ok(id, 1);
    bn_tracker_close(t);
}
END_TEST

static void expect_tracking_failed(const char *id, const char *needle)
{
    bn_store_wandb_status ws;
    ck_assert_int_eq(bn_store_wandb_status_get(st, id, &ws), BN_STORE_OK);
    ck_assert_str_eq(ws.status, "failed");
    ck_assert_ptr_nonnull(ws.last_error);
    ck_assert_msg(strstr(ws.last_error, needle), "last_error: %s", ws.last_error);
    bn_store_wandb_status_free(&ws);
    ck_assert(has_event(id, "W&B tracking failed"));
    ck_assert(has_event(id, needle));
    bn_store_job j;
    ck_assert_int_eq(bn_store_job_get(st, id, &j), BN_STORE_OK);
    ck_assert_int_eq(j.status, BN_JOB_SUCCEEDED); /* the job is not affected */
    bn_store_job_free(&j);
}

START_TEST(unauthorized_fails_tracking_only)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "a1", id);
    bn_tracker *t = open_tracker("wrong0123456789abcdefghijklmnopqrstuvwxyz");
    produce_metrics(id, 0, 30);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 5000);
    expect_tracking_failed(id, "invalid API key");
    /* no retry after a 401 */
    int n = fake_wandb_request_count(fw);
    ck_assert_int_eq(n, 1);
    int64_t next;
    bn_tracker_step(t, bn_tracker_monotonic_ms() + 1000000, &next);
    ck_assert_int_eq(fake_wandb_request_count(fw), 1);
    bn_tracker_close(t);
}
END_TEST

START_TEST(forbidden_mid_stream)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "a2", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 5);
    int64_t next;
    bn_tracker_step(t, bn_tracker_monotonic_ms(), &next);
    fake_wandb_faults f = { .auth_status = 403 };
    snprintf(f.auth_message, sizeof f.auth_message, "permission denied");
    fake_wandb_set_faults(fw, &f);
    produce_metrics(id, 5, 30);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 5000);
    expect_tracking_failed(id, "permission denied");
    bn_tracker_close(t);
}
END_TEST

START_TEST(conflict_409_is_fatal_on_file_stream)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "c1", id);
    bn_tracker *t = open_tracker(KEY);
    fake_wandb_queue(fw, "graphql", 409, NULL, 0, false, 1); /* UpsertBucket 409: retried */
    fake_wandb_queue(fw, "file_stream", 409, "{\"error\":\"offset conflict\"}", 0, false, 1);
    produce_metrics(id, 0, 30);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 5000);
    expect_tracking_failed(id, "offset conflict");
    bn_tracker_close(t);
}
END_TEST

START_TEST(one_failed_job_does_not_block_another)
{
    char a[BN_STORE_ID_LEN], b[BN_STORE_ID_LEN];
    make_job("online", "{}", "m1", a);
    produce_metrics(a, 0, 30);
    finish(a, BN_JOB_SUCCEEDED);
    make_job("online", "{}", "m2", b);
    produce_metrics(b, 0, 30);
    finish(b, BN_JOB_SUCCEEDED);
    fake_wandb_queue(fw, "graphql", 403,
                     "{\"errors\":[{\"message\":\"permission denied\"}],\"data\":{\"upsertBucket\":null}}",
                     0, false, 1);
    bn_tracker *t = open_tracker(KEY);
    drive(t, a, 5000);
    drive(t, b, 10000);
    expect_tracking_failed(a, "permission denied");
    assert_run_ok(b, 0);
    bn_store_wandb_stats stats;
    ck_assert_int_eq(bn_store_wandb_stats_get(st, &stats), BN_STORE_OK);
    ck_assert_int_eq(stats.runs_failed, 1);
    ck_assert_int_eq(stats.runs_finished, 1);
    ck_assert_int_eq(stats.backlog_rows, 0); /* a failed run's rows are not a backlog */
    bn_tracker_close(t);
}
END_TEST

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = '\0';
    fclose(f);
    return b;
}

START_TEST(offline_spool_then_sync)
{
    char id[BN_STORE_ID_LEN], on[BN_STORE_ID_LEN];
    make_job("offline", "{\"wandb\":{\"project\":\"p-off\"}}", "off1", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 30);
    int64_t next;
    bn_tracker_step(t, bn_tracker_monotonic_ms(), &next); /* job still running: nothing yet */
    char spool[4300];
    snprintf(spool, sizeof spool, "%s/off1/wandb/offline-run.jsonl", dir);
    ck_assert_int_ne(access(spool, F_OK), 0);
    char folder[4200];
    snprintf(folder, sizeof folder, "%s/off1", dir);
    ck_assert_int_eq(mkdir(folder, 0755), 0); /* what the export stage leaves */
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 5000);
    assert_status(id, "offline", 0);
    ck_assert_int_eq(fake_wandb_request_count(fw), 0); /* zero HTTP requests */
    ck_assert_int_eq(access(spool, R_OK), 0);
    char *txt = read_file(spool);
    ck_assert_ptr_null(strstr(txt, KEY)); /* the key is never written */
    ck_assert_ptr_nonnull(strstr(txt, "\"type\":\"run\""));
    free(txt);
    ck_assert(has_event(id, "offline spool written"));

    /* the same job online, for comparison */
    make_job("online", "{\"wandb\":{\"project\":\"p-off\"}}", "on1", on);
    produce_metrics(on, 0, 30);
    finish(on, BN_JOB_SUCCEEDED);
    drive(t, on, 10000);
    bn_tracker_close(t);

    bn_wandb_client_opts o = { .base_url = fake_wandb_url(fw), .api_key = KEY };
    bn_wandb_client *cl = bn_wandb_client_new(&o);
    bn_wandb_sync_opts so = { .backoff_base_ms = 10, .backoff_cap_ms = 50 };
    bn_wandb_sync_report rep;
    char err[512];
    fake_wandb_faults f = { .fail_percent = 30, .seed = 11 };
    fake_wandb_set_faults(fw, &f);
    ck_assert_msg(bn_wandb_sync_spool(cl, spool, &so, &rep, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_nonnull(strstr(rep.run_url, "/fake-entity/p-off/runs/"));
    assert_run_ok(id, 0);
    cJSON *s = fake_wandb_state(fw);
    char *c_off = tc_canonical_run(tc_find_run(s, id));
    char *c_on = tc_canonical_run(tc_find_run(s, on));
    ck_assert_str_eq(c_off, c_on); /* same server state as online */
    free(c_off);
    free(c_on);
    cJSON_Delete(s);
    /* a second sync is a no-op; a forced one only rewrites identical lines */
    int before = fake_wandb_request_count(fw);
    ck_assert_int_eq(bn_wandb_sync_spool(cl, spool, &so, &rep, err, sizeof err), 0);
    ck_assert(rep.already_synced);
    ck_assert_int_eq(fake_wandb_request_count(fw), before);
    so.force = true;
    ck_assert_msg(bn_wandb_sync_spool(cl, spool, &so, &rep, err, sizeof err) == 0, "%s", err);
    s = fake_wandb_state(fw);
    ck_assert_int_eq(cJSON_GetObjectItem(tc_find_run(s, id), "conflicts")->valueint, 0);
    ck_assert_int_eq(cJSON_GetObjectItem(tc_find_run(s, id), "completes")->valueint, 1);
    cJSON_Delete(s);
    bn_wandb_client_free(cl);
}
END_TEST

/* A failed job leaves no output folder: its spool goes beside it, never inside. */
START_TEST(offline_failed_job_spools_beside)
{
    char id[BN_STORE_ID_LEN];
    make_job("offline", "{}", "offf", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 10);
    finish(id, BN_JOB_FAILED);
    drive(t, id, 5000);
    assert_status(id, "offline", 0);
    char folder[4300], beside[4400];
    snprintf(folder, sizeof folder, "%s/offf", dir);
    snprintf(beside, sizeof beside, "%s/offf.wandb-offline.jsonl", dir);
    ck_assert_int_ne(access(folder, F_OK), 0);
    ck_assert_int_eq(access(beside, R_OK), 0);
    char found[4400];
    ck_assert_int_eq(bn_wandb_spool_find(folder, found, sizeof found), 0);
    ck_assert_str_eq(found, beside);
    bn_wandb_client_opts o = { .base_url = fake_wandb_url(fw), .api_key = KEY };
    bn_wandb_client *cl = bn_wandb_client_new(&o);
    bn_wandb_sync_opts so = { .backoff_base_ms = 10, .backoff_cap_ms = 50 };
    bn_wandb_sync_report rep;
    char err[512];
    ck_assert_msg(bn_wandb_sync_spool(cl, beside, &so, &rep, err, sizeof err) == 0, "%s", err);
    cJSON *s = fake_wandb_state(fw);
    tc_report r;
    ck_assert_msg(tc_check_run(s, id, 1, &r), "%s", r.msg);
    cJSON_Delete(s);
    bn_wandb_client_free(cl);
    bn_tracker_close(t);
}
END_TEST

START_TEST(disabled_sends_and_writes_nothing)
{
    char id[BN_STORE_ID_LEN];
    make_job("disabled", "{}", "dis1", id);
    bn_tracker *t = open_tracker(KEY);
    produce_metrics(id, 0, 30);
    finish(id, BN_JOB_SUCCEEDED);
    int64_t next;
    for (int i = 0; i < 3; i++) bn_tracker_step(t, bn_tracker_monotonic_ms(), &next);
    ck_assert_int_eq(fake_wandb_request_count(fw), 0);
    int64_t n;
    ck_assert_int_eq(bn_store_outbox_count(st, id, NULL, &n), BN_STORE_OK);
    ck_assert_int_eq(n, 0);
    char p[4200];
    snprintf(p, sizeof p, "%s/dis1/wandb", dir);
    ck_assert_int_ne(access(p, F_OK), 0);
    assert_status(id, "disabled", 0);
    bn_tracker_close(t);
}
END_TEST

START_TEST(heartbeat_while_idle_and_thread)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "hb1", id);
    bn_tracker_config c = { .db_path = db, .base_url = fake_wandb_url(fw), .api_key = KEY,
                            .poll_ms = 10, .heartbeat_ms = 60, .min_interval_ms = 5,
                            .backoff_base_ms = 20, .backoff_cap_ms = 100 };
    bn_tracker *t;
    char err[256];
    ck_assert_int_eq(bn_tracker_open(&c, &t, err, sizeof err), 0);
    ck_assert_int_eq(bn_tracker_start(t), 0);
    produce_metrics(id, 0, 3);
    bn_tracker_wake(t);
    usleep(400 * 1000);
    cJSON *s = fake_wandb_state(fw);
    ck_assert_int_ge(cJSON_GetObjectItem(tc_find_run(s, id), "heartbeats")->valueint, 2);
    cJSON_Delete(s);
    produce_metrics(id, 3, 30);
    finish(id, BN_JOB_SUCCEEDED);
    bn_tracker_wake(t);
    for (int i = 0; i < 200; i++) {
        bn_store_wandb_status ws;
        ck_assert_int_eq(bn_store_wandb_status_get(st, id, &ws), BN_STORE_OK);
        bool done = !strcmp(ws.status, "finished");
        bn_store_wandb_status_free(&ws);
        if (done) break;
        usleep(20 * 1000);
    }
    usleep(200 * 1000); /* no heartbeat after the complete */
    ck_assert_int_gt(bn_tracker_last_pass_ms(t), 0);
    ck_assert(bn_tracker_alive(t));
    bn_tracker_stop(t);
    ck_assert(!bn_tracker_alive(t));
    assert_run_ok(id, 0);
    bn_tracker_close(t);
}
END_TEST

START_TEST(no_key_fails_tracking)
{
    char id[BN_STORE_ID_LEN];
    make_job("online", "{}", "nk1", id);
    bn_tracker *t = open_tracker(NULL);
    produce_metrics(id, 0, 30);
    finish(id, BN_JOB_SUCCEEDED);
    drive(t, id, 5000);
    expect_tracking_failed(id, "no W&B API key");
    ck_assert_int_eq(fake_wandb_request_count(fw), 0);
    bn_tracker_close(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tracker");
    TCase *tc = tcase_create("tracker");
    tcase_add_unchecked_fixture(tc, pg_up, pg_down);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, online_exactly_once);
    tcase_add_test(tc, metric_sources_in_config_and_summary);
    tcase_add_test(tc, thirty_percent_faults);
    tcase_add_test(tc, store_then_fail);
    tcase_add_test(tc, down_for_the_whole_job);
    tcase_add_test(tc, restart_mid_delivery);
    tcase_add_test(tc, failed_job_exitcode_one);
    tcase_add_test(tc, unauthorized_fails_tracking_only);
    tcase_add_test(tc, forbidden_mid_stream);
    tcase_add_test(tc, conflict_409_is_fatal_on_file_stream);
    tcase_add_test(tc, one_failed_job_does_not_block_another);
    tcase_add_test(tc, offline_spool_then_sync);
    tcase_add_test(tc, offline_failed_job_spools_beside);
    tcase_add_test(tc, disabled_sends_and_writes_nothing);
    tcase_add_test(tc, heartbeat_while_idle_and_thread);
    tcase_add_test(tc, no_key_fails_tracking);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
