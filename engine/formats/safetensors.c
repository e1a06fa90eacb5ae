/* safetensors.c - validated mmap reader, sharded sets and a streamed atomic writer.
 *
 * Reader: a file is mapped read-only; bn_st_parse checks the 8-byte little-endian header
 * length (bound and inside the file), parses the JSON header with cJSON, then checks
 * every entry (fields, dtype, shape, offsets) and, after sorting by offset, that no two
 * data spans overlap. Names are checked for duplicates after sorting a name index, which
 * also serves bn_st_find (binary search). Nothing is exposed until all checks pass.
 * Tensor data pointers may be unaligned when a writer did not pad the header to 8 bytes;
 * read them with memcpy or bn_to_f32.
 *
 * Set: model.safetensors, or every shard named by model.safetensors.index.json (each
 * listed tensor must be in the shard the index names; no tensor in two shards).
 *
 * Writer: all tensors are declared first, the header is written at the first data byte
 * (padded with spaces to a multiple of 8 so data is 8-byte aligned), data is streamed in
 * declaration order to <path>.tmp through a buffer, and finish checks that every byte
 * arrived, fsyncs, renames and fsyncs the folder.
 */
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "base/checksum.h"

struct bn_st_file {
    char *label;             /* path or label used in messages */
    void *map;               /* mmap base when we own the mapping */
    int fd;                  /* the file, kept open for bn_st_tensor_copy; -1 for an image */
    size_t map_len;
    const uint8_t *bytes;
    uint64_t size;
    bn_st_tensor *t;         /* sorted by data offset */
    size_t n;
    const bn_st_tensor **by_name;
    char **meta_kv;          /* key, value pairs */
    size_t n_meta;
    cJSON *root;             /* owns the name strings */
};

/* ---- reader -------------------------------------------------------------------- */

typedef struct { bn_st_tensor t; uint64_t begin, end; } entry;

static int cmp_entry_offset(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    const bn_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* A JSON number that is an integer in [0, 2^53]. */
static bool json_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static int parse_entry(const char *label, const cJSON *item, entry *e, bn_err *err)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': entry is not a JSON object", label, name);
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *f = item->child; f; f = f->next) {
        const cJSON **slot = !strcmp(f->string, "dtype") ? &dtype : !strcmp(f->string, "shape") ? &shape
                           : !strcmp(f->string, "data_offsets") ? &offs : NULL;
        if (!slot)
            return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': unknown field '%s'", label, name, f->string);
        if (*slot)
            return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': duplicate field '%s'", label, name, f->string);
        *slot = f;
    }
    if (!cJSON_IsString(dtype))
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': missing or non-string 'dtype'", label, name);
    if (bn_dtype_parse(dtype->valuestring, &e->t.dtype) != 0)
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", label, name, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': missing or non-array 'shape'", label, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > BN_ST_MAX_DIMS)
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': %d dimensions, at most %d supported", label,
                          name, nd, BN_ST_MAX_DIMS);
    uint64_t numel = 1;
    bool overflow = false;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_u64(d, &v) || v > INT64_MAX)
            return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                              label, name, i);
        e->t.shape[i] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel)) overflow = true;
    }
    e->t.ndim = nd;
    size_t esz = bn_dtype_size(e->t.dtype);
    uint64_t nbytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)esz, &nbytes))
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': shape overflows 64 bits", label, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end]", label, name);
    if (!json_u64(offs->child, &e->begin) || !json_u64(offs->child->next, &e->end))
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': data_offsets are not non-negative integers",
                          label, name);
    if (e->end < e->begin)
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': data_offsets end %llu before begin %llu", label,
                          name, (unsigned long long)e->end, (unsigned long long)e->begin);
    if (e->end - e->begin != nbytes)
        return bn_err_set(err, BN_EFORMAT,
                          "%s: tensor '%s': data span is %llu bytes but shape x %s needs %llu", label, name,
                          (unsigned long long)(e->end - e->begin), bn_dtype_name(e->t.dtype),
                          (unsigned long long)nbytes);
    e->t.name = name;
    e->t.numel = numel;
    e->t.nbytes = (size_t)nbytes;
    return 0;
}

