/* fsutil.c - file-system helpers (see fsutil.h). Each function is one system-call
 * sequence with its error path; messages always name the path. */
#include "base/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int sys_err(bn_err *err, const char *what, const char *path)
{
    int e = errno;
    return bn_err_set(err, bn_err_from_errno(e), "%s: %s: %s", path, what, strerror(e));
}

char *bn_fs_join(char *dst, size_t cap, const char *a, const char *b)
{
    int n = snprintf(dst, cap, "%s/%s", a, b);
    return (n < 0 || (size_t)n >= cap) ? NULL : dst;
}

int bn_fs_mkdir_p(const char *path, bn_err *err)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return bn_err_set(err, BN_EINVAL, "bad folder path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return sys_err(err, "mkdir", buf);
        buf[i] = c;
    }
    if (!bn_fs_is_dir(path)) return bn_err_set(err, BN_EIO, "%s: exists and is not a folder", path);
    return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)f;
    int r = (flag == FTW_DP) ? rmdir(p) : unlink(p);
    return (r != 0 && errno != ENOENT) ? -1 : 0;
}

int bn_fs_rm_rf(const char *path, bn_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : sys_err(err, "stat", path);
    if (!S_ISDIR(st.st_mode)) return unlink(path) == 0 ? 0 : sys_err(err, "unlink", path);
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) != 0) return sys_err(err, "remove", path);
    return 0;
}

static int fsync_open(const char *path, int flags, bn_err *err)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) return sys_err(err, "open", path);
    if (fsync(fd) != 0 && errno != EINVAL) {
        int r = sys_err(err, "fsync", path);
        close(fd);
        return r;
    }
    close(fd);
    return 0;
}

int bn_fs_fsync_dir(const char *dir, bn_err *err) { return fsync_open(dir, O_RDONLY | O_DIRECTORY, err); }

int bn_fs_fsync_parent(const char *path, bn_err *err)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash) return bn_fs_fsync_dir(".", err);
    if (slash == buf) slash[1] = 0; else *slash = 0;
    return bn_fs_fsync_dir(buf, err);
}

int bn_fs_rename(const char *src, const char *dst, bn_err *err)
{
    if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) != 0) {
        if (errno != EINVAL && errno != ENOSYS) {
            int e = errno;
            return bn_err_set(err, bn_err_from_errno(e), "rename %s -> %s: %s", src, dst, strerror(e));
        }
        if (bn_fs_exists(dst)) return bn_err_set(err, BN_EIO, "rename %s -> %s: destination exists", src, dst);
        if (rename(src, dst) != 0) {
            int e = errno;
            return bn_err_set(err, bn_err_from_errno(e), "rename %s -> %s: %s", src, dst, strerror(e));
        }
    }
    return bn_fs_fsync_parent(dst, err);
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int bn_fs_write_atomic(const char *path, const void *data, size_t len, bn_err *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return bn_err_set(err, BN_EINVAL, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sys_err(err, "create", tmp);
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int r = sys_err(err, "write", tmp);
        close(fd);
        unlink(tmp);
        return r;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int r = sys_err(err, "rename", path);
        unlink(tmp);
        return r;
    }
    return bn_fs_fsync_parent(path, err);
}

int bn_fs_copy_file(const char *src, const char *dst, bn_err *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return sys_err(err, "open", src);
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", dst) >= (int)sizeof tmp) {
        close(in);
        return bn_err_set(err, BN_EINVAL, "%s: path too long", dst);
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int r = sys_err(err, "create", tmp);
        close(in);
        return r;
    }
    enum { BUF = 1 << 16 };
    char *buf = malloc(BUF);
    int rc = buf ? 0 : bn_err_set(err, BN_ENOMEM, "%s: out of memory", src);
    while (rc == 0) {
        ssize_t r = read(in, buf, BUF);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { rc = sys_err(err, "read", src); break; }
        if (r == 0) break;
        if (write_all(out, buf, (size_t)r) != 0) rc = sys_err(err, "write", tmp);
    }
    free(buf);
    close(in);
    if (rc == 0 && fsync(out) != 0) rc = sys_err(err, "fsync", tmp);
    close(out);
    if (rc == 0 && rename(tmp, dst) != 0) rc = sys_err(err, "rename", dst);
    if (rc != 0) unlink(tmp);
    return rc;
}

/* The first max bytes of a regular file; whole: refuse a larger file instead. */
static int read_regular(const char *path, size_t max, bool whole, char **out, size_t *len,
                        uint64_t *size, bn_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return sys_err(err, "open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int r = sys_err(err, "stat", path);
        close(fd);
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return bn_err_set(err, BN_EINVAL, "%s: not a regular file", path);
    }
    if (whole && (uint64_t)st.st_size > max) {
        close(fd);
        return bn_err_set(err, BN_EFORMAT, "%s: %lld bytes, more than the %zu allowed", path,
                          (long long)st.st_size, max);
    }
    size_t n = (uint64_t)st.st_size > max ? max : (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return bn_err_set(err, BN_ENOMEM, "%s: out of memory (%zu bytes)", path, n);
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(buf);
        return bn_err_set(err, BN_EIO, "%s: short read", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    if (size) *size = (uint64_t)st.st_size;
    return 0;
}

int bn_fs_read_file(const char *path, size_t max, char **out, size_t *len, bn_err *err)
{
    return read_regular(path, max, true, out, len, NULL, err);
}

int bn_fs_read_head(const char *path, size_t max, char **out, size_t *len, uint64_t *size, bn_err *err)
{
    return read_regular(path, max, false, out, len, size, err);
}

bool bn_fs_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

bool bn_fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int64_t bn_fs_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}
