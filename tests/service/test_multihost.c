/* test_multihost.c - three bitnetd processes on loopback ports share one real PostgreSQL
 * queue and one output root (issue 17's acceptance).
 *
 * real_engine_thirty_jobs: the real bitnetd, 30 jobs on stories260K (calibration on the
 * TinyStories text of the test data, short evaluation, a few fine-tuning steps: every
 * stage runs and all 19 metrics are produced), every daemon posting to one fake W&B.
 * Host 1 is killed with -9 twice in the middle of a job (once during fine-tuning when it
 * can be caught there) and restarted; PostgreSQL restarts once mid-run. Then: every job
 * succeeded, finished once (one "succeeded" line across all hosts' logs), one "started
 * on" event per attempt; in each job's event log no event comes from an earlier
 * attempt's owner once a newer attempt started (no stage ran on two hosts at once), and
 * at least one job was taken over; the fake W&B holds one run per job with each of the
 * 19 metrics exactly once (offsets as W&B counts them: a chunk re-sent at an offset it
 * already has counts once, a conflicting rewrite fails).
 *
 * stand_in_cancel_and_sse: the daemon on the stand-in engine (stages only sleep): a
 * cancel sent to another host than the one running the job stops it, an event stream
 * from one host shows the events a job writes on another (with their host), and the
 * queue gauges of /metrics count every host's jobs.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_pgtest.h"
#include "bn_test.h"
#include "fake_wandb.h"
#include "svc.h"
#include "tracker_check.h"

#define HOSTS 3
#define JOBS 30
#define KEY "mh0123456789abcdefghijklmnopqrstuvwxyzKEY"

static svc H[HOSTS];
static char *pgdir;
static char pgurl[1024];
static fake_wandb *fw;
static char env_url[256], env_key[256];

static void pg_setup(void)
{
    pgdir = bn_test_tmpdir("multihost-pg");
    ck_assert_ptr_nonnull(pgdir);
    ck_assert_int_eq(bn_pgtest_start(pgdir, pgurl, sizeof pgurl), 0);
}

static void teardown(void)
{
    for (int i = 0; i < HOSTS; i++) svc_cleanup(&H[i]);
    if (pgdir) {
        bn_pgtest_cmd(pgdir, "stop");
        bn_test_rmtree(pgdir);
        free(pgdir);
        pgdir = NULL;
    }
    if (fw) fake_wandb_stop(fw);
    fw = NULL;
}

/* Three daemons of binary on the one database; hosts 1 and 2 use host 0's output root
 * (and so its checkpoint folders). */
static void hosts_init(const char *binary, int lease_s)
{
    for (int i = 0; i < HOSTS; i++) {
        svc_init(&H[i], bn_test_build_path(binary));
        char flag[4200];
        snprintf(flag, sizeof flag, "--store=%s", pgurl);
        svc_flag(&H[i], flag);
        snprintf(flag, sizeof flag, "--jobs.lease-seconds=%d", lease_s);
        svc_flag(&H[i], flag);
        if (i > 0) {
            snprintf(flag, sizeof flag, "--output-root=%s", H[0].outputs);
            svc_flag(&H[i], flag);
        }
    }
}

/* Which host runs the job now (-1 when none), from its lease owner "host:pid/wN". */
static int host_of_owner(const char *owner)
{
    if (!owner || !*owner) return -1;
    for (int i = 0; i < HOSTS; i++) {
        char pfx[64];
        snprintf(pfx, sizeof pfx, ":%d/", (int)H[i].pid);
        if (H[i].pid && strstr(owner, pfx)) return i;
    }
    return -1;
}

static int running_host(const char *id)
{
    return host_of_owner(svc_job_field(&H[0], id, "lease_owner"));
}

