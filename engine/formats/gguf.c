/* gguf.c - GGUF v3 writer/reader and the TQ2_0 / TQ1_0 / Q8_0 block codecs.
 *
 * Formats are described in gguf.h. The writer serializes key/values into a byte buffer
 * as they are added, keeps the tensor table, and streams data through a FILE to a
 * temporary name. The reader maps the file read-only and validates every field against
 * the file size before anything is exposed.
 */
#include "formats/gguf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/tensor.h"

/* ---- types -------------------------------------------------------------------- */

const char *bn_gguf_type_name(bn_gguf_type t)
{
    switch (t) {
    case BN_GGUF_F32: return "f32";
    case BN_GGUF_F16: return "f16";
    case BN_GGUF_Q8_0: return "q8_0";
    case BN_GGUF_TQ1_0: return "tq1_0";
    case BN_GGUF_TQ2_0: return "tq2_0";
    }
    return NULL;
}

int bn_gguf_block_len(bn_gguf_type t)
{
    switch (t) {
    case BN_GGUF_F32: case BN_GGUF_F16: return 1;
    case BN_GGUF_Q8_0: return BN_GGUF_QK8_0;
    case BN_GGUF_TQ1_0: case BN_GGUF_TQ2_0: return BN_GGUF_QK_K;
    }
    return 0;
}

size_t bn_gguf_block_bytes(bn_gguf_type t)
{
    switch (t) {
    case BN_GGUF_F32: return 4;
    case BN_GGUF_F16: return 2;
    case BN_GGUF_Q8_0: return sizeof(bn_gguf_block_q8_0);
    case BN_GGUF_TQ1_0: return sizeof(bn_gguf_block_tq1_0);
    case BN_GGUF_TQ2_0: return sizeof(bn_gguf_block_tq2_0);
    }
    return 0;
}

size_t bn_gguf_row_bytes(bn_gguf_type t, int64_t ne0)
{
    int bl = bn_gguf_block_len(t);
    if (bl == 0 || ne0 <= 0 || ne0 % bl) return 0;
    return (size_t)(ne0 / bl) * bn_gguf_block_bytes(t);
}

_Static_assert(sizeof(bn_gguf_block_tq2_0) == 66, "TQ2_0 block is 66 bytes");
_Static_assert(sizeof(bn_gguf_block_tq1_0) == 54, "TQ1_0 block is 54 bytes");
_Static_assert(sizeof(bn_gguf_block_q8_0) == 34, "Q8_0 block is 34 bytes");

/* ---- block codecs ------------------------------------------------------------- */

void bn_gguf_tq2_0_pack(const int8_t *codes, float scale, int64_t n, bn_gguf_block_tq2_0 *out)
{
    uint16_t d = bn_f32_to_f16(scale);
    for (int64_t b = 0; b < n / BN_GGUF_QK_K; b++, codes += BN_GGUF_QK_K) {
        for (int h = 0; h < 2; h++)
            for (int m = 0; m < 32; m++) {
                unsigned q = 0;
                for (int k = 0; k < 4; k++) q |= (unsigned)(codes[128 * h + 32 * k + m] + 1) << (2 * k);
                out[b].qs[32 * h + m] = (uint8_t)q;
            }
        out[b].d = d;
    }
}

void bn_gguf_tq2_0_unpack(const bn_gguf_block_tq2_0 *b, int64_t n, int8_t *codes, uint16_t *d)
{
    for (int64_t j = 0; j < n / BN_GGUF_QK_K; j++, codes += BN_GGUF_QK_K) {
        for (int h = 0; h < 2; h++)
            for (int m = 0; m < 32; m++)
                for (int k = 0; k < 4; k++)
                    codes[128 * h + 32 * k + m] = (int8_t)(((b[j].qs[32 * h + m] >> (2 * k)) & 3) - 1);
        if (d) d[j] = b[j].d;
    }
}

/* base-3 digits (first most significant) -> fixed-point byte ceil(v * 256 / 243) */
static uint8_t tq1_byte(const int8_t *c, int stride, int count)
{
    unsigned v = 0;
    for (int k = 0; k < count; k++) v = v * 3 + (unsigned)(c[k * stride] + 1);
    for (int k = count; k < 5; k++) v *= 3; /* pad with zero digits at the end */
    return (uint8_t)((v * 256 + 242) / 243);
}

