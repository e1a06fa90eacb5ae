/* test_wandb_client.c - the libcurl W&B client (workers/wandb.c) against the fake server:
 * retry classification, backoff, Retry-After, the deterministic builders (NaN/Inf tokens,
 * wrapped config, file_stream bodies), UpsertBucket/Viewer/file_stream round trips, and
 * every fault the fake can inject. */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bn_test.h"
#include "fake_wandb.h"
#include "wandb.h"

#define KEY "test0123456789abcdefghijklmnopqrstuvwxyzKEY"

static fake_wandb *fw;
static bn_wandb_client *cl;

static void setup(void)
{
    fw = fake_wandb_start(0, KEY);
    ck_assert_ptr_nonnull(fw);
    bn_wandb_client_opts o = { .base_url = fake_wandb_url(fw), .api_key = KEY, .timeout_ms = 5000 };
    cl = bn_wandb_client_new(&o);
    ck_assert_ptr_nonnull(cl);
}

static void teardown(void)
{
    bn_wandb_client_free(cl);
    fake_wandb_stop(fw);
}

static cJSON *state_run(cJSON *st, int i)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItem(st, "runs"), i);
}

static int num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "state has no number %s", k);
    return v->valueint;
}

/* ---- pure helpers ---------------------------------------------------------------------- */

START_TEST(classify_table)
{
    const long fatal[] = { 400, 401, 403, 404, 410, 413, 422, 501 };
    for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++) {
        ck_assert_int_eq(bn_wandb_classify(fatal[i], BN_WANDB_EP_FILE_STREAM), BN_WANDB_FATAL);
        ck_assert_int_eq(bn_wandb_classify(fatal[i], BN_WANDB_EP_UPSERT), BN_WANDB_FATAL);
    }
    const long retry[] = { 0, 408, 429, 500, 502, 503, 504, 599, 600 };
    for (size_t i = 0; i < sizeof retry / sizeof *retry; i++)
        ck_assert_int_eq(bn_wandb_classify(retry[i], BN_WANDB_EP_FILE_STREAM), BN_WANDB_RETRY);
    ck_assert_int_eq(bn_wandb_classify(409, BN_WANDB_EP_FILE_STREAM), BN_WANDB_FATAL);
    ck_assert_int_eq(bn_wandb_classify(409, BN_WANDB_EP_UPSERT), BN_WANDB_RETRY);
    ck_assert_int_eq(bn_wandb_classify(200, BN_WANDB_EP_GRAPHQL), BN_WANDB_OK);
    ck_assert_int_eq(bn_wandb_mode_parse("run"), BN_WANDB_ONLINE);
    ck_assert_int_eq(bn_wandb_mode_parse("dryrun"), BN_WANDB_OFFLINE);
    ck_assert_int_eq(bn_wandb_mode_parse("disabled"), BN_WANDB_DISABLED);
    ck_assert_int_eq(bn_wandb_mode_parse("shared"), -1);
    ck_assert_int_eq(bn_wandb_mode_parse(NULL), -1);
}
END_TEST

START_TEST(backoff_schedule)
{
    uint64_t rng = 12345;
    int64_t prev_floor = 0;
    for (int a = 0; a < 12; a++) {
        int64_t floor = 2000;
        for (int i = 0; i < a && floor < 60000; i++) floor *= 2;
        if (floor > 60000) floor = 60000;
        for (int k = 0; k < 50; k++) {
            int64_t d = bn_wandb_backoff_ms(a, 2000, 60000, -1, &rng);
            ck_assert_int_ge(d, floor);
            ck_assert_int_le(d, floor + floor / 4 < 60000 ? floor + floor / 4 : 60000);
        }
        ck_assert_int_ge(floor, prev_floor);
        prev_floor = floor;
    }
    /* jitter really varies */
    int64_t a = bn_wandb_backoff_ms(3, 1000, 60000, -1, &rng), b = a;
    for (int k = 0; k < 20 && b == a; k++) b = bn_wandb_backoff_ms(3, 1000, 60000, -1, &rng);
    ck_assert_int_ne(a, b);
    /* Retry-After wins when longer, is capped at 10 minutes */
    ck_assert_int_eq(bn_wandb_backoff_ms(0, 10, 100, 5000, &rng), 5000);
    ck_assert_int_eq(bn_wandb_backoff_ms(0, 10, 100, 99999999, &rng), 600000);
    ck_assert_int_le(bn_wandb_backoff_ms(0, 10, 100, 1, &rng), 100);
}
END_TEST

