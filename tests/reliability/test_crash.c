/* test_crash.c - crash consistency: kill -9 the real bitnetd at random points, restart
 * it, and check that nothing a client was told is lost or doubled.
 *
 * A run submits a handful of small but complete jobs (calibrate, quantize, evaluate,
 * fine-tune with frequent checkpoints, export, W&B delivery to the fake server) and,
 * BN_CRASH_KILLS times (default 50), sleeps a random time and kills the daemon with
 * SIGKILL, then restarts it on the same state. The kill points fall across submission,
 * every stage, the export rename and tracker delivery; the test prints where they fell.
 * Before each kill it checks the output root: every folder at a final name is complete.
 *
 * At the end, with the daemon left to finish:
 *   - every accepted submission (a 201 or a same-key retry) is exactly one job, and
 *     there is no other job;
 *   - every job succeeded and its output folder's files match the SHA-256 and sizes in
 *     its compression_metadata.json; no .partial folder remains;
 *   - the fake W&B server holds one run per job with each of the 19 keys exactly once,
 *     no offset gap or conflicting rewrite, and exactly one complete.
 * The random seed is printed (and can be set with BN_CRASH_SEED) so a failure replays.
 */
#include <check.h>
#include <pthread.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bn_test.h"
#include "fake_wandb.h"
#include "rel.h"
#include "svc.h"
#include "tracker_check.h"

#define MAX_JOBS 8
#define WANDB_KEY "crashtestkey0123456789012345678901234567890"

typedef struct submission {
    char key[64];
    char id[64];
    int accepted; /* the daemon answered 201/200 with an id at least once */
} submission;

static const char *job_body(int n, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"model\":\"tiny\",\"output\":\"crash-%d\",\"config\":{"
             "\"calibration\":{\"samples\":12,\"sequence_length\":64},"
             "\"evaluate\":{\"windows\":2},"
             "\"fine_tune\":{\"enabled\":true,\"threshold\":0,\"max_steps\":12,"
             "\"checkpoint_every\":3,\"sequence_length\":64,\"batch_size\":2,"
             "\"allow_synthetic\":true},"
             "\"seed\":%d},"
             "\"tracking\":{\"wandb\":{\"mode\":\"online\",\"project\":\"crash\"}}}",
             n, 100 + n);
    return buf;
}

static void try_submit(const svc *s, submission *sub, int n);

typedef struct racing_submit {
    const svc *s;
    submission *sub;
    int n;
} racing_submit;

static void *submit_thread(void *arg)
{
    racing_submit *rs = arg;
    try_submit(rs->s, rs->sub, rs->n);
    return NULL;
}

static void try_submit(const svc *s, submission *sub, int n)
{
    char body[1024], id[64] = "";
    long code = svc_submit(s, job_body(n, body, sizeof body), sub->key, id);
    if ((code == 201 || code == 200) && id[0]) {
        if (sub->accepted)
            ck_assert_msg(strcmp(sub->id, id) == 0, "Idempotency-Key %s gave %s, then %s",
                          sub->key, sub->id, id);
        snprintf(sub->id, sizeof sub->id, "%s", id);
        sub->accepted = 1;
    }
}

/* The stage of the running job (or "queued"/"idle"), to report where kills fell. */
static void where(const svc *s, char *out, size_t len)
{
    svc_resp r = {0};
    svc_req(s, "GET", "/v1/jobs?status=running&limit=1", NULL, NULL, &r);
    snprintf(out, len, "idle");
    cJSON *root = r.status == 200 ? cJSON_Parse(r.body) : NULL;
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(root, "jobs");
    const cJSON *j = cJSON_GetArrayItem(jobs, 0);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stage");
    if (cJSON_IsString(st)) snprintf(out, len, "%s", st->valuestring);
    cJSON_Delete(root);
    svc_resp_free(&r);
}

static void count_where(char names[][32], int counts[], int *n, const char *w)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(names[i], w) == 0) { counts[i]++; return; }
    if (*n < 16) { snprintf(names[*n], 32, "%s", w); counts[(*n)++] = 1; }
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