static int8_t tq1_digit(uint8_t byte, int k)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t q = (uint8_t)(byte * pow3[k]);
    return (int8_t)((((unsigned)q * 3) >> 8) - 1);
}

void bn_gguf_tq1_0_pack(const int8_t *codes, float scale, int64_t n, bn_gguf_block_tq1_0 *out)
{
    uint16_t d = bn_f32_to_f16(scale);
    for (int64_t b = 0; b < n / BN_GGUF_QK_K; b++, codes += BN_GGUF_QK_K) {
        for (int m = 0; m < 32; m++) out[b].qs[m] = tq1_byte(codes + m, 32, 5);
        for (int m = 0; m < 16; m++) out[b].qs[32 + m] = tq1_byte(codes + 160 + m, 16, 5);
        for (int j = 0; j < 4; j++) out[b].qh[j] = tq1_byte(codes + 240 + j, 4, 4);
        out[b].d = d;
    }
}

void bn_gguf_tq1_0_unpack(const bn_gguf_block_tq1_0 *b, int64_t n, int8_t *codes, uint16_t *d)
{
    for (int64_t j = 0; j < n / BN_GGUF_QK_K; j++, codes += BN_GGUF_QK_K) {
        for (int m = 0; m < 32; m++)
            for (int k = 0; k < 5; k++) codes[m + 32 * k] = tq1_digit(b[j].qs[m], k);
        for (int m = 0; m < 16; m++)
            for (int k = 0; k < 5; k++) codes[160 + m + 16 * k] = tq1_digit(b[j].qs[32 + m], k);
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++) codes[240 + i + 4 * k] = tq1_digit(b[j].qh[i], k);
        if (d) d[j] = b[j].d;
    }
}

void bn_gguf_q8_0_quantize(const float *x, int64_t n, bn_gguf_block_q8_0 *out)
{
    for (int64_t b = 0; b < n / BN_GGUF_QK8_0; b++, x += BN_GGUF_QK8_0) {
        float amax = 0.0f;
        for (int k = 0; k < BN_GGUF_QK8_0; k++) amax = fabsf(x[k]) > amax ? fabsf(x[k]) : amax;
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        out[b].d = bn_f32_to_f16(d);
        for (int k = 0; k < BN_GGUF_QK8_0; k++) out[b].qs[k] = (int8_t)roundf(x[k] * id);
    }
}

int bn_gguf_dequantize(bn_gguf_type t, const void *data, int64_t n, float *out)
{
    int64_t bl = bn_gguf_block_len(t);
    if (bl == 0 || n % bl) return BN_EUNSUPPORTED;
    int8_t codes[BN_GGUF_QK_K];
    switch (t) {
    case BN_GGUF_F32: memcpy(out, data, (size_t)n * 4); return BN_OK;
    case BN_GGUF_F16: {
        const uint16_t *h = data;
        for (int64_t i = 0; i < n; i++) out[i] = bn_f16_to_f32(h[i]);
        return BN_OK;
    }
    case BN_GGUF_Q8_0: {
        const bn_gguf_block_q8_0 *b = data;
        for (int64_t j = 0; j < n / bl; j++) {
            float d = bn_f16_to_f32(b[j].d);
            for (int k = 0; k < BN_GGUF_QK8_0; k++) out[j * bl + k] = b[j].qs[k] * d;
        }
        return BN_OK;
    }
    case BN_GGUF_TQ2_0:
    case BN_GGUF_TQ1_0:
        for (int64_t j = 0; j < n / bl; j++) {
            uint16_t d;
            if (t == BN_GGUF_TQ2_0)
                bn_gguf_tq2_0_unpack((const bn_gguf_block_tq2_0 *)data + j, bl, codes, &d);
            else
                bn_gguf_tq1_0_unpack((const bn_gguf_block_tq1_0 *)data + j, bl, codes, &d);
            float df = bn_f16_to_f32(d);
            for (int k = 0; k < bl; k++) out[j * bl + k] = codes[k] * df;
        }
        return BN_OK;
    }
    return BN_EUNSUPPORTED;
}

/* ---- writer ------------------------------------------------------------------- */

