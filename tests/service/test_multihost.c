/* test_multihost.c - three bitnetd processes (stand-in engine) on loopback ports share
 * one real PostgreSQL queue and one output root. Jobs are submitted to one host and run
 * on all; one host is killed with -9 twice mid-job and restarted, PostgreSQL is
 * restarted once mid-run. Every job must end succeeded exactly once with the same bytes
 * as an uninterrupted run, each attempt is announced once in the job's event log (a
 * takeover counts one more attempt and resumes from the shared checkpoints), a cancel
 * sent to another host than the one running the job stops it, and an event stream on
 * one host shows the events of a job running on another. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_pgtest.h"
#include "bn_test.h"
#include "svc.h"

#define HOSTS 3
#define JOBS 12

static svc H[HOSTS];
static char *pgdir;
static char pgurl[1024];

static void setup(void)
{
    pgdir = bn_test_tmpdir("multihost-pg");
    ck_assert_ptr_nonnull(pgdir);
    ck_assert_int_eq(bn_pgtest_start(pgdir, pgurl, sizeof pgurl), 0);
    for (int i = 0; i < HOSTS; i++) {
        svc_init(&H[i], bn_test_build_path("tests/service/bitnetd-fake"));
        char flag[4200];
        snprintf(flag, sizeof flag, "--store=%s", pgurl);
        svc_flag(&H[i], flag);
        svc_flag(&H[i], "--jobs.lease-seconds=2");
        if (i > 0) { /* one output root (and so one checkpoint folder) for all */
            snprintf(flag, sizeof flag, "--output-root=%s", H[0].outputs);
            svc_flag(&H[i], flag);
        }
        svc_setenv(&H[i], "BN_FAKE_STAGE_MS=250");
    }
}

static void teardown(void)
{
    for (int i = 0; i < HOSTS; i++) svc_cleanup(&H[i]);
    bn_pgtest_cmd(pgdir, "stop");
    bn_test_rmtree(pgdir);
    free(pgdir);
}

static char *output_file(const char *out, const char *name)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s/%s", H[0].outputs, out, name);
    return svc_read_file(p);
}

static void submit(int host, const char *output, int priority, char id[64])
{
    char body[256];
    snprintf(body, sizeof body, "{\"model\":\"tiny\",\"output\":\"%s\",\"priority\":%d,"
             "\"config\":{\"seed\":7}}", output, priority);
    ck_assert_int_eq(svc_submit(&H[host], body, NULL, id), 201);
}

/* Which host runs the job now ("" when none): the lease owner "host:pid/wN". */
static int running_host(const char *id)
{
    const char *owner = svc_job_field(&H[0], id, "lease_owner");
    if (!owner || !*owner) return -1;
    for (int i = 0; i < HOSTS; i++) {
        char pfx[64];
        snprintf(pfx, sizeof pfx, ":%d/", (int)H[i].pid);
        if (strstr(owner, pfx)) return i;
    }
    return -1;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

START_TEST(test_three_hosts_one_queue)
{
    for (int i = 0; i < HOSTS; i++) svc_start(&H[i]);
    svc_resp r;
    svc_req(&H[1], "GET", "/readyz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"store\":\"postgresql\""));
    svc_resp_free(&r);

    /* reference output of an uninterrupted run */
    char ref[64];
    submit(0, "ref", 10, ref);
    ck_assert_str_eq(svc_wait(&H[2], ref, 60), "succeeded");
    char *ref_meta = output_file("ref", "compression_metadata.json");
    ck_assert_ptr_nonnull(ref_meta);

    char ids[JOBS][64];
    for (int j = 0; j < JOBS; j++) {
        char out[32];
        snprintf(out, sizeof out, "j%02d", j);
        submit(j % HOSTS, out, 0, ids[j]);
    }
    /* a job to cancel through a host that does not run it */
    char victim[64];
    submit(0, "victim", 5, victim);
    int vh = -1;
    for (int t = 0; t < 200 && vh < 0; t++, usleep(50000)) vh = running_host(victim);
    ck_assert_int_ge(vh, 0);
    char path[160];
    snprintf(path, sizeof path, "/v1/jobs/%.64s/cancel", victim);
    svc_req(&H[(vh + 1) % HOSTS], "POST", path, "", NULL, &r);
    ck_assert_int_lt(r.status, 300);
    svc_resp_free(&r);
    ck_assert_str_eq(svc_wait(&H[(vh + 2) % HOSTS], victim, 30), "cancelled");

    /* host 1 dies twice in the middle of a job; PostgreSQL restarts once */
    for (int round = 0; round < 2; round++) {
        int busy = -1;
        for (int t = 0; t < 400; t++, usleep(50000)) {
            for (int j = 0; j < JOBS && busy < 0; j++)
                if (running_host(ids[j]) == 1) busy = j;
            if (busy >= 0) break;
        }
        ck_assert_msg(busy >= 0, "host 1 never ran a job");
        usleep(300000);
        svc_stop(&H[1], SIGKILL);
        if (round == 0) ck_assert_int_eq(bn_pgtest_cmd(pgdir, "restart"), 0);
        svc_start(&H[1]);
    }

    for (int j = 0; j < JOBS; j++)
        ck_assert_str_eq(svc_wait(&H[j % HOSTS], ids[j], 120), "succeeded");

    int taken_over = 0;
    for (int j = 0; j < JOBS; j++) {
        char out[32];
        snprintf(out, sizeof out, "j%02d", j);
        char *meta = output_file(out, "compression_metadata.json");
        ck_assert_ptr_nonnull(meta);
        ck_assert_str_eq(meta, ref_meta);
        free(meta);
        /* one "started on" per attempt, the last one succeeded once */
        snprintf(path, sizeof path, "/v1/jobs/%.64s/events", ids[j]);
        svc_req(&H[2], "GET", path, NULL, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        int attempts = atoi(svc_job_field(&H[0], ids[j], "attempts"));
        ck_assert_int_eq(count(r.body, "started on"), attempts + 1);
        if (attempts) taken_over++; /* resumed from the shared checkpoints if any */
        svc_resp_free(&r);
    }
    ck_assert_int_ge(taken_over, 1);
    /* no work folder or partial output left in the shared root */
    char wd[4400];
    snprintf(wd, sizeof wd, "%s/.bitnetd/work/%s", H[0].outputs, ids[0]);
    ck_assert_int_ne(access(wd, F_OK), 0);

    /* /metrics of any host shows the queue and per-host gauges */
    svc_req(&H[2], "GET", "/metrics", NULL, NULL, &r);
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_jobs{status=\"succeeded\"} 13"));
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_this_host_running_jobs 0"));
    svc_resp_free(&r);
    free(ref_meta);
    for (int i = 0; i < HOSTS; i++) ck_assert_int_eq(svc_stop(&H[i], SIGTERM), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("multihost");
    TCase *tc = tcase_create("multihost");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, test_three_hosts_one_queue);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
