/* test_store.c - unit tests of store/: migrations, job life cycle, idempotency, claim
 * exclusivity, recovery, metrics upsert and the W&B outbox rows. The same tests run on
 * SQLite (test 'store') and on a real PostgreSQL server started here (test 'store-pg',
 * BN_TEST_STORE=postgresql): each test starts from an empty database. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_store.h"
#include "bn_pgtest.h"
#include "bn_test.h"

static char *tmp;
static char dbpath[4096];
static char *pgdir;        /* the PostgreSQL server's folder (BN_TEST_STORE=postgresql) */
static char pgurl[1024];

static void pg_up(void)
{
    if (!bn_pgtest_wanted()) return;
    pgdir = bn_test_tmpdir("store-pg");
    if (!pgdir || bn_pgtest_start(pgdir, pgurl, sizeof pgurl)) {
        fprintf(stderr, "cannot start PostgreSQL\n");
        exit(1);
    }
}

static void pg_down(void)
{
    if (!pgdir) return;
    bn_pgtest_cmd(pgdir, "stop");
    bn_test_rmtree(pgdir);
    free(pgdir);
    pgdir = NULL;
}

static void setup(void)
{
    tmp = bn_test_tmpdir("store");
    ck_assert_ptr_nonnull(tmp);
    if (pgdir) {
        ck_assert_int_eq(bn_pgtest_cmd(pgdir, "reset"), 0);
        snprintf(dbpath, sizeof dbpath, "%s", pgurl);
    } else {
        snprintf(dbpath, sizeof dbpath, "sqlite:%s/bitnetd.db", tmp);
    }
}

static void teardown(void)
{
    bn_test_rmtree(tmp);
    free(tmp);
}

static bn_store *open_store(void)
{
    bn_store *st = NULL;
    char err[256];
    ck_assert_int_eq(bn_store_open(dbpath, &st, err, sizeof err), BN_STORE_OK);
    return st;
}

static void make_job(bn_store *st, const char *key, const char *mode, int prio, bn_store_job *j)
{
    static int counter;
    char out[32];
    snprintf(out, sizeof out, "out%d", counter++);
    bn_store_new_job nj = {.priority = prio, .model = "/m", .output = out,
                           .output_dir = "/o/out", .config = "{}", .tracking = "{}",
                           .wandb_mode = mode, .idempotency_key = key, .request_hash = "h1"};
    bool existed;
    ck_assert_int_eq(bn_store_job_create(st, &nj, j, &existed), BN_STORE_OK);
    ck_assert(!existed);
}

START_TEST(test_open_migrates)
{
    bn_store *st = open_store();
    ck_assert_int_eq(bn_store_schema_version(st), 3);
    bn_store_close(st);
    st = open_store(); /* reopening keeps the version */
    ck_assert_int_eq(bn_store_schema_version(st), 3);
    ck_assert_int_eq(bn_store_ping(st), BN_STORE_OK);
    bn_store_close(st);
}
END_TEST

START_TEST(test_lifecycle)
{
    bn_store *st = open_store();
    bn_store_job j, c;
    make_job(st, NULL, "disabled", 0, &j);
    ck_assert_int_eq(strncmp(j.id, "job_", 4), 0);
    ck_assert_uint_eq(strlen(j.id), 20);
    ck_assert_int_eq(j.status, BN_JOB_QUEUED);
    ck_assert_int_eq(bn_store_job_claim(st, "w1", 30000, &c), BN_STORE_OK);
    ck_assert_str_eq(c.id, j.id);
    ck_assert_int_eq(c.status, BN_JOB_RUNNING);
    ck_assert_str_eq(c.lease_owner, "w1");
    bn_store_job none;
    ck_assert_int_eq(bn_store_job_claim(st, "w2", 30000, &none), BN_STORE_NOTFOUND);
    bool cancel = true;
    ck_assert_int_eq(bn_store_job_progress(st, j.id, "w1", 30000, "load", 0.5, 0.1, "x",
                                           &cancel), BN_STORE_OK);
    ck_assert(!cancel);
    ck_assert_int_eq(bn_store_job_progress(st, j.id, "w2", 30000, "load", 0.5, 0.1, "x",
                                           &cancel), BN_STORE_LOST);
    ck_assert_int_eq(bn_store_job_stage_timing(st, j.id, "w1", "load", 1000, 3500), BN_STORE_OK);
    ck_assert_int_eq(bn_store_job_finish(st, j.id, "w1", BN_JOB_SUCCEEDED, NULL), BN_STORE_OK);
    bn_store_job g;
    ck_assert_int_eq(bn_store_job_get(st, j.id, &g), BN_STORE_OK);
    ck_assert_int_eq(g.status, BN_JOB_SUCCEEDED);
    ck_assert_double_eq(g.progress, 1.0);
    /* JSON text; PostgreSQL's jsonb puts a space after the colon */
    ck_assert_ptr_nonnull(strstr(g.stage_timings, "\"seconds\""));
    ck_assert(strstr(g.stage_timings, ":2.5") || strstr(g.stage_timings, ": 2.5"));
    ck_assert_int_eq(bn_store_job_delete(st, j.id), BN_STORE_OK);
    ck_assert_int_eq(bn_store_job_get(st, j.id, &none), BN_STORE_NOTFOUND);
    bn_store_job_free(&g);
    bn_store_job_free(&c);
    bn_store_job_free(&j);
    bn_store_close(st);
}
END_TEST

