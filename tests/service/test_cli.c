/* test_cli.c - bitnetctl's client commands against a real bitnetd (stand-in engine):
 * token new -> a tokens file the daemon accepts; submit --wait, status, list, logs,
 * artifacts, fetch, cancel, and the documented exit codes. */
#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bn_test.h"
#include "svc.h"

static svc S;
static char token[128];

static void setup(void)
{
    svc_init(&S, bn_test_build_path("tests/service/bitnetd-fake"));
}

static void teardown(void)
{
    svc_cleanup(&S);
}

/* Runs bitnetctl with args (shell words); captures stdout; returns the exit code. */
static int ctl(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ctl(char *out, size_t cap, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd %s && BITNETD_URL=%s BITNETD_TOKEN=%s %s %s 2>>%s/ctl.err",
             S.root, S.url, token, bn_test_build_path("cli/bitnetctl"), args, S.root);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = out ? fread(out, 1, cap - 1, p) : 0;
    if (out) out[n] = 0;
    else {
        char sink[4096];
        while (fread(sink, 1, sizeof sink, p) > 0) {}
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_cli_flow)
{
    /* token new: line 1 the token, line 2 the tokens-file line */
    char out[8192], tokens[4400];
    ck_assert_int_eq(ctl(out, sizeof out, "token new ci --scope admin"), 0);
    char *nl = strchr(out, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = 0;
    snprintf(token, sizeof token, "%.100s", out);
    ck_assert_int_eq(strncmp(token, "bnt_", 4), 0);
    snprintf(tokens, sizeof tokens, "%s/tokens", S.root);
    FILE *f = fopen(tokens, "w");
    fputs(nl + 1, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(nl + 1, "ci admin "));
    svc_flag(&S, "--tokens-file");
    svc_flag(&S, tokens);
    svc_start(&S);

    ck_assert_int_eq(ctl(out, sizeof out, "submit %s/tiny --output o1 --config '{\"seed\":3}' --wait",
                         S.models), 0);
    ck_assert_ptr_nonnull(strstr(out, "job_"));
    ck_assert_ptr_nonnull(strstr(out, "succeeded"));
    ck_assert_ptr_nonnull(strstr(out, "compression/ratio"));
    char id[32];
    snprintf(id, sizeof id, "%.20s", strstr(out, "job_"));
    ck_assert_int_eq(ctl(out, sizeof out, "status %s", id), 0);
    ck_assert_ptr_nonnull(strstr(out, "succeeded"));
    ck_assert_int_eq(ctl(out, sizeof out, "status %s --json", id), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"status\":\t\"succeeded\""));
    ck_assert_int_eq(ctl(out, sizeof out, "list"), 0);
    ck_assert_ptr_nonnull(strstr(out, id));
    ck_assert_int_eq(ctl(out, sizeof out, "logs %s", id), 0);
    ck_assert_ptr_nonnull(strstr(out, "started on"));
    ck_assert_int_eq(ctl(out, sizeof out, "artifacts %s", id), 0);
    ck_assert_ptr_nonnull(strstr(out, "model.safetensors"));
    ck_assert_int_eq(ctl(NULL, 0, "fetch %s compression_metadata.json -o meta.json", id), 0);
    char path[4400];
    snprintf(path, sizeof path, "%s/meta.json", S.root);
    char *meta = svc_read_file(path);
    ck_assert_ptr_nonnull(meta);
    ck_assert_ptr_nonnull(strstr(meta, "checksum"));
    free(meta);
    /* exit codes */
    ck_assert_int_eq(ctl(NULL, 0, "cancel %s", id), 5);              /* 409: already final */
    ck_assert_int_eq(ctl(NULL, 0, "status job_0000000000000000"), 4); /* 404 */
    ck_assert_int_eq(ctl(NULL, 0, "submit %s/tiny --config '{\"nope\":1}'", S.models), 5);
    ck_assert_int_eq(ctl(NULL, 0, "status"), 2);                     /* usage */
    ck_assert_int_eq(ctl(NULL, 0, "status %s --server http://127.0.0.1:1", id), 3);
    snprintf(token, sizeof token, "wrong");
    ck_assert_int_eq(ctl(NULL, 0, "list"), 5);                       /* 401 */
    ck_assert_int_eq(svc_stop(&S, SIGTERM), 0);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cli_flow);
    suite_add_tcase(s, tc);
    int rc = bn_test_run(s);
    curl_global_cleanup();
    return rc;
}
