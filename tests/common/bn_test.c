/* bn_test.c - see bn_test.h. */
#include "bn_test.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return (v && *v) ? v : fallback;
}

const char *bn_test_data(const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", env_or("BN_DATA_DIR", "../shared/data"), rel);
    return buf;
}

void bn_test_require_data(const char *rel)
{
    const char *p = bn_test_data(rel);
    if (access(p, R_OK) == 0) return;
    if (getenv("CI")) {
        fprintf(stderr, "FATAL: shared test data missing: %s (CI must provide ../shared/data)\n", p);
        exit(1);
    }
    fprintf(stderr, "SKIP: shared test data missing: %s\n", p);
    exit(77);
}

char *bn_test_tmpdir(const char *tag)
{
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/bn-%s-XXXXXX", env_or("TMPDIR", "/tmp"), tag);
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

void bn_test_rmtree(const char *path)
{
    if (path) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *bn_test_build_path(const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", env_or("BN_BUILD_ROOT", "."), rel);
    return buf;
}

int bn_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