START_TEST(retry_after_values)
{
    ck_assert_int_eq(bn_wandb_parse_retry_after("3", 0), 3000);
    ck_assert_int_eq(bn_wandb_parse_retry_after(" 0 ", 0), 0);
    ck_assert_int_eq(bn_wandb_parse_retry_after("1.5", 0), 1500);
    ck_assert_int_eq(bn_wandb_parse_retry_after("soon", 0), -1);
    ck_assert_int_eq(bn_wandb_parse_retry_after("", 0), -1);
    ck_assert_int_eq(bn_wandb_parse_retry_after(NULL, 0), -1);
    ck_assert_int_eq(bn_wandb_parse_retry_after("-5", 0), -1);
    /* HTTP date: 21 Oct 2015 07:28:00 GMT = 1445412480 */
    ck_assert_int_eq(bn_wandb_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470), 10000);
    ck_assert_int_eq(bn_wandb_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490), 0);
}
END_TEST

START_TEST(numbers_and_lines)
{
    char b[64];
    bn_wandb_format_number(b, sizeof b, NAN);
    ck_assert_str_eq(b, "NaN");
    bn_wandb_format_number(b, sizeof b, INFINITY);
    ck_assert_str_eq(b, "Infinity");
    bn_wandb_format_number(b, sizeof b, -INFINITY);
    ck_assert_str_eq(b, "-Infinity");
    bn_wandb_format_number(b, sizeof b, 19);
    ck_assert_str_eq(b, "19");
    bn_wandb_format_number(b, sizeof b, -0.0);
    ck_assert_str_eq(b, "0");
    const double vals[] = { 0.1, 1.0 / 3.0, 4.0841234567891234, 1e-300, 6.02e23, -2.5 };
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        bn_wandb_format_number(b, sizeof b, vals[i]);
        ck_assert_msg(strtod(b, NULL) == vals[i], "%s does not round-trip", b);
        ck_assert_ptr_null(strstr(b, "nan"));
    }
    bn_wandb_format_number(b, sizeof b, 0.1);
    ck_assert_str_eq(b, "0.1");

    /* payload with extended tokens and a null: tokens kept, null left out, extras appended */
    cJSON *extra = cJSON_CreateObject();
    cJSON_AddNumberToObject(extra, "_runtime", 1.5);
    cJSON_AddNumberToObject(extra, "_step", 99); /* payload's _step wins */
    char *line = bn_wandb_render_line(
        "{\"_step\":3,\"a/b\":NaN,\"c\":Infinity,\"d\":-Infinity,\"e\":null,\"s\":\"x\\\"NaN\"}", extra);
    ck_assert_ptr_nonnull(line);
    ck_assert_str_eq(line, "{\"_step\":3,\"a/b\":NaN,\"c\":Infinity,\"d\":-Infinity,"
                           "\"s\":\"x\\\"NaN\",\"_runtime\":1.5}");
    cJSON *back = bn_wandb_parse_ext(line);
    ck_assert_ptr_nonnull(back);
    ck_assert(isnan(cJSON_GetObjectItem(back, "a/b")->valuedouble));
    ck_assert(isinf(cJSON_GetObjectItem(back, "c")->valuedouble));
    ck_assert(cJSON_GetObjectItem(back, "d")->valuedouble < 0);
    ck_assert_str_eq(cJSON_GetObjectItem(back, "s")->valuestring, "x\"NaN");
    cJSON_Delete(back);
    free(line);
    ck_assert_ptr_null(bn_wandb_render_line("[1,2]", extra));
    ck_assert_ptr_null(bn_wandb_render_line("{broken", extra));
    /* deterministic: same input, same bytes */
    char *l1 = bn_wandb_render_line("{\"k\":0.30000000000000004}", extra);
    char *l2 = bn_wandb_render_line("{\"k\":0.30000000000000004}", extra);
    ck_assert_str_eq(l1, l2);
    free(l1);
    free(l2);
    cJSON_Delete(extra);
}
END_TEST