START_TEST(test_idempotency)
{
    bn_store *st = open_store();
    bn_store_job a, b;
    make_job(st, "k1", "disabled", 0, &a);
    bn_store_new_job nj = {.model = "/m", .output = "out-other", .idempotency_key = "k1",
                           .request_hash = "h1"};
    bool existed;
    ck_assert_int_eq(bn_store_job_create(st, &nj, &b, &existed), BN_STORE_OK);
    ck_assert(existed);
    ck_assert_str_eq(a.id, b.id);
    bn_store_job_free(&b);
    nj.request_hash = "other";
    ck_assert_int_eq(bn_store_job_create(st, &nj, &b, &existed), BN_STORE_CONFLICT);
    bn_store_job_free(&b);
    bn_store_job_free(&a);
    bn_store_close(st);
}
END_TEST

START_TEST(test_queue_full_and_priority)
{
    bn_store *st = open_store();
    bn_store_job a, b, c;
    bool busy = false;
    make_job(st, NULL, "disabled", 0, &a);
    make_job(st, NULL, "disabled", 5, &b);
    bn_store_new_job nj = {.model = "/m", .output = "o", .max_queued = 2};
    bool existed;
    int full = bn_store_job_create(st, &nj, &c, &existed);
    ck_assert_msg(full == BN_STORE_FULL, "%d %s", full, bn_store_errmsg(st));
    ck_assert_int_eq(bn_store_output_in_use(st, a.output, &busy), BN_STORE_OK);
    ck_assert(busy);
    nj.output = a.output; /* an active job's output cannot be targeted twice */
    nj.max_queued = 0;
    ck_assert_int_eq(bn_store_job_create(st, &nj, &c, &existed), BN_STORE_CONFLICT);
    ck_assert_int_eq(bn_store_job_claim(st, "w", 1000, &c), BN_STORE_OK);
    ck_assert_str_eq(c.id, b.id); /* higher priority first */
    bn_store_job_free(&c);
    int64_t counts[BN_JOB_STATUS_COUNT];
    ck_assert_int_eq(bn_store_job_counts(st, counts), BN_STORE_OK);
    ck_assert_int_eq(counts[BN_JOB_QUEUED], 1);
    ck_assert_int_eq(counts[BN_JOB_RUNNING], 1);
    bn_store_job *list;
    int n;
    int64_t next;
    ck_assert_int_eq(bn_store_job_list(st, -1, 1, 0, &list, &n, &next), BN_STORE_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(list[0].id, b.id); /* newest first */
    ck_assert_int_ne(next, 0);
    bn_store_jobs_free(list, n);
    ck_assert_int_eq(bn_store_job_list(st, -1, 1, next, &list, &n, &next), BN_STORE_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(list[0].id, a.id);
    ck_assert_int_eq(next, 0);
    bn_store_jobs_free(list, n);
    ck_assert_int_eq(bn_store_job_list(st, BN_JOB_RUNNING, 10, 0, &list, &n, &next), 0);
    ck_assert_int_eq(n, 1);
    bn_store_jobs_free(list, n);
    bn_store_job_free(&a);
    bn_store_job_free(&b);
    bn_store_close(st);
}
END_TEST

START_TEST(test_cancel)
{
    bn_store *st = open_store();
    bn_store_job a, b, c;
    make_job(st, NULL, "online", 0, &a);
    make_job(st, NULL, "disabled", 0, &b);
    bool final;
    ck_assert_int_eq(bn_store_job_claim(st, "w", 1000, &c), BN_STORE_OK);
    ck_assert_str_eq(c.id, a.id);
    ck_assert_int_eq(bn_store_job_cancel(st, b.id, &final), BN_STORE_OK);
    ck_assert(final);
    ck_assert_int_eq(bn_store_job_cancel(st, b.id, &final), BN_STORE_CONFLICT);
    ck_assert_int_eq(bn_store_job_cancel(st, a.id, &final), BN_STORE_OK);
    ck_assert(!final);
    bool cancel = false;
    ck_assert_int_eq(bn_store_job_progress(st, a.id, "w", 1000, NULL, 0, 0, NULL, &cancel), 0);
    ck_assert(cancel);
    ck_assert_int_eq(bn_store_job_delete(st, a.id), BN_STORE_CONFLICT);
    ck_assert_int_eq(bn_store_job_finish(st, a.id, "w", BN_JOB_CANCELLED, "cancelled"), 0);
    int64_t n;
    ck_assert_int_eq(bn_store_outbox_count(st, a.id, "complete", &n), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(bn_store_outbox_count(st, b.id, NULL, &n), 0);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(bn_store_job_cancel(st, "job_nope", &final), BN_STORE_NOTFOUND);
    bn_store_job_free(&a);
    bn_store_job_free(&b);
    bn_store_job_free(&c);
    bn_store_close(st);
}
END_TEST

START_TEST(test_recover)
{
    bn_store *st = open_store();
    bn_store_job a, c;
    make_job(st, NULL, "disabled", 0, &a);
    for (int attempt = 1; attempt <= 3; attempt++) {
        /* the holder dies: its 1 ms lease expires (PostgreSQL recovers only those) */
        ck_assert_int_eq(bn_store_job_claim(st, "w", 1, &c), BN_STORE_OK);
        bn_store_job_free(&c);
        usleep(5000);
        int rq, fl;
        ck_assert_int_eq(bn_store_recover(st, 3, &rq, &fl), BN_STORE_OK);
        ck_assert_int_eq(rq, attempt < 3 ? 1 : 0);
        ck_assert_int_eq(fl, attempt < 3 ? 0 : 1);
    }
    ck_assert_int_eq(bn_store_job_get(st, a.id, &c), BN_STORE_OK);
    ck_assert_int_eq(c.status, BN_JOB_FAILED);
    ck_assert_int_eq(c.attempts, 3);
    ck_assert_ptr_nonnull(strstr(c.error, "interrupted 3 times"));
    bn_store_job_free(&c);
    bn_store_job_free(&a);
    bn_store_close(st);
}
END_TEST

/* Every host reaps jobs whose lease expired (a dead host's), on both backends; a live
 * lease is left alone, and max_attempts holds however the job moves between hosts. */
START_TEST(test_reap_expired)
{
    bn_store *st = open_store();
    bn_store_job a, b, c;
    make_job(st, NULL, "disabled", 0, &a);
    make_job(st, NULL, "disabled", 0, &b);
    ck_assert_int_eq(bn_store_job_claim(st, "live", 60000, &c), BN_STORE_OK);
    char live_id[BN_STORE_ID_LEN];
    snprintf(live_id, sizeof live_id, "%s", c.id);
    bn_store_job_free(&c);
    for (int attempt = 1; attempt <= 2; attempt++) {
        ck_assert_int_eq(bn_store_job_claim(st, "dies", 1, &c), BN_STORE_OK);
        ck_assert_str_ne(c.id, live_id);
        bn_store_job_free(&c);
        usleep(5000);
        int rq, fl;
        ck_assert_int_eq(bn_store_reap_expired(st, 2, &rq, &fl), BN_STORE_OK);
        ck_assert_int_eq(rq, attempt < 2 ? 1 : 0);
        ck_assert_int_eq(fl, attempt < 2 ? 0 : 1);
    }
    ck_assert_int_eq(bn_store_job_get(st, live_id, &c), BN_STORE_OK);
    ck_assert_int_eq(c.status, BN_JOB_RUNNING); /* the live holder keeps its job */
    ck_assert_int_eq(c.attempts, 0);
    bn_store_job_free(&c);
    const char *dead_id = strcmp(live_id, a.id) ? a.id : b.id;
    ck_assert_int_eq(bn_store_job_get(st, dead_id, &c), BN_STORE_OK);
    ck_assert_int_eq(c.status, BN_JOB_FAILED);
    ck_assert_int_eq(c.attempts, 2);
    ck_assert_ptr_nonnull(strstr(c.error, "interrupted 2 times"));
    bn_store_job_free(&c);
    bn_store_job_free(&a);
    bn_store_job_free(&b);
    bn_store_close(st);
}
END_TEST

/* A host without GPUs leaves device "cuda" jobs to hosts with GPUs (PostgreSQL, many
 * hosts); SQLite's one host claims them anyway (its worker then fails them with the
 * reason instead of keeping them queued forever). */
START_TEST(test_claim_for_cpu_host)
{
    bn_store *st = open_store();
    bn_store_job a, b, c;
    bn_store_new_job nj = {.model = "/m", .output = "gpu-job", .output_dir = "/o/gpu-job",
                           .config = "{\"device\":\"cuda\",\"seed\":1}", .tracking = "{}",
                           .wandb_mode = "disabled", .request_hash = "h1", .priority = 5};
    bool existed;
    ck_assert_int_eq(bn_store_job_create(st, &nj, &a, &existed), BN_STORE_OK);
    make_job(st, NULL, "disabled", 0, &b);
    bool pg = pgdir != NULL;
    ck_assert_int_eq(bn_store_job_claim_for(st, "cpu-host", 30000, false, &c), BN_STORE_OK);
    ck_assert_str_eq(c.id, pg ? b.id : a.id); /* PostgreSQL skips the higher-priority cuda job */
    bn_store_job_free(&c);
    if (pg) {
        ck_assert_int_eq(bn_store_job_claim_for(st, "cpu-host", 30000, false, &c), BN_STORE_NOTFOUND);
        ck_assert_int_eq(bn_store_job_claim_for(st, "gpu-host", 30000, true, &c), BN_STORE_OK);
        ck_assert_str_eq(c.id, a.id);
        bn_store_job_free(&c);
    }
    bn_store_job_free(&a);
    bn_store_job_free(&b);
    bn_store_close(st);
}
END_TEST

START_TEST(test_metrics_outbox)
{
    bn_store *st = open_store();
    bn_store_job a, c;
    make_job(st, NULL, "offline", 0, &a);
    ck_assert_int_eq(bn_store_job_claim(st, "w", 1000, &c), BN_STORE_OK);
    ck_assert_int_eq(bn_store_metric_add(st, a.id, "w", "fine_tune/loss", 0, 2.5), 0);
    ck_assert_int_eq(bn_store_metric_add(st, a.id, "w", "fine_tune/loss", 1, 2.0), 0);
    ck_assert_int_eq(bn_store_metric_add(st, a.id, "w", "fine_tune/loss", 1, 1.9), 0); /* re-run */
    ck_assert_int_eq(bn_store_metric_add(st, a.id, "w", "compression/ratio", -1, 9.5), 0);
    ck_assert_int_eq(bn_store_metric_add(st, a.id, "w", "phase/compression_ratio", -1, 9.5), 0);
    bn_store_metric *m;
    int n;
    ck_assert_int_eq(bn_store_metrics_list(st, a.id, &m, &n), 0);
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(m[1].key, "fine_tune/loss");
    ck_assert_double_eq(m[2].value, 1.9);
    bn_store_metrics_free(m, n);
    int64_t k;
    ck_assert_int_eq(bn_store_outbox_count(st, a.id, "history", &k), 0);
    ck_assert_int_eq(k, 4);
    ck_assert_int_eq(bn_store_job_finish(st, a.id, "w", BN_JOB_SUCCEEDED, NULL), 0);
    ck_assert_int_eq(bn_store_outbox_count(st, a.id, "summary", &k), 0);
    ck_assert_int_eq(k, 1);
    ck_assert_int_eq(bn_store_outbox_count(st, a.id, "complete", &k), 0);
    ck_assert_int_eq(k, 1);
    ck_assert_int_eq(bn_store_event_add(st, a.id, NULL, "load", "info", "one"), 0);
    ck_assert_int_eq(bn_store_event_add(st, a.id, NULL, "load", "warn", "two"), 0);
    bn_store_event *ev;
    ck_assert_int_eq(bn_store_events_list(st, a.id, 1, 10, &ev, &n), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ev[0].seq, 2);
    ck_assert_str_eq(ev[0].message, "two");
    bn_store_events_free(ev, n);
    bn_store_job_free(&a);
    bn_store_job_free(&c);
    bn_store_close(st);
}
END_TEST

/* Writes of a worker carry its owner: an event records it as its host, and once the job
 * was taken over (here: given back and claimed by another owner) the old owner's event,
 * metric, metric source and stage timing are refused with BN_STORE_LOST and leave no
 * row, no outbox row. */
START_TEST(test_owner_guard)
{
    bn_store *st = open_store();
    bn_store_job a, c;
    make_job(st, NULL, "offline", 0, &a);
    ck_assert_int_eq(bn_store_job_claim(st, "hostA:1/w0", 60000, &c), BN_STORE_OK);
    bn_store_job_free(&c);
    ck_assert_int_eq(bn_store_event_add(st, a.id, "hostA:1/w0", "load", "info", "by A"), 0);
    ck_assert_int_eq(bn_store_metric_add(st, a.id, "hostA:1/w0", "compression/ratio", -1, 9.5), 0);
    ck_assert_int_eq(bn_store_event_add(st, a.id, "hostB:2/w0", "load", "info", "not B"),
                     BN_STORE_LOST);
    /* taken over: A gives it back (or its lease expired) and B claims it */
    ck_assert_int_eq(bn_store_job_requeue(st, a.id, "hostA:1/w0"), BN_STORE_OK);
    ck_assert_int_eq(bn_store_job_claim(st, "hostB:2/w0", 60000, &c), BN_STORE_OK);
    bn_store_job_free(&c);
    ck_assert_int_eq(bn_store_event_add(st, a.id, "hostA:1/w0", "quantize", "info", "late A"),
                     BN_STORE_LOST);
    ck_assert_int_eq(bn_store_metric_add(st, a.id, "hostA:1/w0", "compression/sparsity_ratio",
                                         -1, 0.3), BN_STORE_LOST);
    ck_assert_int_eq(bn_store_metric_source_set(st, a.id, "hostA:1/w0", "compression/ratio",
                                                "synthetic (report split)"), BN_STORE_LOST);
    ck_assert_int_eq(bn_store_job_stage_timing(st, a.id, "hostA:1/w0", "load", 1, 2),
                     BN_STORE_LOST);
    ck_assert_int_eq(bn_store_event_add(st, a.id, "hostB:2/w0", "load", "info", "by B"), 0);
    ck_assert_int_eq(bn_store_event_add(st, a.id, NULL, NULL, "info", "tracker"), 0);
    bn_store_event *ev;
    int n;
    ck_assert_int_eq(bn_store_events_list(st, a.id, 0, 10, &ev, &n), 0);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(ev[0].host, "hostA:1/w0");
    ck_assert_str_eq(ev[0].message, "by A");
    ck_assert_str_eq(ev[1].host, "hostB:2/w0");
    ck_assert_ptr_null(ev[2].host);
    bn_store_events_free(ev, n);
    bn_store_metric *m;
    ck_assert_int_eq(bn_store_metrics_list(st, a.id, &m, &n), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(m[0].key, "compression/ratio");
    bn_store_metrics_free(m, n);
    int64_t k;
    ck_assert_int_eq(bn_store_outbox_count(st, a.id, NULL, &k), 0);
    ck_assert_int_eq(k, 1);
    char *src;
    ck_assert_int_eq(bn_store_metric_sources_json(st, a.id, &src), 0);
    ck_assert_str_eq(src, "{}");
    free(src);
    bn_store_job_free(&a);
    bn_store_close(st);
}
END_TEST

/* Two threads with their own connections race to claim: each job exactly once. */
static void *claimer(void *arg)
{
    int *claimed = arg;
    bn_store *st = open_store();
    bn_store_job c;
    char owner[32];
    snprintf(owner, sizeof owner, "w%p", arg);
    while (bn_store_job_claim(st, owner, 600000, &c) == BN_STORE_OK) {
        (*claimed)++;
        bn_store_job_free(&c);
    }
    bn_store_close(st);
    return NULL;
}

START_TEST(test_claim_race)
{
    bn_store *st = open_store();
    for (int i = 0; i < 40; i++) {
        bn_store_job j;
        make_job(st, NULL, "disabled", 0, &j);
        bn_store_job_free(&j);
    }
    int c1 = 0, c2 = 0;
    pthread_t t1, t2;
    pthread_create(&t1, NULL, claimer, &c1);
    pthread_create(&t2, NULL, claimer, &c2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    ck_assert_int_eq(c1 + c2, 40);
    bn_store_close(st);
}
END_TEST

/* A lease that expired (its host died) is taken over by another host, with one more
 * attempt; the old holder can no longer write progress or finish the job. PostgreSQL
 * only: with SQLite one host recovers its own jobs at start-up (test_recover). */
START_TEST(test_lease_takeover)
{
    if (!pgdir) return;
    bn_store *a = open_store(), *b = open_store();
    bn_store_job j, c1, c2;
    make_job(a, NULL, "disabled", 0, &j);
    ck_assert_int_eq(bn_store_job_claim(a, "hostA/w0", 50, &c1), BN_STORE_OK);
    ck_assert_int_eq(bn_store_job_claim(b, "hostB/w0", 60000, &c2), BN_STORE_NOTFOUND);
    usleep(120 * 1000);
    ck_assert_int_eq(bn_store_job_claim(b, "hostB/w0", 60000, &c2), BN_STORE_OK);
    ck_assert_str_eq(c2.id, j.id);
    ck_assert_int_eq(c2.attempts, 1);
    ck_assert_str_eq(c2.lease_owner, "hostB/w0");
    bool cancel = false;
    ck_assert_int_eq(bn_store_job_progress(a, j.id, "hostA/w0", 60000, "load", 0.5, 0.1,
                                           "x", &cancel), BN_STORE_LOST);
    ck_assert_int_eq(bn_store_job_finish(a, j.id, "hostA/w0", BN_JOB_SUCCEEDED, NULL),
                     BN_STORE_LOST);
    ck_assert_int_eq(bn_store_job_progress(b, j.id, "hostB/w0", 60000, "load", 0.5, 0.1,
                                           "x", &cancel), BN_STORE_OK);
    /* a cancel from another host reaches the holder's next progress write */
    bool now_final = true;
    ck_assert_int_eq(bn_store_job_cancel(a, j.id, &now_final), BN_STORE_OK);
    ck_assert(!now_final);
    ck_assert_int_eq(bn_store_job_progress(b, j.id, "hostB/w0", 60000, NULL, 0, 0, NULL,
                                           &cancel), BN_STORE_OK);
    ck_assert(cancel);
    ck_assert_int_eq(bn_store_job_finish(b, j.id, "hostB/w0", BN_JOB_CANCELLED, "by request"),
                     BN_STORE_OK);
    /* events written on one connection wake a listener on another */
    bool got = false;
    ck_assert_int_eq(bn_store_wait_event(a, 10, &got), BN_STORE_OK); /* starts listening */
    ck_assert(got);
    ck_assert_int_eq(bn_store_event_add(b, j.id, NULL, NULL, "info", "from B"), BN_STORE_OK);
    got = false;
    ck_assert_int_eq(bn_store_wait_event(a, 5000, &got), BN_STORE_OK);
    ck_assert(got);
    got = true;
    ck_assert_int_eq(bn_store_wait_event(a, 50, &got), BN_STORE_OK);
    ck_assert(!got);
    bn_store_job_free(&j);
    bn_store_job_free(&c1);
    bn_store_job_free(&c2);
    bn_store_close(a);
    bn_store_close(b);
}
END_TEST

/* A database migrated by a newer bitnetd is refused, with the versions in the message. */
START_TEST(test_newer_schema_refused)
{
    bn_store *st = open_store();
    bn_store_close(st);
    char cmd[8192];
    if (pgdir)
        snprintf(cmd, sizeof cmd, "psql -q '%s' -c 'INSERT INTO bitnetd_schema VALUES (99)'",
                 pgurl);
    else
        snprintf(cmd, sizeof cmd, "sqlite3 '%s' 'PRAGMA user_version = 99'", dbpath + 7);
    if (system(cmd) != 0) {
        if (!pgdir) return; /* no sqlite3 shell here; the PostgreSQL run covers it */
        ck_abort_msg("%s failed", cmd);
    }
    char err[512];
    ck_assert_int_eq(bn_store_open(dbpath, &st, err, sizeof err), BN_STORE_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "v99 is newer than this bitnetd (v"));
    ck_assert_ptr_null(strstr(err, "postgresql://")); /* the URL is never echoed */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_unchecked_fixture(tc, pg_up, pg_down);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_open_migrates);
    tcase_add_test(tc, test_lifecycle);
    tcase_add_test(tc, test_idempotency);
    tcase_add_test(tc, test_queue_full_and_priority);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_recover);
    tcase_add_test(tc, test_reap_expired);
    tcase_add_test(tc, test_claim_for_cpu_host);
    tcase_add_test(tc, test_metrics_outbox);
    tcase_add_test(tc, test_owner_guard);
    tcase_add_test(tc, test_claim_race);
    tcase_add_test(tc, test_lease_takeover);
    tcase_add_test(tc, test_newer_schema_refused);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