static cJSON *get_json(int host, const char *path)
{
    svc_resp r;
    svc_req(&H[host], "GET", path, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "GET %s: %ld", path, r.status);
    cJSON *j = cJSON_Parse(r.body);
    svc_resp_free(&r);
    ck_assert_ptr_nonnull(j);
    return j;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* ---- the real engine, 30 jobs --------------------------------------------------------- */

/* Short but complete: every stage runs and every one of the 19 metrics is measured. */
static const char job_config[] =
    "{\"seed\":7,\"threads\":1,"
    "\"calibration\":{\"dataset\":\"custom\",\"path\":\"%s\",\"samples\":8,"
    "\"sequence_length\":32,\"batch_size\":4},"
    "\"evaluate\":{\"windows\":2},"
    "\"fine_tune\":{\"threshold\":-1,\"max_steps\":6,\"batch_size\":2,\"sequence_length\":32,"
    "\"checkpoint_every\":2,\"patience\":0}}";

/* A job of host 1 in one of the given stages (NULL: any stage after load): its index. */
static int busy_on_host1(char ids[][64], const char *stage)
{
    cJSON *l = get_json(0, "/v1/jobs?status=running&limit=100");
    int found = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(l, "jobs")) {
        if (host_of_owner(jstr(it, "lease_owner")) != 1) continue;
        const char *st = jstr(it, "stage");
        if (!st || (stage ? strcmp(st, stage) != 0 : strcmp(st, "load") == 0)) continue;
        for (int j = 0; j < JOBS && found < 0; j++)
            if (!strcmp(ids[j], jstr(it, "id"))) found = j;
    }
    cJSON_Delete(l);
    return found;
}

/* Checks one job's event log: one "started on" per attempt; after an attempt started,
 * no event comes from any other owner (an older attempt's host writes nothing more).
 * Returns the number of distinct owners that ran it. */
static int check_events(const char *id, int attempts)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/jobs/%.64s/events?limit=10000", id);
    cJSON *j = get_json(2, path);
    const char *current = NULL;
    char owners[8][128];
    int n_owners = 0, started = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "events")) {
        const char *host = jstr(e, "host"), *msg = jstr(e, "message");
        if (msg && !strncmp(msg, "started on ", 11)) {
            ck_assert_ptr_nonnull(host);
            ck_assert_msg(!strncmp(msg + 11, host, strlen(host)), "%s: %s by %s", id, msg, host);
            current = host;
            started++;
            bool seen = false;
            for (int k = 0; k < n_owners; k++) seen |= !strcmp(owners[k], host);
            if (!seen && n_owners < 8) snprintf(owners[n_owners++], sizeof owners[0], "%s", host);
            continue;
        }
        if (!host) continue; /* the tracker's events */
        ck_assert_msg(current && !strcmp(host, current),
                      "job %s: event %lld (\"%s\") by %s while attempt of %s runs", id,
                      (long long)cJSON_GetObjectItemCaseSensitive(e, "seq")->valuedouble,
                      msg ? msg : "", host, current ? current : "nobody");
    }
    ck_assert_msg(started == attempts + 1, "job %s: %d starts for %d attempts", id, started,
                  attempts + 1);
    cJSON_Delete(j);
    return n_owners;
}

/* Diagnostics of a failed check: the job's events and every log line naming it. */
static void dump_job(const char *id, char *const *logs)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/jobs/%.64s/events?limit=10000", id);
    svc_resp r;
    svc_req(&H[0], "GET", path, NULL, NULL, &r);
    fprintf(stderr, "events of %s: %s\n", id, r.body ? r.body : "");
    svc_resp_free(&r);
    for (int i = 0; i < HOSTS; i++)
        for (const char *l = logs[i]; l && *l;) {
            const char *e = strchr(l, '\n');
            size_t n = e ? (size_t)(e - l) : strlen(l);
            char line[2048];
            snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line - 1 ? n : sizeof line - 1), l);
            if (strstr(line, id) || strstr(line, "postgres") || strstr(line, "store"))
                fprintf(stderr, "host %d: %s\n", i, line);
            l = e ? e + 1 : l + n;
        }
}

static void wait_tracking_finished(const char *id)
{
    double t0 = svc_now();
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%.64s", id);
    for (;;) {
        cJSON *j = get_json(0, path);
        const char *st = jstr(cJSON_GetObjectItemCaseSensitive(
                                  cJSON_GetObjectItemCaseSensitive(j, "tracking"), "wandb"),
                              "status");
        bool done = st && strcmp(st, "pending") && strcmp(st, "active");
        if (done) ck_assert_msg(!strcmp(st, "finished"), "job %s: tracking %s", id, st);
        cJSON_Delete(j);
        if (done) return;
        ck_assert_msg(svc_now() - t0 < 90, "job %s: tracking still %s", id, st ? st : "?");
        usleep(100 * 1000);
    }
}