START_TEST(config_and_body)
{
    char *c = bn_wandb_config_string("{\"seed\":42,\"fine_tune\":{\"enabled\":false}}");
    ck_assert_str_eq(c, "{\"seed\":{\"value\":42},\"fine_tune\":{\"value\":{\"enabled\":false}}}");
    free(c);
    c = bn_wandb_config_string(NULL);
    ck_assert_str_eq(c, "{}");
    free(c);
    ck_assert_ptr_null(bn_wandb_config_string("[1]"));

    bn_wandb_fs_batch hb = { 0 };
    char *body = bn_wandb_fs_body(&hb);
    ck_assert_str_eq(body, "{}");
    free(body);
    const char *lines[] = { "{\"_step\":5}", "{\"_step\":6}" };
    bn_wandb_fs_batch bt = { .history_offset = 5, .history = lines, .n_history = 2,
                             .summary = "{\"x\":1}", .complete = true, .exitcode = 1 };
    body = bn_wandb_fs_body(&bt);
    ck_assert_str_eq(body, "{\"files\":{\"wandb-history.jsonl\":{\"offset\":5,\"content\":"
                           "[\"{\\\"_step\\\":5}\",\"{\\\"_step\\\":6}\"]},"
                           "\"wandb-summary.json\":{\"offset\":0,\"content\":[\"{\\\"x\\\":1}\"]}},"
                           "\"complete\":true,\"exitcode\":1}");
    free(body);
}
END_TEST

/* ---- against the fake ------------------------------------------------------------------ */

static cJSON *vars_for(const char *name, const char *entity)
{
    const char *tags[] = { "bitnetd", "t1" };
    char *cfg = bn_wandb_config_string("{\"seed\":7}");
    bn_wandb_run_spec s = { .name = name, .entity = entity, .project = "proj",
                            .display_name = "disp", .group = "grp", .job_type = "compress",
                            .tags = tags, .n_tags = 2, .config = cfg };
    cJSON *v = bn_wandb_upsert_variables(&s);
    free(cfg);
    return v;
}

START_TEST(upsert_and_stream)
{
    cJSON *v = vars_for("job_00aa", NULL);
    bn_wandb_run run;
    bn_wandb_result res;
    ck_assert_int_eq(bn_wandb_upsert_bucket(cl, v, &run, &res), 0);
    ck_assert_str_eq(run.entity, "fake-entity"); /* filled in by the server */
    ck_assert_str_eq(run.project, "proj");
    ck_assert_str_eq(run.name, "job_00aa");
    ck_assert(run.inserted);
    ck_assert_int_eq(run.history_line_count, 0);
    const char *l[] = { "{\"_step\":0,\"a\":1}", "{\"_step\":1,\"a\":NaN}" };
    bn_wandb_fs_batch bt = { .history = l, .n_history = 2, .summary = "{\"a\":2}" };
    char *body = bn_wandb_fs_body(&bt);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert_int_eq(res.http_status, 200);
    /* an identical re-send is a harmless rewrite */
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    free(body);
    const char *l2[] = { "{\"_step\":1,\"a\":3}" }; /* conflicting rewrite of offset 1 */
    bn_wandb_fs_batch b2 = { .history_offset = 1, .history = l2, .n_history = 1 };
    body = bn_wandb_fs_body(&b2);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    free(body);
    bn_wandb_fs_batch b3 = { .history_offset = 5, .history = l2, .n_history = 1 }; /* gap */
    body = bn_wandb_fs_body(&b3);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    free(body);
    bn_wandb_fs_batch b4 = { .complete = true, .exitcode = 0 };
    body = bn_wandb_fs_body(&b4);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    free(body);
    bn_wandb_fs_batch hb = { 0 };
    body = bn_wandb_fs_body(&hb);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    free(body);

    /* upsert again: same run, historyLineCount reflects stored lines */
    bn_wandb_run again;
    ck_assert_int_eq(bn_wandb_upsert_bucket(cl, v, &again, &res), 0);
    ck_assert(!again.inserted);
    ck_assert_int_eq(again.history_line_count, 6);
    bn_wandb_run_free(&again);

    cJSON *st = fake_wandb_state(fw);
    cJSON *r = state_run(st, 0);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(st, "runs")), 1);
    ck_assert_int_eq(num(r, "upserts"), 2);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "config_is_string")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "config_wrapped")));
    ck_assert_int_eq(num(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "config"), "seed"), "value"), 7);
    ck_assert_int_eq(num(r, "rewrites"), 2);
    ck_assert_int_eq(num(r, "conflicts"), 1);
    ck_assert_int_eq(num(r, "gaps"), 1);
    ck_assert_int_eq(num(r, "history_holes"), 3);
    ck_assert_int_eq(num(r, "completes"), 1);
    ck_assert_int_eq(num(r, "complete_requests"), 2); /* identical re-send of the complete */
    ck_assert_int_eq(num(r, "after_complete"), 1);    /* the heartbeat after it */
    ck_assert_int_eq(num(r, "exitcode"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(r, "summary")->valuestring, "{\"a\":2}");
    cJSON *uv = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "upsert_variables"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(uv, "groupName")->valuestring, "grp");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(uv, "tags")), 2);
    ck_assert_int_eq(num(st, "key_leaks"), 0);
    ck_assert_int_eq(num(st, "fs_before_upsert"), 0);
    cJSON_Delete(st);
    bn_wandb_run_free(&run);
    cJSON_Delete(v);
}
END_TEST

