/* test_recovery.c - crash and shutdown behaviour of a real bitnetd (stand-in engine):
 * kill -9 at several points of a running job then restart -> the job completes with the
 * same output bytes as an uninterrupted run and no .partial folder is left; SIGTERM ->
 * clean stop, the job is back in the queue and resumes; 500 submissions from 20
 * concurrent clients are persisted exactly once, also across a kill -9 mid-burst; a job
 * whose lease was taken stops before its next write. */
#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_test.h"
#include "svc.h"

static svc S;

static void setup(void)
{
    svc_init(&S, bn_test_build_path("tests/service/bitnetd-fake"));
}

static void teardown(void)
{
    svc_cleanup(&S);
}

static char *output_file(const char *out, const char *name)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s/%s", S.outputs, out, name);
    return svc_read_file(p);
}

static void assert_no_partial(void)
{
    DIR *d = opendir(S.outputs);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)))
        ck_assert_msg(!strstr(e->d_name, ".partial"), "left behind: %s", e->d_name);
    closedir(d);
}

static void run_to_end(const char *output, char id[64])
{
    char body[256];
    snprintf(body, sizeof body, "{\"model\":\"tiny\",\"output\":\"%s\",\"config\":{\"seed\":7}}",
             output);
    ck_assert_int_eq(svc_submit(&S, body, NULL, id), 201);
}

START_TEST(test_kill9_each_stage)
{
    svc_setenv(&S, "BN_FAKE_STAGE_MS=300");
    svc_start(&S);
    char ref[64];
    run_to_end("ref", ref);
    ck_assert_str_eq(svc_wait(&S, ref, 30), "succeeded");
    char *ref_meta = output_file("ref", "compression_metadata.json");
    char *ref_model = output_file("ref", "model.safetensors");
    ck_assert_ptr_nonnull(ref_meta);
    static const struct { const char *stage; int delay_ms; } points[] = {
        {"calibrate", 0}, {"quantize", 150}, {"finetune", 200}, {"export", 250},
    };
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
        char out[32], id[64];
        snprintf(out, sizeof out, "k-%s", points[i].stage);
        run_to_end(out, id);
        ck_assert(svc_wait_stage(&S, id, points[i].stage, 30));
        usleep((useconds_t)points[i].delay_ms * 1000);
        svc_stop(&S, SIGKILL);
        svc_start(&S);
        ck_assert_str_eq(svc_wait(&S, id, 30), "succeeded");
        ck_assert_str_eq(svc_job_field(&S, id, "attempts"), "1");
        char *meta = output_file(out, "compression_metadata.json");
        char *model = output_file(out, "model.safetensors");
        ck_assert_ptr_nonnull(meta);
        ck_assert_str_eq(meta, ref_meta);
        ck_assert_int_eq(memcmp(model, ref_model, 65536), 0);
        free(meta);
        free(model);
        assert_no_partial();
    }
    free(ref_meta);
    free(ref_model);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

