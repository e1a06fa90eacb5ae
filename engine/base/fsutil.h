/* fsutil.h - small file-system helpers for durable, all-or-nothing outputs.
 *
 * Every output of the engine is written under a temporary name, fsynced, then renamed;
 * these helpers hold the few system calls that takes (and the error messages naming
 * the path). All return 0 or a BN_E* code with err set.
 */
#ifndef BN_FSUTIL_H
#define BN_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

int bn_fs_mkdir_p(const char *path, bn_err *err);
/* rm -rf; a missing path is not an error. Never follows symlinks. */
int bn_fs_rm_rf(const char *path, bn_err *err);
int bn_fs_fsync_dir(const char *dir, bn_err *err);
/* fsyncs the parent folder of path */
int bn_fs_fsync_parent(const char *path, bn_err *err);
/* rename(src, dst) of a folder or file, then fsync dst's parent. Fails if dst exists. */
int bn_fs_rename(const char *src, const char *dst, bn_err *err);
/* Copies a regular file (data + fsync); dst is replaced atomically through dst.tmp. */
int bn_fs_copy_file(const char *src, const char *dst, bn_err *err);
/* Writes data to path atomically (path.tmp, fsync, rename, fsync parent). */
int bn_fs_write_atomic(const char *path, const void *data, size_t len, bn_err *err);
/* Reads a whole regular file (at most max bytes, a larger one is refused with BN_EFORMAT)
 * into a NUL-terminated malloc'd buffer. Opening never blocks (a FIFO is refused). */
int bn_fs_read_file(const char *path, size_t max, char **out, size_t *len, bn_err *err);
/* bn_fs_read_file that reads the first max bytes of a larger file instead of refusing it;
 * *size (when not NULL) gets the file's whole size. */
int bn_fs_read_head(const char *path, size_t max, char **out, size_t *len, uint64_t *size, bn_err *err);
bool bn_fs_exists(const char *path);
bool bn_fs_is_dir(const char *path);
/* -1 if the file cannot be stat'ed */
int64_t bn_fs_file_size(const char *path);
/* dst = a + "/" + b; returns dst or NULL when it does not fit */
char *bn_fs_join(char *dst, size_t cap, const char *a, const char *b);

#endif