START_TEST(real_engine_thirty_jobs)
{
    double t_start = svc_now();
    pg_setup();
    fw = fake_wandb_start(0, KEY);
    ck_assert_ptr_nonnull(fw);
    snprintf(env_url, sizeof env_url, "WANDB_BASE_URL=%s", fake_wandb_url(fw));
    snprintf(env_key, sizeof env_key, "WANDB_API_KEY=%s", KEY);
    char data_root[4096], model[4200], text[4200];
    ck_assert_ptr_nonnull(realpath(bn_test_data(""), data_root));
    snprintf(model, sizeof model, "%s/stories260K-hf", data_root);
    snprintf(text, sizeof text, "%s/corpora/tinystories_eval.txt", data_root);
    hosts_init("daemon/bitnetd", 4);
    for (int i = 0; i < HOSTS; i++) {
        char flag[4200];
        snprintf(flag, sizeof flag, "--model-root=%s", data_root);
        svc_flag(&H[i], flag);
        svc_flag(&H[i], "--threads=1");
        svc_flag(&H[i], "--set=wandb.min_interval_ms=10");
        svc_flag(&H[i], "--set=wandb.backoff_base_ms=50");
        svc_flag(&H[i], "--set=wandb.backoff_cap_ms=500");
        svc_setenv(&H[i], env_url);
        svc_setenv(&H[i], env_key);
        svc_start(&H[i]);
    }
    char cfg[8192], body[16384];
    snprintf(cfg, sizeof cfg, job_config, text);
    static char ids[JOBS][64];
    for (int j = 0; j < JOBS; j++) {
        snprintf(body, sizeof body, "{\"model\":\"%s\",\"output\":\"r%02d\",\"config\":%s,"
                 "\"tracking\":{\"wandb\":{\"project\":\"multihost\"}}}", model, j, cfg);
        ck_assert_int_eq(svc_submit(&H[j % HOSTS], body, NULL, ids[j]), 201);
    }

    /* host 1 dies twice in the middle of a job (first in fine-tuning if it can be caught
     * there); PostgreSQL restarts once in between */
    bool in_finetune = false;
    for (int round = 0; round < 2; round++) {
        int busy = -1;
        double t0 = svc_now();
        while (busy < 0 && svc_now() - t0 < 60) {
            bool want_ft = round == 0 && svc_now() - t0 < 30;
            busy = busy_on_host1(ids, want_ft ? "finetune" : NULL);
            if (busy >= 0 && want_ft) in_finetune = true;
            if (busy < 0) usleep(10 * 1000);
        }
        ck_assert_msg(busy >= 0, "host 1 never ran a job");
        svc_stop(&H[1], SIGKILL);
        fprintf(stderr, "round %d: killed host 1 during %s of job %d (%.1f s)\n", round,
                in_finetune && round == 0 ? "finetune" : "a stage", busy, svc_now() - t_start);
        if (round == 0) ck_assert_int_eq(bn_pgtest_cmd(pgdir, "restart"), 0);
        svc_start(&H[1]);
    }

    for (int j = 0; j < JOBS; j++)
        ck_assert_msg(!strcmp(svc_wait(&H[j % HOSTS], ids[j], 240), "succeeded"), "job %d: %s",
                      j, svc_job_field(&H[0], ids[j], "error"));
    double t_jobs = svc_now() - t_start;
    for (int j = 0; j < JOBS; j++) wait_tracking_finished(ids[j]);

    /* each job: finished once (across the logs of every host and restart), one start per
     * attempt, no event of an older attempt's host after a newer one started */
    char *logs[HOSTS];
    for (int i = 0; i < HOSTS; i++) logs[i] = svc_read_file(H[i].log);
    int taken_over = 0;
    cJSON *state = fake_wandb_state(fw);
    for (int j = 0; j < JOBS; j++) {
        char line[128];
        snprintf(line, sizeof line, "job %.64s: succeeded in", ids[j]);
        int finished = 0;
        for (int i = 0; i < HOSTS; i++) finished += count(logs[i], line);
        ck_assert_msg(finished == 1, "job %s finished %d times", ids[j], finished);
        int attempts = atoi(svc_job_field(&H[0], ids[j], "attempts"));
        if (check_events(ids[j], attempts) > 1) taken_over++;
        char p[4400];
        snprintf(p, sizeof p, "%s/r%02d/compression_metadata.json", H[0].outputs, j);
        ck_assert_msg(access(p, F_OK) == 0, "%s missing", p);
        snprintf(p, sizeof p, "%s/r%02d.partial", H[0].outputs, j);
        ck_assert_int_ne(access(p, F_OK), 0);
        snprintf(p, sizeof p, "%.4000s/.bitnetd/work/%.64s", H[0].outputs, ids[j]);
        ck_assert_int_ne(access(p, F_OK), 0);
        /* W&B: one run, each of the 19 metrics exactly once, one complete */
        tc_report rep;
        bool ok = tc_check_run(state, ids[j], 0, &rep) && tc_check_19(state, ids[j], &rep);
        if (!ok) dump_job(ids[j], logs);
        ck_assert_msg(ok, "job %s: %s", ids[j], rep.msg);
    }
    cJSON_Delete(state);
    for (int i = 0; i < HOSTS; i++) free(logs[i]);
    fprintf(stderr, "%d jobs succeeded in %.1f s (W&B delivered at %.1f s); %d taken over\n",
            JOBS, t_jobs, svc_now() - t_start, taken_over);
    ck_assert_int_ge(taken_over, 1);
    for (int i = 0; i < HOSTS; i++) ck_assert_int_eq(svc_stop(&H[i], SIGTERM), 0);
}
END_TEST