static int parse_metadata(bn_st_file *f, const cJSON *meta, bn_err *err)
{
    if (!cJSON_IsObject(meta))
        return bn_err_set(err, BN_EFORMAT, "%s: __metadata__ is not a JSON object", f->label);
    int n = cJSON_GetArraySize(meta);
    f->meta_kv = calloc((size_t)n * 2 + 1, sizeof(char *));
    if (!f->meta_kv) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", f->label);
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m))
            return bn_err_set(err, BN_EFORMAT, "%s: __metadata__ value of '%s' is not a string", f->label,
                              m->string);
        f->meta_kv[2 * f->n_meta] = m->string;
        f->meta_kv[2 * f->n_meta + 1] = m->valuestring;
        f->n_meta++;
    }
    return 0;
}

static int parse_header(bn_st_file *f, bn_err *err)
{
    const char *label = f->label;
    if (f->size < 8)
        return bn_err_set(err, BN_EFORMAT, "%s: file is %llu bytes, shorter than the 8-byte header length",
                          label, (unsigned long long)f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->bytes[i];
    if (hlen > BN_ST_MAX_HEADER)
        return bn_err_set(err, BN_EFORMAT, "%s: header length %llu exceeds the %u-byte limit", label,
                          (unsigned long long)hlen, BN_ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return bn_err_set(err, BN_EFORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)",
                          label, (unsigned long long)hlen, (unsigned long long)f->size);
    if (hlen < 2) return bn_err_set(err, BN_EFORMAT, "%s: header of %llu bytes cannot hold a JSON object",
                                    label, (unsigned long long)hlen);
    const char *hdr = (const char *)f->bytes + 8;
    if (memchr(hdr, 0, hlen))
        return bn_err_set(err, BN_EFORMAT, "%s: header contains a NUL byte", label);
    const char *end = NULL;
    f->root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, false);
    if (!f->root) {
        const char *at = cJSON_GetErrorPtr();
        long pos = (at && at >= hdr && at <= hdr + hlen) ? (long)(at - hdr) : -1;
        return bn_err_set(err, BN_EFORMAT, "%s: header is not valid JSON (near byte %ld)", label, pos);
    }
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
            return bn_err_set(err, BN_EFORMAT, "%s: trailing bytes after the JSON header", label);
    if (!cJSON_IsObject(f->root)) return bn_err_set(err, BN_EFORMAT, "%s: header is not a JSON object", label);

    uint64_t data_len = f->size - 8 - hlen;
    const uint8_t *data = f->bytes + 8 + hlen;
    size_t cap = (size_t)cJSON_GetArraySize(f->root);
    entry *es = calloc(cap ? cap : 1, sizeof *es);
    if (!es) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", label);
    size_t n = 0;
    int rc = 0;
    bool seen_meta = false;
    for (const cJSON *it = f->root->child; it && rc == 0; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (seen_meta) rc = bn_err_set(err, BN_EFORMAT, "%s: duplicate __metadata__", label);
            else rc = parse_metadata(f, it, err);
            seen_meta = true;
            continue;
        }
        if (it->string[0] == 0) { rc = bn_err_set(err, BN_EFORMAT, "%s: tensor with an empty name", label); break; }
        rc = parse_entry(label, it, &es[n], err);
        if (rc == 0 && es[n].end > data_len)
            rc = bn_err_set(err, BN_EFORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu-byte data section",
                            label, it->string, (unsigned long long)es[n].begin,
                            (unsigned long long)es[n].end, (unsigned long long)data_len);
        n++;
    }
    if (rc == 0) {
        qsort(es, n, sizeof *es, cmp_entry_offset);
        for (size_t i = 1; i < n && rc == 0; i++) {
            if (es[i].begin == es[i].end || es[i - 1].begin == es[i - 1].end) continue;
            if (es[i].begin < es[i - 1].end)
                rc = bn_err_set(err, BN_EFORMAT, "%s: tensors '%s' and '%s' have overlapping data spans", label,
                                es[i - 1].t.name, es[i].t.name);
        }
    }
    if (rc == 0) {
        f->t = calloc(n ? n : 1, sizeof *f->t);
        f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
        if (!f->t || !f->by_name) rc = bn_err_set(err, BN_ENOMEM, "%s: out of memory", label);
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            f->t[i] = es[i].t;
            f->t[i].data = data + es[i].begin;
            f->t[i].file = f->label;
            f->t[i].file_fd = f->fd;
            f->t[i].file_offset = f->fd >= 0 ? (int64_t)((const uint8_t *)f->t[i].data - f->bytes) : -1;
            f->by_name[i] = &f->t[i];
        }
        f->n = n;
        qsort(f->by_name, n, sizeof *f->by_name, cmp_tensor_name);
        for (size_t i = 1; i < n && rc == 0; i++)
            if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name))
                rc = bn_err_set(err, BN_EFORMAT, "%s: duplicate tensor name '%s'", label, f->by_name[i]->name);
    }
    free(es);
    return rc;
}