START_TEST(test_sigterm_resume)
{
    svc_setenv(&S, "BN_FAKE_STAGE_MS=400");
    svc_start(&S);
    char id[64];
    run_to_end("st", id);
    ck_assert(svc_wait_stage(&S, id, "quantize", 30));
    double t0 = svc_now();
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
    ck_assert_msg(svc_now() - t0 < 5, "stop took %.1f s", svc_now() - t0);
    /* an API-only daemon shows the job back in the queue, not counted as a crash */
    svc_flag(&S, "--workers");
    svc_flag(&S, "0");
    svc_start(&S);
    ck_assert_str_eq(svc_job_field(&S, id, "status"), "queued");
    ck_assert_str_eq(svc_job_field(&S, id, "attempts"), "0");
    char wd[4400];
    snprintf(wd, sizeof wd, "%s/work/%s/stage-calibrate.json", S.state, id);
    ck_assert_int_eq(access(wd, F_OK), 0); /* checkpoints kept */
    svc_stop(&S, SIGTERM);
    S.n_extra = 0;
    svc_start(&S);
    ck_assert_str_eq(svc_wait(&S, id, 30), "succeeded");
    svc_resp r;
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_ptr_nonnull(strstr(r.body, "interrupted by shutdown"));
    ck_assert_ptr_nonnull(strstr(r.body, "resuming at quantize"));
    svc_resp_free(&r);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

/* ---- bursts ----------------------------------------------------------------------- */

#define CLIENTS 20
#define PER_CLIENT 25
#define TOTAL (CLIENTS * PER_CLIENT)

typedef struct burst {
    atomic_int accepted_total;
    atomic_bool stop_on_error;
    signed char accepted[TOTAL]; /* 1 = got 201/200, 0 = unknown/failed */
} burst;

typedef struct client_arg {
    burst *b;
    int client;
} client_arg;

static void *client(void *arg)
{
    client_arg *a = arg;
    for (int i = 0; i < PER_CLIENT; i++) {
        int k = a->client * PER_CLIENT + i;
        char body[128], key[32], id[64];
        snprintf(key, sizeof key, "b%03d", k);
        snprintf(body, sizeof body, "{\"model\":\"tiny\",\"output\":\"%s\"}", key);
        long st = svc_submit(&S, body, key, id);
        if (st == 201 || st == 200) {
            a->b->accepted[k] = 1;
            atomic_fetch_add(&a->b->accepted_total, 1);
        } else if (atomic_load(&a->b->stop_on_error)) {
            break;
        }
    }
    return NULL;
}

static void run_burst(burst *b)
{
    pthread_t t[CLIENTS];
    client_arg args[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        args[c] = (client_arg){b, c};
        pthread_create(&t[c], NULL, client, &args[c]);
    }
    for (int c = 0; c < CLIENTS; c++) pthread_join(t[c], NULL);
}

/* Counts rows per output name b000..b499 through the paginated list. */
static void count_rows(int counts[TOTAL], int *total)
{
    memset(counts, 0, sizeof(int) * TOTAL);
    *total = 0;
    char path[128] = "/v1/jobs?limit=200";
    for (;;) {
        svc_resp r;
        svc_req(&S, "GET", path, NULL, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        cJSON *j = cJSON_Parse(r.body);
        cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "jobs")) {
            const char *out = cJSON_GetObjectItem(it, "output")->valuestring;
            int k = atoi(out + 1);
            ck_assert(k >= 0 && k < TOTAL);
            counts[k]++;
            (*total)++;
        }
        cJSON *next = cJSON_GetObjectItem(j, "next_cursor");
        bool more = cJSON_IsString(next);
        if (more) snprintf(path, sizeof path, "/v1/jobs?limit=200&cursor=%s", next->valuestring);
        cJSON_Delete(j);
        svc_resp_free(&r);
        if (!more) break;
    }
}

START_TEST(test_burst_exactly_once)
{
    svc_flag(&S, "--workers");
    svc_flag(&S, "0");
    svc_start(&S);
    burst *b = calloc(1, sizeof *b);
    run_burst(b);
    ck_assert_int_eq(atomic_load(&b->accepted_total), TOTAL);
    int counts[TOTAL], total;
    count_rows(counts, &total);
    ck_assert_int_eq(total, TOTAL);
    for (int k = 0; k < TOTAL; k++) ck_assert_int_eq(counts[k], 1);
    free(b);
}
END_TEST

typedef struct killer_arg {
    burst *b;
    int after;
} killer_arg;

static void *killer(void *arg)
{
    killer_arg *k = arg;
    while (atomic_load(&k->b->accepted_total) < k->after) usleep(1000);
    kill(S.pid, SIGKILL);
    return NULL;
}

