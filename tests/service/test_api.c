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
#include <arpa/inet.h>
#include <errno.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/device.h"
#include "base/checksum.h"
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
    /* device: an unknown name, and a GPU job on a build or host that cannot run one:
     * refused at submission, saying which of the two */
    post("/v1/jobs", "{\"model\": \"tiny\", \"config\": {\"device\": \"tpu\"}}", &r);
    expect_problem(&r, 400, "/config/device");
    svc_resp_free(&r);
    if (!bn_device_cuda_usable(NULL, 0)) {
        post("/v1/jobs", "{\"model\": \"tiny\", \"config\": {\"device\": \"cuda\"}}", &r);
        expect_problem(&r, 400, "/config/device");
        ck_assert_msg(strstr(r.body, bn_device_cuda_built() ? "needs a GPU" : "built with CUDA"), "%s", r.body);
        svc_resp_free(&r);
    }
    /* a config.json the engine would compute differently from transformers: refused now,
     * naming the key and its value */
    svc_model(&S, "longrope", "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
                              "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100, "
                              "\"rope_scaling\": {\"rope_type\": \"longrope\", \"factor\": 4}}");
    post("/v1/jobs", "{\"model\": \"longrope\"}", &r);
    expect_problem(&r, 400, "/model");
    ck_assert_msg(strstr(r.body, "rope_scaling.rope_type") && strstr(r.body, "longrope"), "%s", r.body);
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

START_TEST(test_idempotency)
{
    svc_start(&S);
    char a[64], b[64], c[64];
    const char *body = "{\"model\":\"tiny\",\"output\":\"idem\"}";
    ck_assert_int_eq(svc_submit(&S, body, "key-1", a), 201);
    ck_assert_int_eq(svc_submit(&S, body, "key-1", b), 200);
    ck_assert_str_eq(a, b);
    ck_assert_str_eq(svc_wait(&S, a, 30), "succeeded");
    /* still the same job after it finished and its output exists */
    ck_assert_int_eq(svc_submit(&S, body, "key-1", c), 200);
    ck_assert_str_eq(a, c);
    /* the same key with another body is a conflict */
    svc_resp r;
    const char *h[] = {"Content-Type: application/json", "Idempotency-Key: key-1", NULL};
    svc_req(&S, "POST", "/v1/jobs", "{\"model\":\"tiny\",\"output\":\"other\"}", h, &r);
    expect_problem(&r, 409, "header.Idempotency-Key");
    svc_resp_free(&r);
    svc_req(&S, "GET", "/v1/jobs", NULL, NULL, &r);
    cJSON *j = parse(&r);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "jobs")), 1);
    cJSON_Delete(j);
    svc_resp_free(&r);
}
END_TEST

START_TEST(test_cancel)
{
    svc_setenv(&S, "BN_FAKE_STAGE_MS=2000");
    svc_start(&S);
    char run[64], queued[64], path[256];
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"c1\"}", NULL, run), 201);
    ck_assert(svc_wait_stage(&S, run, "load", 10));
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"c2\"}", NULL, queued),
                     201);
    svc_resp r;
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", queued);
    svc_req(&S, "POST", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    svc_resp_free(&r);
    ck_assert_str_eq(svc_job_field(&S, queued, "status"), "cancelled");
    svc_req(&S, "POST", path, NULL, NULL, &r);
    expect_problem(&r, 409, "id");
    svc_resp_free(&r);
    /* running: 202 then cancelled at the next safe point, work folder removed */
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", run);
    svc_req(&S, "POST", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 202);
    svc_resp_free(&r);
    ck_assert_str_eq(svc_wait(&S, run, 10), "cancelled");
    char wd[4400];
    snprintf(wd, sizeof wd, "%s/work/%s", S.state, run);
    ck_assert_int_ne(access(wd, F_OK), 0);
    /* DELETE: finished jobs only; purge */
    snprintf(path, sizeof path, "/v1/jobs/%s", run);
    svc_req(&S, "DELETE", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 204);
    svc_resp_free(&r);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    expect_problem(&r, 404, "id");
    svc_resp_free(&r);
}
END_TEST