typedef struct wtensor {
    char *name;
    bn_gguf_type type;
    int n_dims;
    int64_t ne[BN_GGUF_MAX_DIMS];
    uint64_t nbytes, offset;
} wtensor;

struct bn_gguf_writer {
    char *path, *tmp;
    FILE *fp;
    uint8_t *kv;      /* serialized key/values */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    char **keys;
    wtensor *t;
    size_t n_t, cap_t;
    uint64_t data_bytes; /* declared, with padding */
    size_t cur;          /* tensor being written */
    uint64_t cur_done;
    bool begun, failed;
    char fail_msg[256];
};

static uint64_t align_up(uint64_t x) { return (x + BN_GGUF_ALIGN - 1) / BN_GGUF_ALIGN * BN_GGUF_ALIGN; }

int bn_gguf_writer_new(const char *path, bn_gguf_writer **out, bn_err *err)
{
    *out = NULL;
    bn_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", path);
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    if (!w->path || !w->tmp) {
        free(w->path), free(w->tmp), free(w);
        return bn_err_set(err, BN_ENOMEM, "%s: out of memory", path);
    }
    sprintf(w->tmp, "%s.tmp", path);
    w->fp = fopen(w->tmp, "wb");
    if (!w->fp) {
        int e = errno;
        free(w->path), free(w->tmp), free(w);
        return bn_err_set(err, bn_err_from_errno(e), "%s: cannot create: %s", path, strerror(e));
    }
    *out = w;
    return BN_OK;
}

static int w_fail(bn_gguf_writer *w, const char *msg, const char *key)
{
    if (!w->failed) snprintf(w->fail_msg, sizeof w->fail_msg, "%s: %s", key, msg);
    w->failed = true;
    return BN_EINVAL;
}

static int kv_put(bn_gguf_writer *w, const void *p, size_t n)
{
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *k = realloc(w->kv, cap);
        if (!k) return BN_ENOMEM;
        w->kv = k, w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return BN_OK;
}

static int kv_u32(bn_gguf_writer *w, uint32_t v) { return kv_put(w, &v, 4); }
static int kv_u64(bn_gguf_writer *w, uint64_t v) { return kv_put(w, &v, 8); }
static int kv_string(bn_gguf_writer *w, const char *s)
{
    size_t n = strlen(s);
    return kv_u64(w, n) || kv_put(w, s, n);
}

/* Key + value type; checks state and duplicates. */
static int kv_head(bn_gguf_writer *w, const char *key, bn_gguf_vtype t)
{
    if (w->begun) return w_fail(w, "key/value added after the data began", key);
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) return w_fail(w, "duplicate key", key);
    char **k = realloc(w->keys, (w->n_kv + 1) * sizeof *k);
    if (!k) return w_fail(w, "out of memory", key);
    w->keys = k;
    if (!(w->keys[w->n_kv] = strdup(key))) return w_fail(w, "out of memory", key);
    w->n_kv++;
    if (kv_string(w, key) || kv_u32(w, (uint32_t)t)) return w_fail(w, "out of memory", key);
    return BN_OK;
}

#define KV_CHECK(w, key, expr) ((expr) ? w_fail((w), "out of memory", (key)) : BN_OK)

int bn_gguf_kv_u32(bn_gguf_writer *w, const char *key, uint32_t v)
{
    return kv_head(w, key, BN_GGUF_V_U32) || KV_CHECK(w, key, kv_u32(w, v));
}

int bn_gguf_kv_i32(bn_gguf_writer *w, const char *key, int32_t v)
{
    return kv_head(w, key, BN_GGUF_V_I32) || KV_CHECK(w, key, kv_put(w, &v, 4));
}

int bn_gguf_kv_f32(bn_gguf_writer *w, const char *key, float v)
{
    return kv_head(w, key, BN_GGUF_V_F32) || KV_CHECK(w, key, kv_put(w, &v, 4));
}

int bn_gguf_kv_bool(bn_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return kv_head(w, key, BN_GGUF_V_BOOL) || KV_CHECK(w, key, kv_put(w, &b, 1));
}

int bn_gguf_kv_str(bn_gguf_writer *w, const char *key, const char *v)
{
    return kv_head(w, key, BN_GGUF_V_STRING) || KV_CHECK(w, key, kv_string(w, v));
}

