/* test_real_job.c - bitnetd with the real engine: submit -> poll -> succeeded on a tiny
 * random Llama folder made by `bitnetctl init-model`, the output folder of the engine
 * (FP16 model, quantized/, compression_metadata.json with per-file SHA-256); and ("full",
 * suite 'data') kill -9 of the daemon at several points of a running job followed by a restart: the job
 * completes and every output file's checksum equals the uninterrupted run's. */
#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_test.h"
#include "svc.h"

static svc S;
static const char *const stages[] = {"load", "calibrate", "quantize", "evaluate",
                                     "finetune", "export"};

static void setup(void)
{
    svc_init(&S, bn_test_build_path("daemon/bitnetd"));
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "%s init-model %s/llama --shape tiny --seed 5 >/dev/null",
             bn_test_build_path("cli/bitnetctl"), S.models);
    ck_assert_int_eq(system(cmd), 0);
}

static void teardown(void)
{
    svc_cleanup(&S);
}

static int stage_index(const char *s)
{
    for (int i = 0; i < 6; i++)
        if (!strcmp(s, stages[i])) return i;
    return -1;
}

/* "path=sha256;" list of the output's files from compression_metadata.json. */
static char *file_sums(const char *output)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s/compression_metadata.json", S.outputs, output);
    char *text = svc_read_file(p);
    ck_assert_msg(text != NULL, "%s missing", p);
    cJSON *j = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(j);
    char *out = calloc(1, 65536);
    cJSON *f;
    int n = 0;
    cJSON_ArrayForEach(f, cJSON_GetObjectItem(j, "files")) {
        const char *path = cJSON_GetObjectItem(f, "path")->valuestring;
        const char *sha = cJSON_GetObjectItem(f, "sha256")->valuestring;
        snprintf(out + strlen(out), 65536 - strlen(out), "%s=%s;", path, sha);
        n++;
    }
    cJSON_Delete(j);
    ck_assert_int_gt(n, 2);
    ck_assert_ptr_nonnull(strstr(out, "model.safetensors="));
    return out;
}

/* quick: a small calibration, no fine-tuning; full: fine-tuning forced (threshold 0)
 * with checkpoints every 4 steps, so kills land inside every stage. */
static bool full_run;

static void submit(const char *output, char id[64])
{
    char body[512];
    snprintf(body, sizeof body, "{\"model\":\"llama\",\"output\":\"%s\",\"config\":"
             "{\"seed\":11,\"threads\":1,\"calibration\":{\"samples\":8,"
             "\"sequence_length\":32},\"evaluate\":{\"windows\":2},\"fine_tune\":%s}}", output,
             full_run ? "{\"threshold\":0,\"max_steps\":12,\"checkpoint_every\":4,\"allow_synthetic\":true}"
                      : "{\"enabled\":false}");
    ck_assert_int_eq(svc_submit(&S, body, NULL, id), 201);
}

/* submit -> poll -> succeeded, the engine's output folder, events and metrics. */
START_TEST(test_real_submit)
{
    svc_start(&S);
    char id[64];
    submit("one", id);
    ck_assert_str_eq(svc_wait(&S, id, 300), "succeeded");
    char *sums = file_sums("one");
    ck_assert_ptr_nonnull(strstr(sums, "quantized/model.safetensors="));
    free(sums);
    char metrics[128];
    snprintf(metrics, sizeof metrics, "/v1/jobs/%s/metrics", id);
    svc_resp r;
    svc_req(&S, "GET", metrics, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"compression/ratio\""));
    svc_resp_free(&r);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

START_TEST(test_real_submit_and_kill9)
{
    svc_start(&S);
    char ref[64];
    submit("ref", ref);
    ck_assert_str_eq(svc_wait(&S, ref, 120), "succeeded");
    char *ref_sums = file_sums("ref");
    int killed = 0;
    for (int target = 1; target < 6; target++) {
        char out[32], id[64];
        snprintf(out, sizeof out, "kill-%s", stages[target]);
        submit(out, id);
        /* kill as soon as the job is at (or past) the target stage and still running */
        bool hit = false;
        double t0 = svc_now();
        while (svc_now() - t0 < 60) {
            const char *st = svc_job_field(&S, id, "status");
            if (strcmp(st, "running") && strcmp(st, "queued")) break;
            if (!strcmp(st, "running") && stage_index(svc_job_field(&S, id, "stage")) >= target) {
                hit = true;
                break;
            }
            usleep(2000);
        }
        if (hit) {
            svc_stop(&S, SIGKILL);
            killed++;
            svc_start(&S);
        }
        ck_assert_str_eq(svc_wait(&S, id, 120), "succeeded");
        char *sums = file_sums(out);
        ck_assert_str_eq(sums, ref_sums);
        free(sums);
        DIR *d = opendir(S.outputs);
        struct dirent *e;
        while ((e = readdir(d))) ck_assert(!strstr(e->d_name, ".partial"));
        closedir(d);
    }
    ck_assert_int_ge(killed, 2); /* at least two kill points landed inside the run */
    free(ref_sums);
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

/* "quick" (integration suite, also under sanitizers): one job. "full" (data suite):
 * kill -9 at every stage. */
int main(int argc, char **argv)
{
    bool full = argc > 1 && !strcmp(argv[1], "full");
    full_run = full;
    curl_global_init(CURL_GLOBAL_ALL);
    Suite *s = suite_create("real-job");
    TCase *tc = tcase_create("real-job");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    if (full) tcase_add_test(tc, test_real_submit_and_kill9);
    else tcase_add_test(tc, test_real_submit);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    curl_global_cleanup();
    return rc;
}