START_TEST(test_delete_running_conflict_and_queue_full)
{
    svc_setenv(&S, "BN_FAKE_STAGE_MS=2000");
    svc_flag(&S, "--set");
    svc_flag(&S, "api.max_queued=1");
    svc_start(&S);
    char a[64], b[64], c[64], path[256];
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"q1\"}", NULL, a), 201);
    ck_assert(svc_wait_stage(&S, a, "load", 10));
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"q2\"}", NULL, b), 201);
    svc_resp r;
    post("/v1/jobs", "{\"model\":\"tiny\",\"output\":\"q3\"}", &r);
    expect_problem(&r, 429, NULL);
    ck_assert_ptr_nonnull(svc_header(&r, "Retry-After"));
    svc_resp_free(&r);
    (void)c;
    snprintf(path, sizeof path, "/v1/jobs/%s", a);
    svc_req(&S, "DELETE", path, NULL, NULL, &r);
    expect_problem(&r, 409, "id");
    svc_resp_free(&r);
    /* the same output as an active job */
    post("/v1/jobs", "{\"model\":\"tiny\",\"output\":\"q1\"}", &r);
    expect_problem(&r, 409, "/output");
    svc_resp_free(&r);
}
END_TEST

START_TEST(test_artifacts_sse_metrics_openapi)
{
    svc_start(&S);
    char id[64], path[512];
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"art\"}", NULL, id), 201);
    /* the event stream ends with the final status */
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    const char *sse[] = {"Accept: text/event-stream", NULL};
    svc_resp r;
    svc_req(&S, "GET", path, NULL, sse, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(svc_header(&r, "Content-Type"), "text/event-stream"));
    ck_assert_ptr_nonnull(strstr(r.body, "id: 1\nevent: job-event\ndata: {"));
    ck_assert_ptr_nonnull(strstr(r.body, "event: end\ndata: {\"status\":\"succeeded\"}"));
    svc_resp_free(&r);
    const char *last[] = {"Accept: text/event-stream", "Last-Event-ID: 1", NULL};
    svc_req(&S, "GET", path, NULL, last, &r);
    ck_assert_ptr_null(strstr(r.body, "id: 1\n"));
    svc_resp_free(&r);
    /* artifacts */
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"path\":\"model.safetensors\""));
    ck_assert_ptr_null(strstr(r.body, ".partial"));
    svc_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts/model.safetensors", id);
    const char *range[] = {"Range: bytes=10-19", NULL};
    svc_req(&S, "GET", path, NULL, range, &r);
    ck_assert_int_eq(r.status, 206);
    ck_assert_int_eq(r.len, 10);
    ck_assert_str_eq(svc_header(&r, "Content-Range"), "bytes 10-19/65536");
    char file[4400];
    snprintf(file, sizeof file, "%s/art/model.safetensors", S.outputs);
    char *whole = svc_read_file(file);
    ck_assert_int_eq(memcmp(whole + 10, r.body, 10), 0);
    free(whole);
    svc_resp_free(&r);
    const char *bad[] = {"Range: bytes=70000-", NULL};
    svc_req(&S, "GET", path, NULL, bad, &r);
    expect_problem(&r, 416, "header.Range");
    ck_assert_str_eq(svc_header(&r, "Content-Range"), "bytes */65536");
    svc_resp_free(&r);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(r.len, 65536);
    svc_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts/../../state/bitnetd.db", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    expect_problem(&r, 403, "path");
    svc_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts/nope.bin", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    expect_problem(&r, 404, "path");
    svc_resp_free(&r);
    /* /metrics */
    svc_req(&S, "GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_jobs{status=\"succeeded\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "bitnetd_queue_depth 0\n"));
    ck_assert_ptr_nonnull(strstr(r.body,
        "bitnetd_stage_duration_seconds_count{stage=\"export\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body,
        "bitnetd_http_requests_total{route=\"/v1/jobs\",code=\"201\"} 1\n"));
    svc_resp_free(&r);
    /* health */
    svc_req(&S, "GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    svc_resp_free(&r);
    svc_req(&S, "GET", "/readyz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    svc_resp_free(&r);
    svc_req(&S, "GET", "/", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(svc_header(&r, "Content-Type"), "text/html"));
    svc_resp_free(&r);
    /* every route is in the OpenAPI document with its methods */
    svc_req(&S, "GET", "/v1/openapi.json", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    cJSON *doc = parse(&r);
    ck_assert_str_eq(str(doc, "openapi"), "3.1.0");
    cJSON *paths = cJSON_GetObjectItem(doc, "paths");
    static const char *const routes[][2] = {
        {"/", "get"}, {"/healthz", "get"}, {"/readyz", "get"}, {"/metrics", "get"},
        {"/v1/openapi.json", "get"}, {"/v1/jobs", "get"}, {"/v1/jobs", "post"},
        {"/v1/jobs/{id}", "get"}, {"/v1/jobs/{id}", "delete"}, {"/v1/jobs/{id}/events", "get"},
        {"/v1/jobs/{id}/metrics", "get"}, {"/v1/jobs/{id}/artifacts", "get"},
        {"/v1/jobs/{id}/artifacts/{path}", "get"}, {"/v1/jobs/{id}/cancel", "post"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(paths, routes[i][0]);
        ck_assert_msg(p && cJSON_GetObjectItemCaseSensitive(p, routes[i][1]),
                      "%s %s missing from openapi.json", routes[i][1], routes[i][0]);
        /* and the server answers it with something other than 404/405 */
        char url[256], up[16];
        snprintf(url, sizeof url, "%s", routes[i][0]);
        char *brace;
        while ((brace = strstr(url, "{id}"))) {
            char rest[256];
            snprintf(rest, sizeof rest, "%s", brace + 4);
            snprintf(brace, sizeof url - (size_t)(brace - url), "%s%s", id, rest);
        }
        if ((brace = strstr(url, "{path}"))) snprintf(brace, 32, "model.safetensors");
        for (size_t k = 0; k <= strlen(routes[i][1]); k++)
            up[k] = (char)(routes[i][1][k] >= 'a' ? routes[i][1][k] - 32 : routes[i][1][k]);
        if (!strcmp(up, "DELETE") || !strcmp(up, "POST")) continue;
        svc_resp q;
        svc_req(&S, up, url, NULL, NULL, &q);
        ck_assert_msg(q.status == 200, "%s %s -> %ld", up, url, q.status);
        svc_resp_free(&q);
    }
    cJSON_Delete(doc);
    svc_resp_free(&r);
}
END_TEST

static void sha_hex(const char *s, char out[65])
{
    ck_assert_int_eq(bn_sha256_hex(s, strlen(s), out), 0);
}

static void write_tokens(const char *path, bool with_reader)
{
    char a[65], b[65], c[65];
    sha_hex("reader-secret-1", a);
    sha_hex("submit-secret-2", b);
    sha_hex("admin-secret-3", c);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "# name scope sha256\n");
    if (with_reader) fprintf(f, "reader read %s\n", a);
    fprintf(f, "ci submit %s\nboss admin %s\n", b, c);
    fclose(f);
}

static long auth_req(const char *method, const char *path, const char *token, const char *body)
{
    char h[256];
    snprintf(h, sizeof h, "Authorization: Bearer %s", token);
    const char *hs[] = {"Content-Type: application/json", token ? h : NULL, NULL};
    svc_resp r;
    svc_req(&S, method, path, body, hs, &r);
    long st = r.status;
    if (st == 401) ck_assert_ptr_nonnull(svc_header(&r, "WWW-Authenticate"));
    if (st == 401 || st == 403) expect_problem(&r, st, "header.Authorization");
    svc_resp_free(&r);
    return st;
}

/* Tokens: 401 without, 403 with too small a scope, healthz open, SIGHUP reload, tokens
 * never logged. */
START_TEST(test_auth)
{
    char tokens[4400];
    snprintf(tokens, sizeof tokens, "%s/tokens", S.root);
    write_tokens(tokens, true);
    svc_flag(&S, "--tokens-file");
    svc_flag(&S, tokens);
    svc_start(&S);
    ck_assert_int_eq(auth_req("GET", "/healthz", NULL, NULL), 200);
    ck_assert_int_eq(auth_req("GET", "/readyz", NULL, NULL), 200);
    ck_assert_int_eq(auth_req("GET", "/v1/jobs", NULL, NULL), 401);
    ck_assert_int_eq(auth_req("GET", "/v1/jobs", "wrong-secret", NULL), 401);
    ck_assert_int_eq(auth_req("GET", "/v1/jobs", "reader-secret-1", NULL), 200);
    ck_assert_int_eq(auth_req("GET", "/metrics", "reader-secret-1", NULL), 200);
    const char *body = "{\"model\":\"tiny\",\"output\":\"auth1\"}";
    ck_assert_int_eq(auth_req("POST", "/v1/jobs", "reader-secret-1", body), 403);
    ck_assert_int_eq(auth_req("POST", "/v1/jobs", "submit-secret-2", body), 201);
    svc_resp r;
    const char *h[] = {"Authorization: Bearer reader-secret-1", NULL};
    svc_req(&S, "GET", "/v1/jobs", NULL, h, &r);
    cJSON *j = parse(&r);
    char id[64], path[128];
    snprintf(id, sizeof id, "%s", str(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "jobs"), 0),
                                      "id"));
    cJSON_Delete(j);
    svc_resp_free(&r);
    for (int i = 0; i < 400; i++) {
        snprintf(path, sizeof path, "/v1/jobs/%s", id);
        svc_req(&S, "GET", path, NULL, h, &r);
        bool done = strstr(r.body, "\"succeeded\"") != NULL;
        svc_resp_free(&r);
        if (done) break;
        usleep(25000);
    }
    ck_assert_int_eq(auth_req("DELETE", path, "submit-secret-2", NULL), 403);
    ck_assert_int_eq(auth_req("DELETE", path, "admin-secret-3", NULL), 204);
    /* SIGHUP reloads the file: the reader token stops working */
    write_tokens(tokens, false);
    kill(S.pid, SIGHUP);
    long st = 0;
    for (int i = 0; i < 100 && st != 401; i++) {
        usleep(20000);
        st = auth_req("GET", "/v1/jobs", "reader-secret-1", NULL);
    }
    ck_assert_int_eq(st, 401);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
    char *log = svc_read_file(S.log);
    ck_assert_ptr_nonnull(log);
    ck_assert_ptr_null(strstr(log, "secret"));
    ck_assert_ptr_nonnull(strstr(log, "reload: 2 tokens"));
    free(log);
}
END_TEST

/* No tokens file: a non-loopback address is refused at start-up. */
START_TEST(test_refuse_public_without_tokens)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(S.log, "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(126);
        execl(S.binary, S.binary, "--listen", "0.0.0.0:0", "--state-dir", S.state,
              "--model-root", S.models, (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 1);
    char *log = svc_read_file(S.log);
    ck_assert_ptr_nonnull(strstr(log, "refusing to listen on non-loopback address"));
    free(log);
}
END_TEST

/* --gpus on a build or host without a usable GPU: the daemon does not start, and says why;
 * an "auto" job runs on a CPU worker. */
START_TEST(test_gpus_without_gpu)
{
    if (bn_device_cuda_usable(NULL, 0)) return; /* a GPU host: tests/gpu covers it */
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(S.log, "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(126);
        execl(S.binary, S.binary, "--listen", "127.0.0.1:0", "--state-dir", S.state,
              "--model-root", S.models, "--gpus", "0", (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_ne(WEXITSTATUS(status), 0);
    char *log = svc_read_file(S.log);
    ck_assert_msg(strstr(log, bn_device_cuda_built() ? "gpus: GPU 0 is not visible"
                                                     : "gpus: \"0\": this bitnetd is built without the CUDA backend"),
                  "%s", log);
    free(log);
    svc_start(&S);
    char id[64];
    ck_assert_int_eq(svc_submit(&S, "{\"model\":\"tiny\",\"output\":\"auto1\",\"config\":{\"device\":\"auto\"}}",
                                NULL, id), 201);
    ck_assert_str_eq(svc_wait(&S, id, 30), "succeeded");
    svc_resp r;
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    svc_req(&S, "GET", path, NULL, NULL, &r);
    ck_assert_ptr_nonnull(strstr(r.body, "started on"));
    ck_assert_ptr_null(strstr(r.body, ", GPU "));
    svc_resp_free(&r);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

/* systemd socket activation: an inherited listening socket replaces --listen. */
START_TEST(test_socket_activation)
{
    const char *sa = "/usr/bin/systemd-socket-activate";
    if (access(sa, X_OK) != 0) return; /* not on this machine: nothing to check */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(probe, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(probe, (struct sockaddr *)&a, &len);
    int port = ntohs(a.sin_port);
    close(probe);
    char listen_arg[64];
    snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(S.log, "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(126);
        execl(sa, sa, "-l", listen_arg, S.binary, "--state-dir", S.state, "--listen",
              "127.0.0.1:1", "--model-root", S.models, (char *)NULL);
        _exit(127);
    }
    S.pid = pid;
    snprintf(S.url, sizeof S.url, "http://%s", listen_arg);
    svc_resp r = {0};
    for (int i = 0; i < 200 && r.status != 200; i++) { /* the first connection starts it */
        svc_resp_free(&r);
        svc_req(&S, "GET", "/healthz", NULL, NULL, &r);
        if (r.status != 200) usleep(20000);
    }
    ck_assert_int_eq(r.status, 200);
    svc_resp_free(&r);
    char url_file[4400];
    snprintf(url_file, sizeof url_file, "%s/bitnetd.url", S.state);
    char *u = NULL;
    for (int i = 0; i < 200 && !u; i++) /* written just after the API starts */
        if (!(u = svc_read_file(url_file))) usleep(10000);
    ck_assert_ptr_nonnull(u);
    ck_assert_ptr_nonnull(strstr(u, listen_arg));
    free(u);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

/* Slow clients (half-sent requests) hold connection slots, never the server: a normal
 * request still answers at once, and the idle ones are dropped after the timeout. */
START_TEST(test_slow_clients)
{
    svc_flag(&S, "--set");
    svc_flag(&S, "api.connection_timeout=2");
    svc_start(&S);
    int port = atoi(strrchr(S.url, ':') + 1);
    int fds[40];
    for (int i = 0; i < 40; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
        const char *part = i % 2 ? "GET /v1/jobs HTTP/1.1\r\nHost: x\r\n"
                                 : "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                   "application/json\r\nContent-Length: 100\r\n\r\n{\"mo";
        ck_assert_int_eq(write(fds[i], part, strlen(part)), (ssize_t)strlen(part));
    }
    double t0 = svc_now();
    svc_resp r;
    svc_req(&S, "GET", "/v1/jobs", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    svc_resp_free(&r);
    ck_assert_msg(svc_now() - t0 < 1.0, "a normal request took %.2f s", svc_now() - t0);
    /* after the timeout the server has closed the stalled connections */
    usleep(3500000);
    int closed = 0;
    for (int i = 0; i < 40; i++) {
        char buf[256];
        struct timeval tv = {0, 200000};
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t n = read(fds[i], buf, sizeof buf);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) closed++;
        close(fds[i]);
    }
    ck_assert_int_eq(closed, 40);
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
    tcase_add_test(tc, test_idempotency);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_delete_running_conflict_and_queue_full);
    tcase_add_test(tc, test_artifacts_sse_metrics_openapi);
    tcase_add_test(tc, test_auth);
    tcase_add_test(tc, test_refuse_public_without_tokens);
    tcase_add_test(tc, test_gpus_without_gpu);
    tcase_add_test(tc, test_socket_activation);
    tcase_add_test(tc, test_slow_clients);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    curl_global_cleanup();
    return rc;
}
