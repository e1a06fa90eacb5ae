/* bn_pgtest.c - starting and driving the tests' own PostgreSQL server (see bn_pgtest.h). */
#include "bn_pgtest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *script(void)
{
    static char buf[4096];
    const char *root = getenv("BN_SOURCE_ROOT");
    snprintf(buf, sizeof buf, "%s/tests/common/pgtest.sh", root ? root : ".");
    return buf;
}

bool bn_pgtest_wanted(void)
{
    const char *v = getenv("BN_TEST_STORE");
    return v && strcmp(v, "postgresql") == 0;
}

int bn_pgtest_start(const char *dir, char *url, size_t len)
{
    if (access("/usr/lib/postgresql/15/bin/initdb", X_OK) != 0 && system("command -v initdb >/dev/null") != 0) {
        const char *ci = getenv("CI");
        fprintf(stderr, "PostgreSQL 15 server binaries not installed (deploy/install-deps.sh)\n");
        exit(ci && strcmp(ci, "true") == 0 ? 1 : 77);
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = 20000 + (int)((getpid() * 7 + attempt * 131) % 20000);
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "bash '%s' start '%s/pg%d' %d", script(), dir, attempt, port);
        FILE *p = popen(cmd, "r");
        if (!p) return -1;
        char line[512] = "";
        char *got = fgets(line, sizeof line, p);
        int rc = pclose(p);
        if (rc == 0 && got) {
            line[strcspn(line, "\n")] = 0;
            snprintf(url, len, "%s", line);
            char link[4200];
            snprintf(link, sizeof link, "%s/pg", dir);
            snprintf(cmd, sizeof cmd, "%s/pg%d", dir, attempt);
            unlink(link);
            return symlink(cmd, link);
        }
    }
    return -1;
}

int bn_pgtest_cmd(const char *dir, const char *what)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "bash '%s' %s '%s/pg'", script(), what, dir);
    return system(cmd) == 0 ? 0 : -1;
}
