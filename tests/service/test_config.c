/* test_config.c - unit tests of bitnetd's configuration layers (daemon/config.c): file
 * with sections, BITNETD_* environment over the file, flags over both, repeated
 * --model-root, and errors that name the key and the file line. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "daemon.h"

static char *tmp;
static char path[4200];

static void setup(void)
{
    tmp = bn_test_tmpdir("cfg");
    snprintf(path, sizeof path, "%s/bitnetd.conf", tmp);
    unsetenv("BITNETD_WORKERS");
    unsetenv("BITNETD_API_MAX_BODY");
    unsetenv("BITNETD_MODEL_ROOT");
}

static void teardown(void)
{
    bn_test_rmtree(tmp);
    free(tmp);
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(test_layers)
{
    write_file("# comment\nlisten = 127.0.0.1:9000\nworkers = 2\nmodel_root = /a\n"
               "model_root = /b\n\n[api]\nmax_body = 2048\nthreads = 8\n"
               "[jobs]\nmax_attempts = 5\n[wandb]\nproject = \"p1\"\n");
    bn_daemon_config c;
    bn_daemon_config_default(&c);
    char err[512];
    ck_assert_int_eq(bn_daemon_config_file(&c, path, err, sizeof err), 0);
    ck_assert_str_eq(c.listen, "127.0.0.1:9000");
    ck_assert_int_eq(c.workers, 2);
    ck_assert_int_eq(c.n_model_roots, 2);
    ck_assert_str_eq(c.model_roots[1], "/b");
    ck_assert_int_eq(c.max_body, 2048);
    ck_assert_int_eq(c.http_threads, 8);
    ck_assert_int_eq(c.max_attempts, 5);
    ck_assert_str_eq(c.wandb_project, "p1");
    setenv("BITNETD_WORKERS", "3", 1);
    setenv("BITNETD_API_MAX_BODY", "4096", 1);
    int bad;
    bn_daemon_config_env(&c, err, sizeof err, &bad);
    ck_assert_int_eq(bad, 0);
    ck_assert_int_eq(c.workers, 3);
    ck_assert_int_eq(c.max_body, 4096);
    char *argv[] = {"bitnetd", "--workers", "4", "--model-root", "/c", "--model-root=/d",
                    "--set", "jobs.grace_seconds=7", "--log-format", "json", NULL};
    ck_assert_int_eq(bn_daemon_config_args(&c, 10, argv, err, sizeof err), 0);
    ck_assert_int_eq(c.workers, 4);
    ck_assert_int_eq(c.n_model_roots, 2); /* flags replace the file's list */
    ck_assert_str_eq(c.model_roots[0], "/c");
    ck_assert_str_eq(c.model_roots[1], "/d");
    ck_assert_int_eq(c.grace_seconds, 7);
    ck_assert_str_eq(c.log_format, "json");
}
END_TEST

START_TEST(test_errors)
{
    bn_daemon_config c;
    bn_daemon_config_default(&c);
    char err[512];
    write_file("workers = 1\ncolour = blue\n");
    ck_assert_int_ne(bn_daemon_config_file(&c, path, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, ":2: unknown option \"colour\""));
    write_file("[api]\nmax_body = lots\n");
    ck_assert_int_ne(bn_daemon_config_file(&c, path, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, ":2: api.max_body: \"lots\" is not an integer"));
    write_file("just words\n");
    ck_assert_int_ne(bn_daemon_config_file(&c, path, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, ":1: expected key = value"));
    setenv("BITNETD_WORKERS", "-1", 1);
    int bad;
    bn_daemon_config_env(&c, err, sizeof err, &bad);
    ck_assert_int_eq(bad, 1);
    ck_assert_ptr_nonnull(strstr(err, "BITNETD_WORKERS"));
    char *argv[] = {"bitnetd", "--threads", NULL};
    ck_assert_int_lt(bn_daemon_config_args(&c, 2, argv, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "--threads needs a value"));
    bn_logger l;
    ck_assert_int_ne(bn_logger_init(&l, "xml", "info", err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "log_format"));
}
END_TEST