static bn_st_file *file_new(const char *label)
{
    bn_st_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->label = strdup(label ? label : "(memory)");
    if (!f->label) { free(f); return NULL; }
    f->fd = -1;
    return f;
}

int bn_st_parse(const void *bytes, size_t len, const char *label, bn_st_file **out, bn_err *err)
{
    *out = NULL;
    bn_st_file *f = file_new(label);
    if (!f) return bn_err_set(err, BN_ENOMEM, "out of memory");
    f->bytes = bytes;
    f->size = len;
    int rc = parse_header(f, err);
    if (rc) { bn_st_close(f); return rc; }
    *out = f;
    return 0;
}

int bn_st_open(const char *path, bn_st_file **out, bn_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bn_err_set(err, bn_err_from_errno(errno), "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return bn_err_set(err, BN_EIO, "%s: not a regular file", path);
    }
    bn_st_file *f = file_new(path);
    if (!f) { close(fd); return bn_err_set(err, BN_ENOMEM, "out of memory"); }
    f->size = (uint64_t)st.st_size;
    if (f->size >= 8) {
        f->map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            int e = errno;
            close(fd);
            f->map = NULL;
            bn_st_close(f);
            return bn_err_set(err, bn_err_from_errno(e), "%s: mmap: %s", path, strerror(e));
        }
        f->map_len = (size_t)f->size;
        f->bytes = f->map;
    }
    f->fd = fd; /* the same inode as the mapping, whatever happens to the path later */
    int rc = parse_header(f, err);
    if (rc) { bn_st_close(f); return rc; }
    *out = f;
    return 0;
}

void bn_st_close(bn_st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    if (f->fd >= 0) close(f->fd);
    cJSON_Delete(f->root);
    free(f->t);
    free(f->by_name);
    free(f->meta_kv);
    free(f->label);
    free(f);
}

size_t bn_st_count(const bn_st_file *f) { return f->n; }
const bn_st_tensor *bn_st_at(const bn_st_file *f, size_t i) { return i < f->n ? &f->t[i] : NULL; }
uint64_t bn_st_file_size(const bn_st_file *f) { return f->size; }

static const bn_st_tensor *find_sorted(const bn_st_tensor *const *v, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v[mid]->name, name);
        if (c == 0) return v[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

const bn_st_tensor *bn_st_find(const bn_st_file *f, const char *name)
{
    return find_sorted(f->by_name, f->n, name);
}

const char *bn_st_metadata(const bn_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_kv[2 * i], key)) return f->meta_kv[2 * i + 1];
    return NULL;
}

void bn_st_tensor_release(const bn_st_tensor *t)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)t->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t b = ((uintptr_t)t->data + t->nbytes) & ~((uintptr_t)pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

void bn_st_tensor_prefetch(const bn_st_tensor *t)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data & ~((uintptr_t)pg - 1);
    size_t len = (size_t)((uintptr_t)t->data + t->nbytes - a);
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
    if (len && madvise((void *)a, len, MADV_POPULATE_READ) != 0) madvise((void *)a, len, MADV_WILLNEED);
}