START_TEST(viewer_and_auth)
{
    char *ent = NULL;
    bn_wandb_result res;
    ck_assert_int_eq(bn_wandb_viewer(cl, &ent, &res), 0);
    ck_assert_str_eq(ent, "fake-entity");
    free(ent);
    /* a wrong key: 401, fatal, and the key never appears in the message */
    bn_wandb_client_opts o = { .base_url = fake_wandb_url(fw), .api_key = "wrong-key-0123456789012345678901234567890" };
    bn_wandb_client *bad = bn_wandb_client_new(&o);
    cJSON *v = vars_for("r1", "ent");
    bn_wandb_run run;
    ck_assert_int_ne(bn_wandb_upsert_bucket(bad, v, &run, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_FATAL);
    ck_assert_int_eq(res.http_status, 401);
    ck_assert_ptr_nonnull(strstr(res.message, "invalid API key"));
    ck_assert_ptr_null(strstr(res.message, "wrong-key"));
    bn_wandb_client_free(bad);
    /* 403 with the permission-denied body */
    fake_wandb_queue(fw, "graphql", 403,
                     "{\"errors\":[{\"message\":\"permission denied\",\"path\":[\"upsertBucket\"]}],"
                     "\"data\":{\"upsertBucket\":null}}", 0, false, 1);
    ck_assert_int_ne(bn_wandb_upsert_bucket(cl, v, &run, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_FATAL);
    ck_assert_str_eq(res.message, "HTTP 403: permission denied");
    /* 200 with errors: failure with the message */
    fake_wandb_queue(fw, "graphql", 200, "{\"errors\":[{\"message\":\"entity gone\"}],\"data\":null}",
                     0, false, 1);
    ck_assert_int_ne(bn_wandb_upsert_bucket(cl, v, &run, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_FATAL);
    ck_assert_ptr_nonnull(strstr(res.message, "entity gone"));
    /* 409 on UpsertBucket is retried */
    fake_wandb_queue(fw, "graphql", 409, NULL, 0, false, 1);
    ck_assert_int_ne(bn_wandb_upsert_bucket(cl, v, &run, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_RETRY);
    ck_assert_int_eq(bn_wandb_upsert_bucket(cl, v, &run, &res), 0);
    bn_wandb_run_free(&run);
    cJSON_Delete(v);
}
END_TEST

START_TEST(faults)
{
    cJSON *v = vars_for("r2", "ent");
    bn_wandb_run run;
    bn_wandb_result res;
    ck_assert_int_eq(bn_wandb_upsert_bucket(cl, v, &run, &res), 0);
    const char *l[] = { "{\"_step\":0}" };
    bn_wandb_fs_batch bt = { .history = l, .n_history = 1 };
    char *body = bn_wandb_fs_body(&bt);

    fake_wandb_queue(fw, "file_stream", 429, NULL, 2, false, 1);
    ck_assert_int_ne(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_RETRY);
    ck_assert_int_eq(res.http_status, 429);
    ck_assert_int_eq(res.retry_after_ms, 2000);

    const int retry[] = { 500, 502, 503 };
    for (int i = 0; i < 3; i++) {
        fake_wandb_queue(fw, "file_stream", retry[i], NULL, 0, false, 1);
        ck_assert_int_ne(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
        ck_assert_int_eq(res.outcome, BN_WANDB_RETRY);
        ck_assert_int_eq(res.retry_after_ms, -1);
    }
    const int fatal[] = { 400, 401, 403, 404, 409, 410, 413, 422 };
    for (int i = 0; i < 8; i++) {
        fake_wandb_queue(fw, "file_stream", fatal[i], "{\"error\":\"nope\"}", 0, false, 1);
        ck_assert_int_ne(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
        ck_assert_int_eq(res.outcome, BN_WANDB_FATAL);
        ck_assert_int_eq(res.http_status, fatal[i]);
        ck_assert_ptr_nonnull(strstr(res.message, "nope"));
    }
    /* apply then fail: stored, answered 500; the retry is a same-line rewrite */
    fake_wandb_queue(fw, "file_stream", 500, NULL, 0, true, 1);
    ck_assert_int_ne(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_RETRY);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    /* a dropped connection (twice: curl itself retries a reused connection once) */
    fake_wandb_queue(fw, "file_stream", 0, NULL, 0, false, 2);
    ck_assert_int_ne(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_RETRY);
    ck_assert_int_eq(res.http_status, 0);
    fake_wandb_queue(fw, "file_stream", 200, "malformed response", 0, false, 1);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    fake_wandb_queue(fw, "file_stream", 200, "{\"stopped\":true}", 0, false, 1);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert(res.stopped);
    /* down: connection refused is retryable; up again: works */
    ck_assert_int_eq(fake_wandb_set_down(fw, true), 0);
    ck_assert_int_ne(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_RETRY);
    ck_assert_int_eq(res.http_status, 0);
    ck_assert_int_eq(fake_wandb_set_down(fw, false), 0);
    ck_assert_int_eq(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    /* every request refused with 403 */
    fake_wandb_faults f = { .auth_status = 403 };
    snprintf(f.auth_message, sizeof f.auth_message, "permission denied for entity");
    fake_wandb_set_faults(fw, &f);
    ck_assert_int_ne(bn_wandb_file_stream(cl, run.entity, run.project, run.name, body, &res), 0);
    ck_assert_int_eq(res.outcome, BN_WANDB_FATAL);
    ck_assert_str_eq(res.message, "HTTP 403: permission denied for entity");
    /* file_stream to a run never upserted */
    fake_wandb_faults none = { 0 };
    fake_wandb_set_faults(fw, &none);
    ck_assert_int_ne(bn_wandb_file_stream(cl, "ent", "proj", "nosuch", body, &res), 0);
    ck_assert_int_eq(res.http_status, 404);

    cJSON *st = fake_wandb_state(fw);
    cJSON *r = state_run(st, 0);
    ck_assert_int_eq(num(r, "conflicts"), 0);
    ck_assert_int_eq(num(r, "gaps"), 0);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(r, "history")), 1);
    ck_assert_int_eq(num(st, "fs_before_upsert"), 1);
    cJSON_Delete(st);
    free(body);
    bn_wandb_run_free(&run);
    cJSON_Delete(v);
}
END_TEST

START_TEST(percent_faults_are_mixed)
{
    fake_wandb_faults f = { .fail_percent = 30, .retry_after_s = 1, .seed = 99 };
    fake_wandb_set_faults(fw, &f);
    int fail = 0, ok = 0, ra = 0;
    for (int i = 0; i < 100; i++) {
        char *ent = NULL;
        bn_wandb_result res;
        if (bn_wandb_viewer(cl, &ent, &res) == 0) ok++;
        else {
            fail++;
            ck_assert_int_eq(res.outcome, BN_WANDB_RETRY);
            if (res.http_status == 429) {
                ra++;
                ck_assert_int_eq(res.retry_after_ms, 1000);
            }
        }
        free(ent);
    }
    ck_assert_int_gt(fail, 15);
    ck_assert_int_lt(fail, 45);
    ck_assert_int_gt(ra, 0);
    ck_assert_int_eq(fake_wandb_request_count(fw), 100);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wandb_client");
    TCase *pure = tcase_create("pure");
    tcase_add_test(pure, classify_table);
    tcase_add_test(pure, backoff_schedule);
    tcase_add_test(pure, retry_after_values);
    tcase_add_test(pure, numbers_and_lines);
    tcase_add_test(pure, config_and_body);
    suite_add_tcase(s, pure);
    TCase *net = tcase_create("fake");
    tcase_add_checked_fixture(net, setup, teardown);
    tcase_set_timeout(net, 30);
    tcase_add_test(net, upsert_and_stream);
    tcase_add_test(net, viewer_and_auth);
    tcase_add_test(net, faults);
    tcase_add_test(net, percent_faults_are_mixed);
    suite_add_tcase(s, net);
    return bn_test_run(s);
}