int bn_gguf_kv_arr_str(bn_gguf_writer *w, const char *key, const char *const *v, size_t n)
{
    if (kv_head(w, key, BN_GGUF_V_ARRAY)) return BN_EINVAL;
    if (kv_u32(w, BN_GGUF_V_STRING) || kv_u64(w, n)) return w_fail(w, "out of memory", key);
    for (size_t i = 0; i < n; i++)
        if (kv_string(w, v[i])) return w_fail(w, "out of memory", key);
    return BN_OK;
}

static int kv_arr_num(bn_gguf_writer *w, const char *key, bn_gguf_vtype t, const void *v, size_t n)
{
    if (kv_head(w, key, BN_GGUF_V_ARRAY)) return BN_EINVAL;
    return KV_CHECK(w, key, kv_u32(w, t) || kv_u64(w, n) || kv_put(w, v, n * 4));
}

int bn_gguf_kv_arr_f32(bn_gguf_writer *w, const char *key, const float *v, size_t n)
{
    return kv_arr_num(w, key, BN_GGUF_V_F32, v, n);
}

int bn_gguf_kv_arr_i32(bn_gguf_writer *w, const char *key, const int32_t *v, size_t n)
{
    return kv_arr_num(w, key, BN_GGUF_V_I32, v, n);
}

int bn_gguf_writer_declare(bn_gguf_writer *w, const char *name, bn_gguf_type type, int n_dims,
                           const int64_t *ne, bn_err *err)
{
    if (w->begun) return bn_err_set(err, BN_EINVAL, "%s: tensor %s declared after the data began", w->path, name);
    if (n_dims < 1 || n_dims > BN_GGUF_MAX_DIMS)
        return bn_err_set(err, BN_EINVAL, "%s: tensor %s: %d dimensions", w->path, name, n_dims);
    size_t row = bn_gguf_row_bytes(type, ne[0]);
    if (row == 0)
        return bn_err_set(err, BN_EINVAL, "%s: tensor %s: row length %lld is not a multiple of the %s block (%d)",
                          w->path, name, (long long)ne[0], bn_gguf_type_name(type) ? bn_gguf_type_name(type) : "?",
                          bn_gguf_block_len(type));
    uint64_t nbytes = row;
    for (int i = 1; i < n_dims; i++) {
        if (ne[i] <= 0) return bn_err_set(err, BN_EINVAL, "%s: tensor %s: ne[%d] = %lld", w->path, name, i, (long long)ne[i]);
        nbytes *= (uint64_t)ne[i];
    }
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return bn_err_set(err, BN_EINVAL, "%s: tensor %s declared twice", w->path, name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", w->path);
        w->t = t, w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", w->path);
    t->type = type, t->n_dims = n_dims, t->nbytes = nbytes, t->offset = w->data_bytes;
    for (int i = 0; i < n_dims; i++) t->ne[i] = ne[i];
    w->data_bytes = align_up(w->data_bytes + nbytes);
    w->n_t++;
    return BN_OK;
}

static int w_io(bn_gguf_writer *w, bn_err *err)
{
    int e = errno ? errno : EIO;
    return bn_err_set(err, bn_err_from_errno(e), "%s: write failed: %s", w->path, strerror(e));
}

static int w_bytes(bn_gguf_writer *w, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, w->fp) == n ? 0 : -1; /* p may be NULL when n == 0 */
}

static int w_pad(bn_gguf_writer *w)
{
    static const uint8_t zero[BN_GGUF_ALIGN];
    long pos = ftell(w->fp);
    if (pos < 0) return -1;
    size_t pad = (size_t)(align_up((uint64_t)pos) - (uint64_t)pos);
    return pad ? w_bytes(w, zero, pad) : 0;
}