int bn_st_tensor_copy(const bn_st_tensor *t, void *dst, bn_err *err)
{
    if (t->file_fd < 0) {
        memcpy(dst, t->data, t->nbytes);
        return 0;
    }
    size_t done = 0;
    while (done < t->nbytes) {
        ssize_t r = pread(t->file_fd, (uint8_t *)dst + done, t->nbytes - done, (off_t)t->file_offset + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            return bn_err_set(err, bn_err_from_errno(errno), "%s: tensor '%s': read: %s", t->file, t->name,
                              strerror(errno));
        if (r == 0)
            return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s': the file ends inside its data (truncated after "
                              "it was opened?)", t->file, t->name);
        done += (size_t)r;
    }
    return 0;
}

/* ---- sets ---------------------------------------------------------------------- */

struct bn_st_set {
    bn_st_file **files;
    size_t n_files;
    const bn_st_tensor **order;   /* shard order, then offset */
    const bn_st_tensor **by_name;
    size_t n;
    uint64_t bytes;
};

static int set_add_file(bn_st_set *s, const char *path, bn_err *err)
{
    bn_st_file **v = realloc(s->files, (s->n_files + 1) * sizeof *v);
    if (!v) return bn_err_set(err, BN_ENOMEM, "out of memory");
    s->files = v;
    bn_st_file *f;
    int rc = bn_st_open(path, &f, err);
    if (rc) return rc;
    s->files[s->n_files++] = f;
    return 0;
}

static bool safe_shard_name(const char *n)
{
    return n[0] && n[0] != '/' && !strstr(n, "..") && !strchr(n, '\\');
}

static int set_open_index(bn_st_set *s, const char *dir, const char *index_path, bn_err *err)
{
    char *text;
    size_t len;
    int rc = bn_fs_read_file(index_path, 64u << 20, &text, &len, err);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return bn_err_set(err, BN_EFORMAT, "%s: not valid JSON", index_path);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return bn_err_set(err, BN_EFORMAT, "%s: missing 'weight_map' object", index_path);
    }
    for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
        if (!cJSON_IsString(e) || !safe_shard_name(e->valuestring)) {
            rc = bn_err_set(err, BN_EFORMAT, "%s: weight_map['%s']: not a shard file name in the folder",
                            index_path, e->string);
            break;
        }
        char path[PATH_MAX];
        if (!bn_fs_join(path, sizeof path, dir, e->valuestring)) {
            rc = bn_err_set(err, BN_EINVAL, "%s: path too long", e->valuestring);
            break;
        }
        bool have = false;
        for (size_t i = 0; i < s->n_files && !have; i++) have = !strcmp(s->files[i]->label, path);
        if (!have) rc = set_add_file(s, path, err);
    }
    for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
        char path[PATH_MAX];
        bn_fs_join(path, sizeof path, dir, e->valuestring);
        for (size_t i = 0; i < s->n_files; i++) {
            if (strcmp(s->files[i]->label, path)) continue;
            if (!bn_st_find(s->files[i], e->string))
                rc = bn_err_set(err, BN_EFORMAT, "%s: tensor '%s' listed in %s is missing from %s", index_path,
                                e->string, "model.safetensors.index.json", path);
        }
    }
    for (size_t i = 0; i < s->n_files && rc == 0; i++) {
        for (size_t j = 0; j < s->files[i]->n && rc == 0; j++) {
            const char *name = s->files[i]->t[j].name;
            if (!cJSON_GetObjectItemCaseSensitive(wm, name))
                rc = bn_err_set(err, BN_EFORMAT, "%s: tensor '%s' is not listed in %s", s->files[i]->label,
                                name, index_path);
        }
    }
    cJSON_Delete(root);
    return rc;
}

static int set_index(bn_st_set *s, bn_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_files; i++) n += s->files[i]->n;
    s->order = calloc(n ? n : 1, sizeof *s->order);
    s->by_name = calloc(n ? n : 1, sizeof *s->by_name);
    if (!s->order || !s->by_name) return bn_err_set(err, BN_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t j = 0; j < s->files[i]->n; j++) {
            s->order[s->n] = s->by_name[s->n] = &s->files[i]->t[j];
            s->bytes += s->files[i]->t[j].nbytes;
            s->n++;
        }
    qsort(s->by_name, s->n, sizeof *s->by_name, cmp_tensor_name);
    for (size_t i = 1; i < s->n; i++)
        if (!strcmp(s->by_name[i - 1]->name, s->by_name[i]->name))
            return bn_err_set(err, BN_EFORMAT, "tensor '%s' appears in both %s and %s", s->by_name[i]->name,
                              s->by_name[i - 1]->file, s->by_name[i]->file);
    return 0;
}