/* --gpus: every spelling and every refusal, for a build with and without CUDA */
START_TEST(test_gpus)
{
    int g[8];
    char err[512];
    ck_assert_int_eq(bn_daemon_gpus("", true, 2, g, 8, err, sizeof err), 2);
    ck_assert_int_eq(g[0], 0);
    ck_assert_int_eq(g[1], 1);
    ck_assert_int_eq(bn_daemon_gpus("all", true, 3, g, 8, err, sizeof err), 3);
    ck_assert_int_eq(bn_daemon_gpus("", false, 0, g, 8, err, sizeof err), 0); /* default, no CUDA */
    ck_assert_int_eq(bn_daemon_gpus("all", true, 0, g, 8, err, sizeof err), 0); /* no GPU visible */
    ck_assert_int_eq(bn_daemon_gpus("none", true, 4, g, 8, err, sizeof err), 0);
    ck_assert_int_eq(bn_daemon_gpus("none", false, 0, g, 8, err, sizeof err), 0);
    ck_assert_int_eq(bn_daemon_gpus("3,1", true, 4, g, 8, err, sizeof err), 2);
    ck_assert_int_eq(g[0], 3);
    ck_assert_int_eq(g[1], 1);
    ck_assert_int_eq(bn_daemon_gpus("0", false, 0, g, 8, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "built without the CUDA backend"));
    ck_assert_int_eq(bn_daemon_gpus("2", true, 2, g, 8, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "GPU 2 is not visible (this host has 2: 0..1)"));
    ck_assert_int_eq(bn_daemon_gpus("0", true, 0, g, 8, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "this host has no usable GPU"));
    ck_assert_int_eq(bn_daemon_gpus("1,1", true, 2, g, 8, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "GPU 1 is listed twice"));
    const char *bad[] = { "x", "0,", ",0", "0;1", "-1", "0,,1", "1.5" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(bn_daemon_gpus(bad[i], true, 4, g, 8, err, sizeof err), -1);
        ck_assert_msg(strstr(err, "not a list of GPU ordinals") != NULL, "%s: %s", bad[i], err);
    }
    /* every config layer reaches it */
    bn_daemon_config c;
    bn_daemon_config_default(&c);
    char *argv[] = {"bitnetd", "--gpus", "0,1", NULL};
    ck_assert_int_eq(bn_daemon_config_args(&c, 3, argv, err, sizeof err), 0);
    ck_assert_str_eq(c.gpus, "0,1");
    setenv("BITNETD_GPUS", "none", 1);
    int bad_env;
    bn_daemon_config_env(&c, err, sizeof err, &bad_env);
    unsetenv("BITNETD_GPUS");
    ck_assert_int_eq(bad_env, 0);
    ck_assert_str_eq(c.gpus, "none");
}
END_TEST

START_TEST(test_log_formats)
{
    bn_logger l;
    char err[256], logpath[4300];
    snprintf(logpath, sizeof logpath, "%s/log", tmp);
    unsetenv("JOURNAL_STREAM");
    ck_assert_int_eq(bn_logger_init(&l, "json", "info", err, sizeof err), 0);
    l.out = fopen(logpath, "w");
    bn_log(&l, BN_LOG_INFO, "hello \"%s\"", "world");
    bn_log(&l, BN_LOG_DEBUG, "dropped");
    fclose(l.out);
    bn_logger_destroy(&l);
    FILE *f = fopen(logpath, "r");
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_ptr_nonnull(strstr(line, "\"level\":\"info\",\"msg\":\"hello \\\"world\\\"\"}"));
    ck_assert_ptr_null(fgets(line, sizeof line, f));
    fclose(f);
    setenv("JOURNAL_STREAM", "8:1234", 1);
    ck_assert_int_eq(bn_logger_init(&l, "auto", "debug", err, sizeof err), 0);
    l.out = fopen(logpath, "w");
    bn_log(&l, BN_LOG_WARNING, "careful");
    fclose(l.out);
    bn_logger_destroy(&l);
    unsetenv("JOURNAL_STREAM");
    f = fopen(logpath, "r");
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "<4>careful\n");
    fclose(f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_layers);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_gpus);
    tcase_add_test(tc, test_log_formats);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
