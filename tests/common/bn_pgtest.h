/* bn_pgtest.h - a real PostgreSQL 15 server for tests (tests/common/pgtest.sh does the
 * work: initdb + pg_ctl in a temp dir, 127.0.0.1 only, as 'nobody' under root).
 *
 * A test program that runs its store tests on both backends reads BN_TEST_STORE:
 * "postgresql" selects the server, anything else SQLite on disk. */
#ifndef BN_PGTEST_H
#define BN_PGTEST_H

#include <stdbool.h>
#include <stddef.h>

/* True when BN_TEST_STORE asks for PostgreSQL. */
bool bn_pgtest_wanted(void);
/* Starts a server in dir (a fresh folder) on a free loopback port and writes its URL.
 * Without the PostgreSQL binaries: exits 77 (skipped), or 1 under CI=true. */
int bn_pgtest_start(const char *dir, char *url, size_t len);
/* "stop", "restart" or "reset" (drops every table) on the server in dir. */
int bn_pgtest_cmd(const char *dir, const char *cmd);

#endif