int bn_st_set_open(const char *model_dir, bn_st_set **out, bn_err *err)
{
    *out = NULL;
    bn_st_set *s = calloc(1, sizeof *s);
    if (!s) return bn_err_set(err, BN_ENOMEM, "out of memory");
    char single[PATH_MAX], index[PATH_MAX];
    int rc = 0;
    if (!bn_fs_join(single, sizeof single, model_dir, "model.safetensors") ||
        !bn_fs_join(index, sizeof index, model_dir, "model.safetensors.index.json"))
        rc = bn_err_set(err, BN_EINVAL, "%s: path too long", model_dir);
    else if (bn_fs_exists(index))
        rc = set_open_index(s, model_dir, index, err);
    else if (bn_fs_exists(single))
        rc = set_add_file(s, single, err);
    else
        rc = bn_err_set(err, BN_EIO, "%s: no model.safetensors or model.safetensors.index.json", model_dir);
    if (rc == 0) rc = set_index(s, err);
    if (rc) { bn_st_set_close(s); return rc; }
    *out = s;
    return 0;
}

void bn_st_set_close(bn_st_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) bn_st_close(s->files[i]);
    free(s->files);
    free(s->order);
    free(s->by_name);
    free(s);
}

size_t bn_st_set_count(const bn_st_set *s) { return s->n; }
const bn_st_tensor *bn_st_set_at(const bn_st_set *s, size_t i) { return i < s->n ? s->order[i] : NULL; }
const bn_st_tensor *bn_st_set_find(const bn_st_set *s, const char *name)
{
    return find_sorted(s->by_name, s->n, name);
}
uint64_t bn_st_set_bytes(const bn_st_set *s) { return s->bytes; }
size_t bn_st_set_file_count(const bn_st_set *s) { return s->n_files; }

/* ---- writer -------------------------------------------------------------------- */

typedef struct { char *name; bn_dtype dtype; int ndim; int64_t shape[BN_ST_MAX_DIMS]; uint64_t nbytes; } decl;

/* Output goes through O_DIRECT where the file system allows it: a model written once is
 * not read back soon, and copying gigabytes into fresh page-cache pages costs more than
 * the disk write itself (twice the time on the reference VM). Full buffers are written
 * direct; the unaligned tail, or everything on a file system that refuses O_DIRECT, goes
 * through the page cache. The SHA-256 of the bytes is computed on the way out, so callers
 * that record checksums need not read the file back. */
struct bn_st_writer {
    char *path, *tmp;
    int fd;
    bool direct;     /* fd has O_DIRECT */
    bn_sha256 sha;   /* of every byte written */
    decl *d;
    size_t n, cap;
    char **meta;     /* key, value pairs */
    size_t n_meta;
    bool started;
    size_t cur;      /* tensor being written */
    uint64_t cur_done;
    uint8_t *buf;    /* WBUF bytes, WALIGN-aligned */
    size_t nbuf;
};

enum { WBUF = 8 << 20, WALIGN = 4096 };

int bn_st_writer_new(const char *path, bn_st_writer **out, bn_err *err)
{
    *out = NULL;
    bn_st_writer *w = calloc(1, sizeof *w);
    if (!w) return bn_err_set(err, BN_ENOMEM, "out of memory");
    w->fd = -1;
    w->path = strdup(path);
    size_t n = strlen(path) + 5;
    w->tmp = malloc(n);
    if (posix_memalign((void **)&w->buf, WALIGN, WBUF) != 0) w->buf = NULL;
    if (!w->path || !w->tmp || !w->buf) {
        bn_st_writer_abort(w);
        return bn_err_set(err, BN_ENOMEM, "out of memory");
    }
    snprintf(w->tmp, n, "%s.tmp", path);
    if (bn_sha256_init(&w->sha, err)) {
        bn_st_writer_abort(w);
        return BN_ENOMEM;
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
    w->direct = w->fd >= 0;
    if (w->fd < 0 && errno == EINVAL) w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int e = errno;
        bn_err_set(err, bn_err_from_errno(e), "%s: create: %s", w->tmp, strerror(e));
        bn_st_writer_abort(w);
        return err ? err->code : BN_EIO;
    }
    *out = w;
    return 0;
}