START_TEST(test_kill_nine_anywhere)
{
    unsigned seed = (unsigned)env_int("BN_CRASH_SEED", (int)time(NULL));
    int kills = env_int("BN_CRASH_KILLS", 50);
    srand(seed);
    printf("crash: seed %u, %d kills\n", seed, kills);
    fflush(stdout); /* the daemon is forked from here */

    fake_wandb *fw = fake_wandb_start(0, WANDB_KEY);
    ck_assert_ptr_nonnull(fw);
    svc s;
    svc_init(&s, bn_test_build_path("daemon/bitnetd"));
    rel_real_model(s.models, 7);

    char env_url[256];
    snprintf(env_url, sizeof env_url, "WANDB_BASE_URL=%s", fake_wandb_url(fw));
    svc_setenv(&s, env_url);
    svc_setenv(&s, "WANDB_API_KEY=" WANDB_KEY);
    svc_flag(&s, "--set");
    svc_flag(&s, "jobs.max_attempts=100");
    svc_flag(&s, "--threads");
    svc_flag(&s, "1");
    svc_start(&s);

    submission subs[MAX_JOBS] = {0};
    int n_subs = 0;
    char names[16][32];
    int counts[16], n_names = 0;
    for (int k = 0; k < kills; k++) {
        for (int i = 0; i < n_subs; i++) try_submit(&s, &subs[i], i);
        if (k % 7 == 0 && n_subs < MAX_JOBS) {
            /* A new submission races the kill: it may or may not be persisted; the
             * client retries with the same Idempotency-Key after the restart. */
            submission *sub = &subs[n_subs];
            snprintf(sub->key, sizeof sub->key, "crash-key-%d-%u", n_subs, seed);
            racing_submit rs = { &s, sub, n_subs++ };
            pthread_t t;
            pthread_create(&t, NULL, submit_thread, &rs);
            usleep((useconds_t)(rand() % 20000));
            count_where(names, counts, &n_names, "submission");
            svc_stop(&s, SIGKILL);
            pthread_join(t, NULL);
            svc_start(&s);
            continue;
        }

        char why[512] = "";
        ck_assert_msg(out_root_complete(s.outputs, why, sizeof why) >= 0, "%s", why);

        char w[32];
        if (k % 3 == 1) {
            /* Aim: wait (up to 8 s) until the running job enters the next stage of the
             * cycle, then kill a random moment into it, so every stage gets kills. */
            static const char *const cycle[] = { "load", "calibrate", "quantize",
                                                 "evaluate", "finetune", "export" };
            const char *target = cycle[(k / 3) % 6];
            double t0 = svc_now();
            do {
                where(&s, w, sizeof w);
                if (strcmp(w, target) == 0) break;
                usleep(3000);
            } while (svc_now() - t0 < 8);
            usleep((useconds_t)(rand() % 150000));
        } else {
            /* Mostly short runs; now and then a longer one so that slow stages finish. */
            usleep((useconds_t)(30000 + rand() % (k % 3 == 2 ? 4000000 : 1200000)));
        }
        where(&s, w, sizeof w);
        count_where(names, counts, &n_names, w);
        svc_stop(&s, SIGKILL);
        svc_start(&s);
    }
    for (int i = 0; i < n_subs; i++) {
        try_submit(&s, &subs[i], i);
        ck_assert_msg(subs[i].accepted, "submission %s never accepted", subs[i].key);
    }
    printf("crash: kill points by stage:");
    for (int i = 0; i < n_names; i++) printf(" %s=%d", names[i], counts[i]);
    printf("\n");
    fflush(stdout);

    /* Every accepted submission is one job that completes. */
    for (int i = 0; i < n_subs; i++) {
        const char *st = svc_wait(&s, subs[i].id, 900);
        ck_assert_msg(strcmp(st, "succeeded") == 0, "job %s ended %s", subs[i].id, st);
    }
    svc_resp r = {0};
    svc_req(&s, "GET", "/v1/jobs?limit=100", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    cJSON *list = cJSON_Parse(r.body);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(list, "jobs");
    ck_assert_int_eq(cJSON_GetArraySize(jobs), n_subs);
    for (int i = 0; i < n_subs; i++) {
        int seen = 0;
        const cJSON *j;
        cJSON_ArrayForEach(j, jobs) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
            seen += cJSON_IsString(id) && strcmp(id->valuestring, subs[i].id) == 0;
        }
        ck_assert_msg(seen == 1, "job %s listed %d times", subs[i].id, seen);
    }
    cJSON_Delete(list);
    svc_resp_free(&r);

    char why[512] = "";
    ck_assert_msg(out_root_complete(s.outputs, why, sizeof why) == n_subs, "%s", why);
    ck_assert_int_eq(out_root_partials(s.outputs), 0);

    /* W&B: every run complete, each key exactly once. */
    double t0 = svc_now();
    for (int i = 0; i < n_subs; i++) {
        tc_report rep;
        for (;;) {
            cJSON *state = fake_wandb_state(fw);
            memset(&rep, 0, sizeof rep);
            int ok = tc_check_run(state, subs[i].id, 0, &rep) && tc_check_19(state, subs[i].id, &rep);
            cJSON_Delete(state);
            if (ok) break;
            ck_assert_msg(svc_now() - t0 < 180, "W&B run of %s: %s", subs[i].id, rep.msg);
            usleep(200000);
        }
    }
    printf("crash: %d jobs, %d kills survived, outputs verified, W&B runs exact\n", n_subs, kills);
    svc_stop(&s, SIGTERM);
    svc_cleanup(&s);
    fake_wandb_stop(fw);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("crash");
    TCase *tc = tcase_create("kill9");
    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, test_kill_nine_anywhere);
    suite_add_tcase(su, tc);
    return bn_test_run(su);
}