START_TEST(test_burst_kill9)
{
    svc_flag(&S, "--workers");
    svc_flag(&S, "0");
    svc_start(&S);
    burst *b = calloc(1, sizeof *b);
    atomic_store(&b->stop_on_error, true);
    killer_arg ka = {b, TOTAL / 3};
    pthread_t kt;
    pthread_create(&kt, NULL, killer, &ka);
    run_burst(b);
    pthread_join(kt, NULL);
    svc_stop(&S, SIGKILL); /* reap */
    int accepted = atomic_load(&b->accepted_total);
    ck_assert_int_ge(accepted, TOTAL / 3);
    ck_assert_int_lt(accepted, TOTAL);
    svc_start(&S);
    int counts[TOTAL], total;
    count_rows(counts, &total);
    for (int k = 0; k < TOTAL; k++) {
        ck_assert_int_le(counts[k], 1);                 /* never twice */
        if (b->accepted[k]) ck_assert_int_eq(counts[k], 1); /* never lost */
    }
    ck_assert_int_ge(total, accepted);
    /* clients retry everything with their keys: exactly TOTAL rows, each once */
    memset(b, 0, sizeof *b);
    run_burst(b);
    ck_assert_int_eq(atomic_load(&b->accepted_total), TOTAL);
    count_rows(counts, &total);
    ck_assert_int_eq(total, TOTAL);
    for (int k = 0; k < TOTAL; k++) ck_assert_int_eq(counts[k], 1);
    free(b);
}
END_TEST

/* A job whose lease another owner took (here: lease_owner changed in the database, as a
 * takeover by another host would) is stopped at the safe point before its next write:
 * the worker renews its lease first, learns it is lost, logs it and writes neither the
 * stage checkpoint nor anything after it. The stand-in engine runs quiet (progress only
 * at a stage's start), so nothing but the safe point can stop it before the write. */
START_TEST(test_stolen_lease_stops_before_write)
{
    svc_setenv(&S, "BN_FAKE_STAGE_MS=2000");
    svc_setenv(&S, "BN_FAKE_QUIET=1");
    svc_start(&S);
    char id[64];
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"stolen\"}", NULL, id),
                     201);
    ck_assert(svc_wait_stage(&S, id, "load", 10));
    char db[4200], ckpt[4400];
    snprintf(db, sizeof db, "%s/bitnetd.db", S.state);
    sqlite3 *h;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE jobs SET lease_owner = 'otherhost:1/w0' WHERE id = '%.40s'"
             " AND status = 'running'", id);
    ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_changes(h), 1);
    sqlite3_close(h);
    /* the load stage ends about 2 s after it began: its checkpoint is refused */
    char *log = NULL;
    double t0 = svc_now();
    while (svc_now() - t0 < 10) {
        free(log);
        log = svc_read_file(S.log);
        if (log && strstr(log, "leaving the job to its new owner")) break;
        usleep(50 * 1000);
    }
    ck_assert_msg(log && strstr(log, "lease lost; not writing checkpoint (load)"), "%s",
                  log ? log : "(no log)");
    free(log);
    snprintf(ckpt, sizeof ckpt, "%s/work/%s/stage-load.json", S.state, id);
    ck_assert_int_ne(access(ckpt, F_OK), 0);
    snprintf(ckpt, sizeof ckpt, "%s/stolen.partial", S.outputs);
    ck_assert_int_ne(access(ckpt, F_OK), 0);
    /* the job is the other owner's: still running, no event from the old one after it */
    ck_assert_str_eq(svc_job_field(&S, id, "status"), "running");
    ck_assert_str_eq(svc_job_field(&S, id, "lease_owner"), "otherhost:1/w0");
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    Suite *s = suite_create("recovery");
    TCase *tc = tcase_create("recovery");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 150);
    tcase_add_test(tc, test_kill9_each_stage);
    tcase_add_test(tc, test_sigterm_resume);
    tcase_add_test(tc, test_burst_exactly_once);
    tcase_add_test(tc, test_burst_kill9);
    tcase_add_test(tc, test_stolen_lease_stops_before_write);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    curl_global_cleanup();
    return rc;
}