int bn_st_writer_metadata(bn_st_writer *w, const char *key, const char *value)
{
    if (w->started) return BN_EINVAL;
    char **v = realloc(w->meta, (w->n_meta + 1) * 2 * sizeof *v);
    if (!v) return BN_ENOMEM;
    w->meta = v;
    v[2 * w->n_meta] = strdup(key);
    v[2 * w->n_meta + 1] = strdup(value);
    w->n_meta++;
    return (v[2 * w->n_meta - 2] && v[2 * w->n_meta - 1]) ? 0 : BN_ENOMEM;
}

int bn_st_writer_declare(bn_st_writer *w, const char *name, bn_dtype t, int ndim, const int64_t *shape,
                         bn_err *err)
{
    if (w->started) return bn_err_set(err, BN_EINVAL, "%s: tensor '%s' declared after data", w->path, name);
    if (ndim < 0 || ndim > BN_ST_MAX_DIMS || (unsigned)t >= BN_DTYPE_COUNT)
        return bn_err_set(err, BN_EINVAL, "%s: tensor '%s': bad dtype or rank", w->path, name);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->d[i].name, name))
            return bn_err_set(err, BN_EINVAL, "%s: tensor '%s' declared twice", w->path, name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        decl *d = realloc(w->d, cap * sizeof *d);
        if (!d) return bn_err_set(err, BN_ENOMEM, "out of memory");
        w->d = d;
        w->cap = cap;
    }
    decl *d = &w->d[w->n];
    memset(d, 0, sizeof *d);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
            return bn_err_set(err, BN_EINVAL, "%s: tensor '%s': bad shape", w->path, name);
        d->shape[i] = shape[i];
    }
    if (__builtin_mul_overflow(numel, (uint64_t)bn_dtype_size(t), &d->nbytes))
        return bn_err_set(err, BN_EINVAL, "%s: tensor '%s': shape overflows", w->path, name);
    d->name = strdup(name);
    if (!d->name) return bn_err_set(err, BN_ENOMEM, "out of memory");
    d->dtype = t;
    d->ndim = ndim;
    w->n++;
    return 0;
}

/* Back to buffered writes (an unaligned tail, or a file system that rejects O_DIRECT). */
static void drop_direct(bn_st_writer *w)
{
    int fl = fcntl(w->fd, F_GETFL);
    if (fl >= 0) fcntl(w->fd, F_SETFL, fl & ~O_DIRECT);
    w->direct = false;
}

static int flush_buf(bn_st_writer *w, bn_err *err)
{
    bn_sha256_update(&w->sha, w->buf, w->nbuf);
    if (w->direct && w->nbuf % WALIGN) drop_direct(w);
    size_t off = 0;
    while (off < w->nbuf) {
        ssize_t r = write(w->fd, w->buf + off, w->nbuf - off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EINVAL && w->direct) { drop_direct(w); continue; }
        if (r < 0) {
            int e = errno;
            return bn_err_set(err, bn_err_from_errno(e), "%s: write: %s", w->tmp, strerror(e));
        }
        off += (size_t)r;
    }
    w->nbuf = 0;
    return 0;
}

static int put(bn_st_writer *w, const void *data, size_t n, bn_err *err)
{
    const uint8_t *p = data;
    while (n) {
        if (w->nbuf == WBUF) {
            int rc = flush_buf(w, err);
            if (rc) return rc;
        }
        size_t k = WBUF - w->nbuf < n ? WBUF - w->nbuf : n;
        memcpy(w->buf + w->nbuf, p, k);
        w->nbuf += k; p += k; n -= k;
    }
    return 0;
}

