/* test_hub_daemon.c - a job whose "model" is hf://ORG/NAME, through the real bitnetd on a
 * loopback port, against the fake Hub (tests/fake_hub) serving stories260K-hf: the API's
 * allow-list (403 outside it, 400 for a malformed source, local paths outside the model
 * roots still 403), the download in the load stage with its events, two jobs for the same
 * model sharing one download, and a failing download as a clear job error.
 */
#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "fake_hub.h"
#include "svc.h"

static svc S;
static fake_hub *hub;

static void setup(void)
{
    static const char *const vars[] = { "HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]); /* inherited by bitnetd */
    hub = fake_hub_start();
    ck_assert_ptr_nonnull(hub);
    ck_assert_int_eq(fake_hub_add_repo(hub, "karpathy/stories260K", bn_test_data("stories260K-hf"), NULL), 0);
    ck_assert_int_eq(fake_hub_add_repo(hub, "other/model", bn_test_data("stories260K-hf"), NULL), 0);
    svc_init(&S, bn_test_build_path("daemon/bitnetd"));
    char kv[512];
    svc_setenv(&S, "BITNETD_HUB_ALLOW=karpathy/*, meta/gated");
    snprintf(kv, sizeof kv, "BITNETD_HUB_ENDPOINT=%s", fake_hub_url(hub));
    svc_setenv(&S, kv);
    snprintf(kv, sizeof kv, "BITNETD_HUB_CACHE_DIR=%s/hfcache", S.root);
    svc_setenv(&S, kv);
    svc_setenv(&S, "BITNETD_WORKERS=2");
}

static void teardown(void)
{
    svc_cleanup(&S);
    fake_hub_stop(hub);
}

static long submit(const char *model, const char *output, char id[64])
{
    char body[1024];
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"output\":\"%s\",\"config\":{\"seed\":3,\"threads\":1,"
             "\"calibration\":{\"samples\":8,\"sequence_length\":32},\"evaluate\":{\"windows\":2},"
             "\"fine_tune\":{\"enabled\":false}}}", model, output);
    return svc_submit(&S, body, NULL, id);
}

static char *events(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    svc_resp r;
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    char *b = strdup(r.body ? r.body : "");
    svc_resp_free(&r);
    return b;
}

START_TEST(hub_jobs)
{
    svc_start(&S);
    char a[64], b[64], x[64];
    /* validation before queueing */
    ck_assert_int_eq(submit("hf://other/model", "no1", x), 403);
    ck_assert_int_eq(submit("hf://karpathy/../etc", "no2", x), 403);
    ck_assert_int_eq(submit("hf://karpathy/x@a/../b", "no3", x), 403);
    ck_assert_int_eq(submit("hf://karpathy", "no4", x), 400);
    ck_assert_int_eq(submit("/etc", "no5", x), 403);
    /* two jobs on the same model: both succeed, the model crosses the wire once */
    ck_assert_int_eq(submit("hf://karpathy/stories260K", "one", a), 201);
    ck_assert_int_eq(submit("hf://karpathy/stories260K@main", "two", b), 201);
    ck_assert_str_eq(svc_wait(&S, a, 300), "succeeded");
    ck_assert_str_eq(svc_wait(&S, b, 300), "succeeded");
    fake_hub_stats s = fake_hub_get_stats(hub);
    ck_assert_int_eq(s.cdn, 1);
    char *ev = events(a);
    ck_assert_msg(strstr(ev, "hf://karpathy/stories260K@main: commit") != NULL, "%s", ev);
    ck_assert_ptr_nonnull(strstr(ev, "all 7 files present and checked"));
    free(ev);
    /* a download that fails: the job fails with the Hub's reason */
    fake_hub_fail_next(hub, 404, -1, 1);
    ck_assert_int_eq(submit("hf://karpathy/stories260K", "three", x), 201);
    ck_assert_str_eq(svc_wait(&S, x, 120), "failed");
    ev = events(x);
    ck_assert_msg(strstr(ev, "not found (HTTP 404") != NULL, "%s", ev);
    free(ev);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

int main(void)
{
    bn_test_require_data("stories260K-hf/model.safetensors");
    curl_global_init(CURL_GLOBAL_ALL);
    Suite *s = suite_create("hub-daemon");
    TCase *tc = tcase_create("hub-daemon");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, hub_jobs);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    curl_global_cleanup();
    return rc;
}