/* ---- the stand-in engine: cancel and events across hosts ----------------------------- */

static void submit_fake(int host, const char *output, int priority, char id[64])
{
    char body[256];
    snprintf(body, sizeof body, "{\"model\":\"tiny\",\"output\":\"%s\",\"priority\":%d,"
             "\"config\":{\"seed\":7}}", output, priority);
    ck_assert_int_eq(svc_submit(&H[host], body, NULL, id), 201);
}

static int wait_running_host(const char *id)
{
    int h = -1;
    for (int t = 0; t < 400 && h < 0; t++, usleep(25000)) h = running_host(id);
    ck_assert_int_ge(h, 0);
    return h;
}

START_TEST(stand_in_cancel_and_sse)
{
    pg_setup();
    hosts_init("tests/service/bitnetd-fake", 2);
    for (int i = 0; i < HOSTS; i++) {
        svc_setenv(&H[i], "BN_FAKE_STAGE_MS=300");
        svc_start(&H[i]);
    }
    svc_resp r;
    svc_req(&H[1], "GET", "/readyz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"store\":\"postgresql\""));
    svc_resp_free(&r);

    /* a cancel sent to a host that does not run the job */
    char victim[64], path[160];
    submit_fake(0, "victim", 5, victim);
    int vh = wait_running_host(victim);
    snprintf(path, sizeof path, "/v1/jobs/%.64s/cancel", victim);
    svc_req(&H[(vh + 1) % HOSTS], "POST", path, "", NULL, &r);
    ck_assert_int_lt(r.status, 300);
    svc_resp_free(&r);
    ck_assert_str_eq(svc_wait(&H[(vh + 2) % HOSTS], victim, 30), "cancelled");

    /* an event stream on another host than the one running the job */
    char id[64];
    submit_fake(2, "streamed", 5, id);
    int h = wait_running_host(id);
    char owner[128];
    snprintf(owner, sizeof owner, "%s", svc_job_field(&H[0], id, "lease_owner"));
    snprintf(path, sizeof path, "/v1/jobs/%.64s/events", id);
    const char *accept[] = {"Accept: text/event-stream", NULL};
    svc_req(&H[(h + 1) % HOSTS], "GET", path, NULL, accept, &r);
    ck_assert_int_eq(r.status, 200);
    char want[200];
    snprintf(want, sizeof want, "\"host\":\"%s\"", owner);
    ck_assert_msg(strstr(r.body, want), "no event by %s in:\n%s", owner, r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "started on"));
    ck_assert_ptr_nonnull(strstr(r.body, "event: end\ndata: {\"status\":\"succeeded\"}"));
    svc_resp_free(&r);

    /* the queue gauges of any host count every host's jobs */
    svc_req(&H[1], "GET", "/metrics", NULL, NULL, &r);
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_jobs{status=\"succeeded\"} 1"));
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_jobs{status=\"cancelled\"} 1"));
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_this_host_running_jobs 0"));
    svc_resp_free(&r);
    for (int i = 0; i < HOSTS; i++) ck_assert_int_eq(svc_stop(&H[i], SIGTERM), 0);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    Suite *s = suite_create("multihost");
    TCase *tc = tcase_create("multihost");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, stand_in_cancel_and_sse);
    /* the real engine needs the shared test data (CI: it must be there) */
    if (access(bn_test_data("stories260K-hf/model.safetensors"), R_OK) == 0 || getenv("CI")) {
        bn_test_require_data("stories260K-hf/model.safetensors");
        bn_test_require_data("corpora/tinystories_eval.txt");
        tcase_add_test(tc, real_engine_thirty_jobs);
    } else {
        fprintf(stderr, "SKIP real_engine_thirty_jobs: no %s\n", bn_test_data("stories260K-hf"));
    }
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    curl_global_cleanup();
    return rc;
}
