/* test_api.c - integration tests of the REST API against a real bitnetd (with the
 * stand-in engine, so each job takes well under a second): the job life cycle, every
 * error status with its problem+json body, idempotency, cancel, event streams,
 * artifacts with Range, /metrics, the OpenAPI document and auth. */
#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bn_test.h"
#include "svc.h"

static svc S;

static const char *bin(void)
{
    return bn_test_build_path("tests/service/bitnetd-fake");
}

static void setup(void)
{
    svc_init(&S, bin());
}

static void teardown(void)
{
    svc_cleanup(&S);
}

static cJSON *parse(const svc_resp *r)
{
    cJSON *j = cJSON_Parse(r->body);
    ck_assert_msg(j != NULL, "response is not JSON: %s", r->body);
    return j;
}

static const char *str(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Asserts status, problem+json content type, status member and field. */
static void expect_problem(const svc_resp *r, long status, const char *field)
{
    ck_assert_msg(r->status == status, "expected %ld, got %ld: %s", status, r->status, r->body);
    const char *ct = svc_header(r, "Content-Type");
    ck_assert_msg(ct && strstr(ct, "application/problem+json"), "content type %s", ct);
    cJSON *j = parse(r);
    cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    ck_assert(cJSON_IsNumber(st) && st->valueint == status);
    ck_assert_str_ne(str(j, "title"), "");
    ck_assert_str_ne(str(j, "detail"), "");
    if (field) ck_assert_msg(!strcmp(str(j, "field"), field), "field %s, expected %s (%s)",
                             str(j, "field"), field, r->body);
    cJSON_Delete(j);
}

static void post(const char *path, const char *body, svc_resp *r)
{
    const char *h[] = {"Content-Type: application/json", NULL};
    svc_req(&S, "POST", path, body, h, r);
}

START_TEST(test_submit_poll_succeeded)
{
    svc_start(&S);
    char id[64];
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"t1\"}", NULL, id), 201);
    ck_assert_int_eq(strncmp(id, "job_", 4), 0);
    ck_assert_str_eq(svc_wait(&S, id, 30), "succeeded");
    svc_resp r;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = parse(&r);
    ck_assert_str_eq(str(j, "status"), "succeeded");
    ck_assert_double_eq(cJSON_GetObjectItem(j, "progress")->valuedouble, 1.0);
    cJSON *m = cJSON_GetObjectItem(j, "metrics");
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(m, "compression/ratio")));
    cJSON *timings = cJSON_GetObjectItem(j, "timings");
    ck_assert_int_eq(cJSON_GetArraySize(timings), 6);
    ck_assert_str_eq(str(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tracking"), "wandb"),
                         "mode"), "disabled");
    cJSON_Delete(j);
    svc_resp_free(&r);
    /* the output folder exists, no .partial beside it */
    char out[4300];
    snprintf(out, sizeof out, "%s/t1/compression_metadata.json", S.outputs);
    ck_assert_int_eq(access(out, R_OK), 0);
    snprintf(out, sizeof out, "%s/t1.partial", S.outputs);
    ck_assert_int_ne(access(out, F_OK), 0);
    /* list shows it */
    svc_req(&S, "GET", "/v1/jobs?status=succeeded", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    j = parse(&r);
    cJSON *jobs = cJSON_GetObjectItem(j, "jobs");
    ck_assert_int_eq(cJSON_GetArraySize(jobs), 1);
    ck_assert_str_eq(str(cJSON_GetArrayItem(jobs, 0), "id"), id);
    cJSON_Delete(j);
    svc_resp_free(&r);
    /* events and metrics */
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "started on"));
    svc_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/metrics", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    j = parse(&r);
    cJSON *loss = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "history"), "fine_tune/loss");
    ck_assert_int_eq(cJSON_GetArraySize(loss), 5);
    cJSON_Delete(j);
    svc_resp_free(&r);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST


/* Every error status of the API with its problem+json body. */
START_TEST(test_errors)
{
    svc_flag(&S, "--set");
    svc_flag(&S, "api.max_body=4096");
    svc_start(&S);
    svc_resp r;
    post("/v1/jobs", "{\"model\": \"tiny\",", &r);
    expect_problem(&r, 400, "body");
    svc_resp_free(&r);
    post("/v1/jobs", "[1,2]", &r);
    expect_problem(&r, 400, "body");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"model\": 5}", &r);
    expect_problem(&r, 400, "/model");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"output\": \"x\"}", &r);
    expect_problem(&r, 400, "/model");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"model\": \"tiny\", \"colour\": 1}", &r);
    expect_problem(&r, 400, "/colour");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"model\": \"tiny\", \"priority\": \"high\"}", &r);
    expect_problem(&r, 400, "/priority");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"model\": \"tiny\", \"config\": {\"bogus\": 1}}", &r);
    expect_problem(&r, 400, "/config/bogus");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"model\": \"tiny\", \"config\": {\"fine_tune\": {\"lr\": -1}}}", &r);
    expect_problem(&r, 400, "/config/fine_tune/lr");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"model\": \"tiny\", \"tracking\": {\"wandb\": {\"mode\": \"loud\"}}}", &r);
    expect_problem(&r, 400, "/tracking/wandb/mode");
    svc_resp_free(&r);
    post("/v1/jobs", "{\"model\": \"nonexistent\"}", &r);
    expect_problem(&r, 400, "/model");
    svc_resp_free(&r);
    /* 413: body over the configured 4 KiB */
    char *big = malloc(8192);
    memset(big, ' ', 8191);
    memcpy(big, "{\"model\":\"tiny\"}", 16);
    big[8191] = 0;
    post("/v1/jobs", big, &r);
    expect_problem(&r, 413, NULL);
    svc_resp_free(&r);
    free(big);
    /* 415 */
    const char *xml[] = {"Content-Type: text/xml", NULL};
    svc_req(&S, "POST", "/v1/jobs", "<job/>", xml, &r);
    expect_problem(&r, 415, "header.Content-Type");
    svc_resp_free(&r);
    /* 404 route and job; 405 with Allow */
    svc_req(&S, "GET", "/v2/nothing", NULL, NULL, &r);
    expect_problem(&r, 404, NULL);
    svc_resp_free(&r);
    svc_req(&S, "GET", "/v1/jobs/job_0000000000000000", NULL, NULL, &r);
    expect_problem(&r, 404, "id");
    svc_resp_free(&r);
    svc_req(&S, "POST", "/v1/jobs/job_0000000000000000/cancel", NULL, NULL, &r);
    expect_problem(&r, 404, "id");
    svc_resp_free(&r);
    svc_req(&S, "PUT", "/v1/jobs", "{}", NULL, &r);
    expect_problem(&r, 405, NULL);
    ck_assert_str_eq(svc_header(&r, "Allow"), "GET, POST");
    svc_resp_free(&r);
    svc_req(&S, "GET", "/v1/jobs/job_0000000000000000/cancel", NULL, NULL, &r);
    expect_problem(&r, 405, NULL);
    ck_assert_str_eq(svc_header(&r, "Allow"), "POST");
    svc_resp_free(&r);
    /* 400 on query parameters */
    svc_req(&S, "GET", "/v1/jobs?status=sleeping", NULL, NULL, &r);
    expect_problem(&r, 400, "query.status");
    svc_resp_free(&r);
    svc_req(&S, "GET", "/v1/jobs?limit=0", NULL, NULL, &r);
    expect_problem(&r, 400, "query.limit");
    svc_resp_free(&r);
    /* 403: path escapes */
    char outside[4300], body[9000];
    snprintf(outside, sizeof outside, "%s/elsewhere", S.root);
    mkdir(outside, 0755);
    snprintf(body, sizeof body, "%s/config.json", outside);
    FILE *f = fopen(body, "w");
    fputs("{}", f);
    fclose(f);
    const char *escapes[] = {
        "{\"model\": \"../elsewhere\"}", "{\"model\": \"tiny/../../elsewhere\"}",
        "{\"model\": \"%2e%2e/elsewhere\"}", "{\"model\": \"tiny\\u0000x\"}",
        "{\"model\": \"tiny\", \"output\": \"/tmp/x\"}",
        "{\"model\": \"tiny\", \"output\": \"../x\"}",
        "{\"model\": \"tiny\", \"output\": \"a%2fb\"}",
    };
    const char *fields[] = {"/model", "/model", "/model", "/model", "/output", "/output",
                            "/output"};
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        post("/v1/jobs", escapes[i], &r);
        expect_problem(&r, 403, fields[i]);
        svc_resp_free(&r);
    }
    snprintf(body, sizeof body, "{\"model\": \"%s\"}", outside);
    post("/v1/jobs", body, &r);
    expect_problem(&r, 403, "/model");
    svc_resp_free(&r);
    char link[4400];
    snprintf(link, sizeof link, "%s/sneaky", S.models);
    ck_assert_int_eq(symlink(outside, link), 0);
    post("/v1/jobs", "{\"model\": \"sneaky\"}", &r);
    expect_problem(&r, 403, "/model");
    svc_resp_free(&r);
    snprintf(link, sizeof link, "%s/escape", S.outputs);
    ck_assert_int_eq(symlink(outside, link), 0);
    post("/v1/jobs", "{\"model\": \"tiny\", \"output\": \"escape/x\"}", &r);
    expect_problem(&r, 403, "/output");
    svc_resp_free(&r);
    /* 409: output exists */
    snprintf(link, sizeof link, "%s/taken", S.outputs);
    mkdir(link, 0755);
    post("/v1/jobs", "{\"model\": \"tiny\", \"output\": \"taken\"}", &r);
    expect_problem(&r, 409, "/output");
    svc_resp_free(&r);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_submit_poll_succeeded);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    curl_global_cleanup();
    return rc;
}