static int write_header(bn_st_writer *w, bn_err *err)
{
    cJSON *root = cJSON_CreateObject();
    int rc = root ? 0 : bn_err_set(err, BN_ENOMEM, "out of memory");
    if (rc == 0 && w->n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; m && i < w->n_meta; i++) cJSON_AddStringToObject(m, w->meta[2 * i], w->meta[2 * i + 1]);
    }
    uint64_t off = 0;
    for (size_t i = 0; rc == 0 && i < w->n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, w->d[i].name);
        if (!e) { rc = bn_err_set(err, BN_ENOMEM, "out of memory"); break; }
        cJSON_AddStringToObject(e, "dtype", bn_dtype_name(w->d[i].dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < w->d[i].ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)w->d[i].shape[k]));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += w->d[i].nbytes;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
    }
    char *text = rc == 0 ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (rc == 0 && !text) rc = bn_err_set(err, BN_ENOMEM, "out of memory");
    if (rc) return rc;
    uint64_t len = strlen(text);
    uint64_t padded = (len + 7) & ~(uint64_t)7;
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)(padded >> (8 * i));
    rc = put(w, lenbuf, 8, err);
    if (rc == 0) rc = put(w, text, len, err);
    free(text);
    for (uint64_t i = len; rc == 0 && i < padded; i++) rc = put(w, " ", 1, err);
    w->started = true;
    w->cur = 0;
    w->cur_done = 0;
    return rc;
}

int bn_st_writer_write(bn_st_writer *w, const void *data, size_t nbytes, bn_err *err)
{
    int rc = 0;
    if (!w->started && (rc = write_header(w, err))) return rc;
    const uint8_t *p = data;
    while (nbytes) {
        while (w->cur < w->n && w->cur_done == w->d[w->cur].nbytes) { w->cur++; w->cur_done = 0; }
        if (w->cur >= w->n)
            return bn_err_set(err, BN_EINVAL, "%s: more data written than the declared tensors hold", w->path);
        uint64_t room = w->d[w->cur].nbytes - w->cur_done;
        size_t k = nbytes < room ? nbytes : (size_t)room;
        if ((rc = put(w, p, k, err))) return rc;
        w->cur_done += k; p += k; nbytes -= k;
    }
    return 0;
}

int bn_st_writer_finish(bn_st_writer *w, bn_err *err) { return bn_st_writer_finish_sha256(w, NULL, err); }

int bn_st_writer_finish_sha256(bn_st_writer *w, char hex[65], bn_err *err)
{
    int rc = 0;
    if (!w->started) rc = write_header(w, err);
    while (rc == 0 && w->cur < w->n && w->cur_done == w->d[w->cur].nbytes) { w->cur++; w->cur_done = 0; }
    if (rc == 0 && w->cur < w->n)
        rc = bn_err_set(err, BN_EINVAL, "%s: tensor '%s' has %llu of its %llu bytes", w->path, w->d[w->cur].name,
                        (unsigned long long)w->cur_done, (unsigned long long)w->d[w->cur].nbytes);
    if (rc == 0) rc = flush_buf(w, err);
    if (rc == 0 && hex) rc = bn_sha256_final_hex(&w->sha, hex, err);
    if (rc == 0 && fsync(w->fd) != 0) {
        int e = errno;
        rc = bn_err_set(err, bn_err_from_errno(e), "%s: fsync: %s", w->tmp, strerror(e));
    }
    if (rc == 0) {
        close(w->fd);
        w->fd = -1;
        if (rename(w->tmp, w->path) != 0) {
            int e = errno;
            rc = bn_err_set(err, bn_err_from_errno(e), "%s: rename: %s", w->path, strerror(e));
        } else {
            rc = bn_fs_fsync_parent(w->path, err);
            free(w->tmp);
            w->tmp = NULL; /* nothing to unlink */
        }
    }
    bn_st_writer_abort(w);
    return rc;
}

void bn_st_writer_abort(bn_st_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp) unlink(w->tmp);
    bn_sha256_free(&w->sha);
    for (size_t i = 0; i < w->n; i++) free(w->d[i].name);
    for (size_t i = 0; i < 2 * w->n_meta; i++) free(w->meta[i]);
    free(w->meta);
    free(w->d);
    free(w->buf);
    free(w->tmp);
    free(w->path);
    free(w);
}
