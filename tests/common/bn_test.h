/* bn_test.h - helpers shared by the Check test programs.
 *
 * Shared data (../shared/data) is never copied into the project. A test program that
 * needs it calls bn_test_require_data() first: when the data is missing it exits 77
 * (meson: skipped) on a developer machine, and fails loudly under CI=true.
 */
#ifndef BN_TEST_H
#define BN_TEST_H

#include <stddef.h>

/* Absolute path of <BN_DATA_DIR>/<rel> in a static buffer (valid until the next call). */
const char *bn_test_data(const char *rel);
/* Exits 77 (or 1 under CI) when <BN_DATA_DIR>/<rel> does not exist. */
void bn_test_require_data(const char *rel);
/* A fresh empty directory under $TMPDIR (or /tmp); caller frees the string. */
char *bn_test_tmpdir(const char *tag);
/* rm -rf path (best effort). */
void bn_test_rmtree(const char *path);
/* Path of a built file: <BN_BUILD_ROOT>/<rel>, static buffer. */
const char *bn_test_build_path(const char *rel);
/* Runs a Check suite and returns the process exit status. */
struct Suite;
int bn_test_run(struct Suite *s);

#endif