int bn_gguf_writer_begin_data(bn_gguf_writer *w, bn_err *err)
{
    if (w->failed) return bn_err_set(err, BN_EINVAL, "%s: %s", w->path, w->fail_msg);
    if (w->begun) return BN_OK;
    w->begun = true;
    uint32_t magic = 0x46554747u, version = 3;
    uint64_t nt = w->n_t, nkv = w->n_kv;
    errno = 0;
    if (w_bytes(w, &magic, 4) || w_bytes(w, &version, 4) || w_bytes(w, &nt, 8) || w_bytes(w, &nkv, 8) ||
        w_bytes(w, w->kv, w->kv_len))
        return w_io(w, err);
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, ty = (uint32_t)t->type;
        if (w_bytes(w, &len, 8) || w_bytes(w, t->name, len) || w_bytes(w, &nd, 4)) return w_io(w, err);
        for (int d = 0; d < t->n_dims; d++) {
            uint64_t ne = (uint64_t)t->ne[d];
            if (w_bytes(w, &ne, 8)) return w_io(w, err);
        }
        if (w_bytes(w, &ty, 4) || w_bytes(w, &t->offset, 8)) return w_io(w, err);
    }
    if (w_pad(w)) return w_io(w, err);
    w->cur = 0, w->cur_done = 0;
    return BN_OK;
}

int bn_gguf_writer_write(bn_gguf_writer *w, const void *data, size_t nbytes, bn_err *err)
{
    if (!w->begun) {
        int rc = bn_gguf_writer_begin_data(w, err);
        if (rc) return rc;
    }
    const uint8_t *p = data;
    errno = 0;
    while (nbytes > 0) {
        if (w->cur >= w->n_t)
            return bn_err_set(err, BN_EINVAL, "%s: more data than the declared tensors hold", w->path);
        wtensor *t = &w->t[w->cur];
        uint64_t room = t->nbytes - w->cur_done;
        size_t n = nbytes < room ? nbytes : (size_t)room;
        if (w_bytes(w, p, n)) return w_io(w, err);
        p += n, nbytes -= n, w->cur_done += n;
        if (w->cur_done == t->nbytes) {
            if (w_pad(w)) return w_io(w, err);
            w->cur++, w->cur_done = 0;
        }
    }
    return BN_OK;
}

static void writer_free(bn_gguf_writer *w)
{
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->keys), free(w->t), free(w->kv), free(w->path), free(w->tmp);
    free(w);
}

int bn_gguf_writer_finish(bn_gguf_writer *w, bn_err *err)
{
    int rc = BN_OK;
    if (!w->begun) rc = bn_gguf_writer_begin_data(w, err);
    if (rc == BN_OK && w->cur < w->n_t)
        rc = bn_err_set(err, BN_EINVAL, "%s: tensor %s has %llu of %llu bytes", w->path, w->t[w->cur].name,
                        (unsigned long long)w->cur_done, (unsigned long long)w->t[w->cur].nbytes);
    if (rc == BN_OK) {
        errno = 0;
        if (fflush(w->fp) != 0 || fsync(fileno(w->fp)) != 0) rc = w_io(w, err);
    }
    if (fclose(w->fp) != 0 && rc == BN_OK) rc = w_io(w, err);
    w->fp = NULL;
    if (rc == BN_OK && rename(w->tmp, w->path) != 0) {
        int e = errno;
        rc = bn_err_set(err, bn_err_from_errno(e), "%s: rename failed: %s", w->path, strerror(e));
    }
    if (rc != BN_OK) unlink(w->tmp);
    writer_free(w);
    return rc;
}

void bn_gguf_writer_abort(bn_gguf_writer *w)
{
    if (!w) return;
    if (w->fp) fclose(w->fp);
    unlink(w->tmp);
    writer_free(w);
}

/* ---- reader ------------------------------------------------------------------- */

struct bn_gguf_file {
    char *path;
    uint8_t *map;
    size_t size;
    uint32_t version;
    bn_gguf_kv *kv;
    size_t n_kv;
    bn_gguf_tensor *t;
    size_t n_t;
};

typedef struct cursor {
    const uint8_t *p, *end;
    bn_gguf_file *f;
    bn_err *err;
} cursor;

static int cur_fail(cursor *c, const char *what)
{
    return bn_err_set(c->err, BN_EFORMAT, "%s: %s at byte %zu", c->f->path, what,
                      (size_t)(c->p - c->f->map));
}

static int rd(cursor *c, void *out, size_t n, const char *what)
{
    if ((size_t)(c->end - c->p) < n) return cur_fail(c, what);
    memcpy(out, c->p, n);
    c->p += n;
    return BN_OK;
}

static int rd_str(cursor *c, char **out, const char *what)
{
    uint64_t n;
    if (rd(c, &n, 8, what)) return BN_EFORMAT;
    if (n > (uint64_t)(c->end - c->p)) return cur_fail(c, what);
    char *s = malloc(n + 1);
    if (!s) return bn_err_set(c->err, BN_ENOMEM, "%s: out of memory", c->f->path);
    memcpy(s, c->p, n);
    s[n] = 0;
    c->p += n;
    *out = s;
    return BN_OK;
}

static size_t vsize(bn_gguf_vtype t)
{
    static const size_t sz[BN_GGUF_V_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < BN_GGUF_V_COUNT ? sz[t] : 0;
}

/* scalar at p of type t widened into kv->v */
static void widen(bn_gguf_kv *kv, bn_gguf_vtype t, const uint8_t *p)
{
    switch (t) {
    case BN_GGUF_V_U8: kv->v.u = *p; break;
    case BN_GGUF_V_I8: kv->v.i = (int8_t)*p; break;
    case BN_GGUF_V_U16: { uint16_t x; memcpy(&x, p, 2); kv->v.u = x; break; }
    case BN_GGUF_V_I16: { int16_t x; memcpy(&x, p, 2); kv->v.i = x; break; }
    case BN_GGUF_V_U32: { uint32_t x; memcpy(&x, p, 4); kv->v.u = x; break; }
    case BN_GGUF_V_I32: { int32_t x; memcpy(&x, p, 4); kv->v.i = x; break; }
    case BN_GGUF_V_F32: { float x; memcpy(&x, p, 4); kv->v.f = x; break; }
    case BN_GGUF_V_BOOL: kv->v.b = *p != 0; break;
    case BN_GGUF_V_U64: memcpy(&kv->v.u, p, 8); break;
    case BN_GGUF_V_I64: memcpy(&kv->v.i, p, 8); break;
    case BN_GGUF_V_F64: memcpy(&kv->v.f, p, 8); break;
    default: break;
    }
}

static int read_kv(cursor *c, bn_gguf_kv *kv)
{
    char *key = NULL;
    uint32_t t;
    if (rd_str(c, &key, "truncated key")) return c->err ? c->err->code : BN_EFORMAT;
    kv->key = key;
    if (rd(c, &t, 4, "truncated value type")) return BN_EFORMAT;
    if (t >= BN_GGUF_V_COUNT)
        return bn_err_set(c->err, BN_EFORMAT, "%s: key %s: unknown value type %u", c->f->path, key, t);
    kv->type = (bn_gguf_vtype)t;
    kv->n = 1;
    if (t == BN_GGUF_V_STRING) {
        char *s;
        if (rd_str(c, &s, "truncated string value")) return BN_EFORMAT;
        kv->str = s;
        return BN_OK;
    }
    if (t != BN_GGUF_V_ARRAY) {
        if ((size_t)(c->end - c->p) < vsize(kv->type)) return cur_fail(c, "truncated value");
        widen(kv, kv->type, c->p);
        c->p += vsize(kv->type);
        return BN_OK;
    }
    uint32_t et;
    uint64_t n;
    if (rd(c, &et, 4, "truncated array type") || rd(c, &n, 8, "truncated array length")) return BN_EFORMAT;
    if (et >= BN_GGUF_V_COUNT || et == BN_GGUF_V_ARRAY)
        return bn_err_set(c->err, BN_EFORMAT, "%s: key %s: bad array element type %u", c->f->path, key, et);
    kv->arr_type = (bn_gguf_vtype)et;
    kv->n = n;
    if (et == BN_GGUF_V_STRING) {
        if (n > (uint64_t)(c->end - c->p) / 8) return cur_fail(c, "array longer than the file");
        kv->arr_str = calloc(n ? n : 1, sizeof(char *));
        if (!kv->arr_str) return bn_err_set(c->err, BN_ENOMEM, "%s: out of memory", c->f->path);
        for (uint64_t i = 0; i < n; i++)
            if (rd_str(c, &kv->arr_str[i], "truncated string array")) return BN_EFORMAT;
        return BN_OK;
    }
    size_t es = vsize(kv->arr_type);
    if (n > (uint64_t)(c->end - c->p) / es) return cur_fail(c, "array longer than the file");
    kv->arr = c->p;
    c->p += n * es;
    return BN_OK;
}

static int read_tensor(cursor *c, bn_gguf_tensor *t)
{
    char *name;
    uint32_t nd, ty;
    if (rd_str(c, &name, "truncated tensor name")) return BN_EFORMAT;
    t->name = name;
    if (rd(c, &nd, 4, "truncated tensor dims")) return BN_EFORMAT;
    if (nd < 1 || nd > BN_GGUF_MAX_DIMS)
        return bn_err_set(c->err, BN_EFORMAT, "%s: tensor %s: %u dimensions", c->f->path, name, nd);
    t->n_dims = (int)nd;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if (rd(c, &ne, 8, "truncated tensor shape")) return BN_EFORMAT;
        if (ne == 0 || ne > (1ull << 40) || numel > (1ull << 50) / ne)
            return bn_err_set(c->err, BN_EFORMAT, "%s: tensor %s: bad ne[%u] = %llu", c->f->path, name, d,
                              (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        numel *= ne;
    }
    for (int d = (int)nd; d < BN_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    if (rd(c, &ty, 4, "truncated tensor type") || rd(c, &t->offset, 8, "truncated tensor offset")) return BN_EFORMAT;
    t->type = (bn_gguf_type)ty;
    size_t row = bn_gguf_row_bytes(t->type, t->ne[0]);
    if (!bn_gguf_type_name(t->type))
        return bn_err_set(c->err, BN_EUNSUPPORTED, "%s: tensor %s: ggml type %u not supported", c->f->path, name, ty);
    if (row == 0)
        return bn_err_set(c->err, BN_EFORMAT, "%s: tensor %s: row length %lld does not fit type %s", c->f->path,
                          name, (long long)t->ne[0], bn_gguf_type_name(t->type));
    t->nbytes = row * (size_t)(numel / (uint64_t)t->ne[0]);
    return BN_OK;
}

static int check_tensors(bn_gguf_file *f, size_t data_start, bn_err *err)
{
    for (size_t i = 0; i < f->n_t; i++) {
        bn_gguf_tensor *t = &f->t[i];
        if (t->offset % BN_GGUF_ALIGN)
            return bn_err_set(err, BN_EFORMAT, "%s: tensor %s: offset %llu not aligned", f->path, t->name,
                              (unsigned long long)t->offset);
        if (t->offset > f->size - data_start || t->nbytes > f->size - data_start - t->offset)
            return bn_err_set(err, BN_EFORMAT, "%s: tensor %s: data outside the file", f->path, t->name);
        t->data = f->map + data_start + t->offset;
        for (size_t j = 0; j < i; j++) {
            const bn_gguf_tensor *u = &f->t[j];
            if (strcmp(u->name, t->name) == 0)
                return bn_err_set(err, BN_EFORMAT, "%s: tensor %s appears twice", f->path, t->name);
            if (t->offset < u->offset + u->nbytes && u->offset < t->offset + t->nbytes)
                return bn_err_set(err, BN_EFORMAT, "%s: tensors %s and %s overlap", f->path, u->name, t->name);
        }
    }
    return BN_OK;
}

int bn_gguf_open(const char *path, bn_gguf_file **out, bn_err *err)
{
    *out = NULL;
    bn_gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return bn_err_set(err, BN_ENOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        bn_gguf_close(f);
        return bn_err_set(err, bn_err_from_errno(e), "%s: cannot open: %s", path, strerror(e));
    }
    f->size = (size_t)st.st_size;
    if (f->size < 24) {
        close(fd);
        bn_gguf_close(f);
        return bn_err_set(err, BN_EFORMAT, "%s: too short for a GGUF header (%zu bytes)", path, (size_t)st.st_size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        int e = errno;
        f->map = NULL;
        bn_gguf_close(f);
        return bn_err_set(err, bn_err_from_errno(e), "%s: mmap failed: %s", path, strerror(e));
    }
    cursor c = {f->map, f->map + f->size, f, err};
    uint32_t magic;
    uint64_t nt, nkv;
    int rc = rd(&c, &magic, 4, "header");
    if (!rc && magic != 0x46554747u) rc = bn_err_set(err, BN_EFORMAT, "%s: not a GGUF file (bad magic)", path);
    if (!rc) rc = rd(&c, &f->version, 4, "header");
    if (!rc && f->version != 3)
        rc = bn_err_set(err, BN_EUNSUPPORTED, "%s: GGUF version %u (only 3 is supported)", path, f->version);
    if (!rc) rc = rd(&c, &nt, 8, "header") || rd(&c, &nkv, 8, "header") ? BN_EFORMAT : 0;
    /* every kv needs >= 12 bytes and every tensor >= 28: bound the counts by the size */
    if (!rc && (nkv > f->size / 12 || nt > f->size / 28))
        rc = bn_err_set(err, BN_EFORMAT, "%s: %llu keys / %llu tensors cannot fit in %zu bytes", path,
                        (unsigned long long)nkv, (unsigned long long)nt, f->size);
    if (!rc) {
        f->kv = calloc(nkv ? nkv : 1, sizeof *f->kv);
        f->t = calloc(nt ? nt : 1, sizeof *f->t);
        if (!f->kv || !f->t) rc = bn_err_set(err, BN_ENOMEM, "%s: out of memory", path);
    }
    for (uint64_t i = 0; !rc && i < nkv; i++, f->n_kv++) rc = read_kv(&c, &f->kv[i]);
    for (uint64_t i = 0; !rc && i < nt; i++, f->n_t++) rc = read_tensor(&c, &f->t[i]);
    if (!rc) {
        const bn_gguf_kv *al = bn_gguf_find_kv(f, "general.alignment");
        if (al && (al->type != BN_GGUF_V_U32 || al->v.u != BN_GGUF_ALIGN))
            rc = bn_err_set(err, BN_EUNSUPPORTED, "%s: general.alignment other than 32 is not supported", path);
    }
    if (!rc) {
        size_t data_start = (size_t)align_up((uint64_t)(c.p - f->map));
        if (data_start > f->size && f->n_t > 0) rc = cur_fail(&c, "data section outside the file");
        if (!rc) rc = check_tensors(f, data_start, err);
    }
    if (rc) { /* the loops counted the failed entry too, so close frees what it holds */
        bn_gguf_close(f);
        return rc;
    }
    *out = f;
    return BN_OK;
}

void bn_gguf_close(bn_gguf_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_kv; i++) {
        free((char *)f->kv[i].key);
        free((char *)f->kv[i].str);
        if (f->kv[i].arr_str)
            for (uint64_t j = 0; j < f->kv[i].n; j++) free(f->kv[i].arr_str[j]);
        free(f->kv[i].arr_str);
    }
    for (size_t i = 0; i < f->n_t; i++) free((char *)f->t[i].name);
    free(f->kv), free(f->t);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    free(f);
}

uint32_t bn_gguf_version(const bn_gguf_file *f) { return f->version; }
size_t bn_gguf_n_kv(const bn_gguf_file *f) { return f->n_kv; }
size_t bn_gguf_n_tensors(const bn_gguf_file *f) { return f->n_t; }
const bn_gguf_tensor *bn_gguf_tensor_at(const bn_gguf_file *f, size_t i) { return i < f->n_t ? &f->t[i] : NULL; }

const bn_gguf_kv *bn_gguf_find_kv(const bn_gguf_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
    return NULL;
}

const bn_gguf_tensor *bn_gguf_find_tensor(const bn_gguf_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_t; i++)
        if (f->t[i].name && strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

double bn_gguf_kv_arr_f64(const bn_gguf_kv *kv, uint64_t i)
{
    if (kv->type != BN_GGUF_V_ARRAY || !kv->arr || i >= kv->n) return NAN;
    bn_gguf_kv tmp;
    memset(&tmp, 0, sizeof tmp);
    widen(&tmp, kv->arr_type, kv->arr + i * vsize(kv->arr_type));
    switch (kv->arr_type) {
    case BN_GGUF_V_F32: case BN_GGUF_V_F64: return tmp.v.f;
    case BN_GGUF_V_I8: case BN_GGUF_V_I16: case BN_GGUF_V_I32: case BN_GGUF_V_I64: return (double)tmp.v.i;
    case BN_GGUF_V_BOOL: return tmp.v.b;
    default: return (double)tmp.v.u;
    }
}

int64_t bn_gguf_kv_arr_i64(const bn_gguf_kv *kv, uint64_t i)
{
    return (int64_t)bn_gguf_kv_arr_f64(kv, i);
}
