/* test_io.c - engine io: dtype conversions, sha256, fs helpers, safetensors reader and
 * writer (round trip, shards, a generated corpus of malformed files), HF config.json. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_test.h"
#include "base/fsutil.h"
#include "formats/hf.h"
#include "formats/safetensors.h"
#include "base/checksum.h"
#include "base/tensor.h"

/* ---- dtype conversions ---------------------------------------------------------- */

START_TEST(f16_all_values_round_trip)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bn_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        ck_assert_uint_eq(bn_f32_to_f16(f), h);
    }
    ck_assert_float_eq(bn_f16_to_f32(0x3c00), 1.0f);
    ck_assert_float_eq(bn_f16_to_f32(0x0001), ldexpf(1.0f, -24));
    ck_assert_float_eq(bn_f16_to_f32(0x7bff), 65504.0f);
}
END_TEST

START_TEST(f16_rounding)
{
    ck_assert_uint_eq(bn_f32_to_f16(65520.0f), 0x7c00);  /* rounds to inf */
    ck_assert_uint_eq(bn_f32_to_f16(65519.0f), 0x7bff);
    ck_assert_uint_eq(bn_f32_to_f16(1e30f), 0x7c00);
    ck_assert_uint_eq(bn_f32_to_f16(-1e30f), 0xfc00);
    ck_assert_uint_eq(bn_f32_to_f16(1e-30f), 0x0000);
    ck_assert_uint_eq(bn_f32_to_f16(-0.0f), 0x8000);
    /* ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    ck_assert_uint_eq(bn_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);
    ck_assert_uint_eq(bn_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
    ck_assert_uint_eq(bn_f32_to_f16(ldexpf(1, -25)), 0x0000);       /* half of min subnormal: even */
    ck_assert_uint_eq(bn_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    ck_assert(isnan(bn_f16_to_f32(bn_f32_to_f16(NAN))));
    /* array path (F16C when present) agrees with the scalar one on a sweep */
    enum { N = 4099 };
    float *src = malloc(N * sizeof *src);
    uint16_t *a = malloc(N * 2);
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        uint32_t bits = x;
        memcpy(&src[i], &bits, 4);
        if (isnan(src[i])) src[i] = 1.0f;
    }
    bn_f32_to_f16_array(src, a, N);
    for (int i = 0; i < N; i++) ck_assert_uint_eq(a[i], bn_f32_to_f16(src[i]));
    float *back = malloc(N * sizeof *back);
    ck_assert_int_eq(bn_to_f32(a, BN_DTYPE_F16, back, N), 0);
    for (int i = 0; i < N; i++) ck_assert_uint_eq(bn_f32_to_f16(back[i]), a[i]);
    free(src); free(a); free(back);
}
END_TEST

START_TEST(bf16_conversions)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bn_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        ck_assert_uint_eq(bn_f32_to_bf16(f), h);
    }
    ck_assert_uint_eq(bn_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80); /* tie to even */
    ck_assert_uint_eq(bn_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
    ck_assert(isnan(bn_bf16_to_f32(bn_f32_to_bf16(NAN))));
    bn_dtype t;
    ck_assert_int_eq(bn_dtype_parse("BF16", &t), 0);
    ck_assert_int_eq(t, BN_DTYPE_BF16);
    ck_assert_int_eq(bn_dtype_parse("F8", &t), -1);
    ck_assert_uint_eq(bn_dtype_size(BN_DTYPE_I64), 8);
}
END_TEST

/* ---- sha256 + fs ---------------------------------------------------------------- */

START_TEST(sha256_vectors)
{
    char hex[65];
    ck_assert_int_eq(bn_sha256_hex("", 0, hex), 0);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ck_assert_int_eq(bn_sha256_hex("abc", 3, hex), 0);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ck_assert_int_eq(bn_sha256_hex(m, strlen(m), hex), 0);
    ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    uint8_t raw[32];
    ck_assert_int_eq(bn_sha256_digest("abc", 3, raw), 0);
    ck_assert_uint_eq(raw[0], 0xba);
    ck_assert_uint_eq(raw[31], 0xad);
    /* streaming in odd pieces == one shot */
    char big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (char)(i * 7);
    bn_sha256 s;
    bn_err err = { 0 };
    ck_assert_int_eq(bn_sha256_init(&s, &err), 0);
    for (int i = 0; i < 1000; i += 37) bn_sha256_update(&s, big + i, i + 37 > 1000 ? 1000 - i : 37);
    char one[65], two[65];
    ck_assert_int_eq(bn_sha256_final_hex(&s, two, &err), 0);
    ck_assert_ptr_null(s.ctx);
    bn_sha256_free(&s); /* after final: a no-op */
    ck_assert_int_eq(bn_sha256_hex(big, 1000, one), 0);
    ck_assert_str_eq(one, two);
    /* an abandoned digest is freed without a result */
    ck_assert_int_eq(bn_sha256_init(&s, &err), 0);
    bn_sha256_update(&s, "x", 1);
    bn_sha256_free(&s);
    ck_assert_int_eq(bn_sha256_final_hex(&s, two, &err), BN_EIO);
}
END_TEST

/* FIPS 180-2's long vector: one million 'a', streamed in uneven pieces and as a file */
START_TEST(sha256_million)
{
    enum { N = 1000000 };
    char *a = malloc(N);
    ck_assert_ptr_nonnull(a);
    memset(a, 'a', N);
    bn_sha256 s;
    bn_err err = { 0 };
    char hex[65];
    ck_assert_int_eq(bn_sha256_init(&s, &err), 0);
    for (size_t off = 0, k = 1; off < N; off += k, k = k * 3 + 1)
        bn_sha256_update(&s, a + off, off + k > N ? N - off : k);
    ck_assert_int_eq(bn_sha256_final_hex(&s, hex, &err), 0);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    char *dir = bn_test_tmpdir("sha");
    char p[4096];
    snprintf(p, sizeof p, "%s/a.bin", dir);
    ck_assert_int_eq(bn_fs_write_atomic(p, a, N, &err), 0);
    char fhex[65];
    ck_assert_int_eq(bn_sha256_file(p, fhex, &err), 0);
    ck_assert_str_eq(fhex, hex);
    snprintf(p, sizeof p, "%s/missing", dir);
    ck_assert_int_eq(bn_sha256_file(p, fhex, &err), BN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing"));
    bn_fs_rm_rf(dir, &err);
    free(dir);
    free(a);
}
END_TEST

START_TEST(fs_helpers)
{
    char *dir = bn_test_tmpdir("fs");
    char p[4096], q[4096];
    bn_err err = { 0 };
    snprintf(p, sizeof p, "%s/a/b/c", dir);
    ck_assert_int_eq(bn_fs_mkdir_p(p, &err), 0);
    ck_assert(bn_fs_is_dir(p));
    snprintf(p, sizeof p, "%s/a/b/c/f.txt", dir);
    ck_assert_int_eq(bn_fs_write_atomic(p, "hello", 5, &err), 0);
    ck_assert_int_eq(bn_fs_file_size(p), 5);
    snprintf(q, sizeof q, "%s/copy.txt", dir);
    ck_assert_int_eq(bn_fs_copy_file(p, q, &err), 0);
    char *text;
    size_t len;
    ck_assert_int_eq(bn_fs_read_file(q, 100, &text, &len, &err), 0);
    ck_assert_str_eq(text, "hello");
    free(text);
    ck_assert_int_eq(bn_fs_read_file(q, 3, &text, &len, &err), BN_EFORMAT);
    char hex[65];
    ck_assert_int_eq(bn_sha256_file(q, hex, &err), 0);
    ck_assert_str_eq(hex, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    snprintf(p, sizeof p, "%s/a", dir);
    snprintf(q, sizeof q, "%s/renamed", dir);
    ck_assert_int_eq(bn_fs_rename(p, q, &err), 0);
    ck_assert(!bn_fs_exists(p));
    snprintf(p, sizeof p, "%s/renamed/b/c/f.txt", dir);
    ck_assert(bn_fs_exists(p));
    ck_assert_int_eq(bn_fs_mkdir_p(p, &err), BN_EIO); /* a file is in the way */
    ck_assert_int_eq(bn_fs_rm_rf(q, &err), 0);
    ck_assert(!bn_fs_exists(q));
    ck_assert_int_eq(bn_fs_rm_rf(q, &err), 0); /* missing: fine */
    ck_assert_int_ne(bn_fs_copy_file("/nonexistent/x", q, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/x"));
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- safetensors round trip ------------------------------------------------------- */

START_TEST(st_write_read)
{
    char *dir = bn_test_tmpdir("st");
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    bn_err err = { 0 };
    bn_st_writer *w;
    ck_assert_int_eq(bn_st_writer_new(path, &w, &err), 0);
    ck_assert_int_eq(bn_st_writer_metadata(w, "format", "pt"), 0);
    int64_t s1[2] = { 3, 5 }, s2[1] = { 7 }, s0[1] = { 0 };
    ck_assert_int_eq(bn_st_writer_declare(w, "b.weight", BN_DTYPE_F32, 2, s1, &err), 0);
    ck_assert_int_eq(bn_st_writer_declare(w, "a.bias", BN_DTYPE_F16, 1, s2, &err), 0);
    ck_assert_int_eq(bn_st_writer_declare(w, "empty", BN_DTYPE_I8, 1, s0, &err), 0);
    ck_assert_int_eq(bn_st_writer_declare(w, "a.bias", BN_DTYPE_F16, 1, s2, &err), BN_EINVAL);
    float f[15];
    uint16_t h[7];
    for (int i = 0; i < 15; i++) f[i] = (float)i * 0.5f - 3;
    for (int i = 0; i < 7; i++) h[i] = bn_f32_to_f16((float)i);
    ck_assert_int_eq(bn_st_writer_write(w, f, 20, &err), 0); /* in pieces */
    ck_assert_int_eq(bn_st_writer_write(w, (char *)f + 20, 40, &err), 0);
    ck_assert_int_eq(bn_st_writer_write(w, h, 14, &err), 0);
    ck_assert_int_eq(bn_st_writer_finish(w, &err), 0);

    bn_st_file *sf;
    ck_assert_int_eq(bn_st_open(path, &sf, &err), 0);
    ck_assert_uint_eq(bn_st_count(sf), 3);
    ck_assert_str_eq(bn_st_metadata(sf, "format"), "pt");
    const bn_st_tensor *t = bn_st_find(sf, "b.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[1], 5);
    ck_assert_uint_eq(t->numel, 15);
    ck_assert_int_eq(((uintptr_t)t->data) % 8, 0); /* header padded to 8 */
    ck_assert_mem_eq(t->data, f, 60);
    t = bn_st_find(sf, "a.bias");
    ck_assert_int_eq(t->dtype, BN_DTYPE_F16);
    float back[7];
    bn_to_f32(t->data, t->dtype, back, 7);
    for (int i = 0; i < 7; i++) ck_assert_float_eq(back[i], (float)i);
    ck_assert_ptr_null(bn_st_find(sf, "nope"));
    bn_st_tensor_release(bn_st_find(sf, "b.weight"));
    ck_assert_mem_eq(bn_st_find(sf, "b.weight")->data, f, 60); /* still readable */
    bn_st_close(sf);

    /* an unfinished tensor fails finish and leaves nothing behind */
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    ck_assert_int_eq(bn_st_writer_new(path, &w, &err), 0);
    ck_assert_int_eq(bn_st_writer_declare(w, "x", BN_DTYPE_F32, 1, s2, &err), 0);
    ck_assert_int_eq(bn_st_writer_write(w, f, 8, &err), 0);
    ck_assert_int_eq(bn_st_writer_finish(w, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "'x'"));
    ck_assert(!bn_fs_exists(path));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert(!bn_fs_exists(tmp));
    /* too much data */
    ck_assert_int_eq(bn_st_writer_new(path, &w, &err), 0);
    ck_assert_int_eq(bn_st_writer_declare(w, "x", BN_DTYPE_U8, 1, s2, &err), 0);
    ck_assert_int_eq(bn_st_writer_write(w, f, 8, &err), BN_EINVAL);
    bn_st_writer_abort(w);
    ck_assert(!bn_fs_exists(tmp));
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

/* A file larger than the writer's buffer (several direct writes and an unaligned tail):
 * the checksum computed while writing equals the file's, and bn_st_tensor_copy reads
 * every tensor back exactly, from the file and from an in-memory image. */
START_TEST(st_write_big_sha_and_copy)
{
    char *dir = bn_test_tmpdir("st-big");
    char path[4200];
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    bn_err err = { 0 };
    bn_st_writer *w;
    const int64_t n1 = 5000001, n2 = 3333; /* 20 MB of F32, then an odd-sized U8 tail */
    float *a = malloc((size_t)n1 * 4);
    uint8_t b[3333];
    for (int64_t i = 0; i < n1; i++) a[i] = (float)(i % 1013) * 0.25f;
    for (int64_t i = 0; i < n2; i++) b[i] = (uint8_t)(i * 7);
    ck_assert_int_eq(bn_st_writer_new(path, &w, &err), 0);
    ck_assert_int_eq(bn_st_writer_declare(w, "a", BN_DTYPE_F32, 1, &n1, &err), 0);
    ck_assert_int_eq(bn_st_writer_declare(w, "b", BN_DTYPE_U8, 1, &n2, &err), 0);
    ck_assert_int_eq(bn_st_writer_write(w, a, (size_t)n1 * 4, &err), 0);
    ck_assert_int_eq(bn_st_writer_write(w, b, (size_t)n2, &err), 0);
    char streamed[65], reread[65];
    ck_assert_int_eq(bn_st_writer_finish_sha256(w, streamed, &err), 0);
    ck_assert_int_eq(bn_sha256_file(path, reread, &err), 0);
    ck_assert_str_eq(streamed, reread);

    bn_st_file *sf;
    ck_assert_int_eq(bn_st_open(path, &sf, &err), 0);
    const bn_st_tensor *ta = bn_st_find(sf, "a"), *tb = bn_st_find(sf, "b");
    ck_assert_int_ge(ta->file_fd, 0);
    ck_assert_int_ge(ta->file_offset, 8);
    float *ca = malloc((size_t)n1 * 4);
    uint8_t cb[3333];
    ck_assert_int_eq(bn_st_tensor_copy(ta, ca, &err), 0);
    ck_assert_int_eq(bn_st_tensor_copy(tb, cb, &err), 0);
    ck_assert_mem_eq(ca, a, (size_t)n1 * 4);
    ck_assert_mem_eq(cb, b, (size_t)n2);
    /* the same bytes parsed as an image: copies come from memory */
    size_t len = (size_t)bn_st_file_size(sf);
    uint8_t *img = malloc(len);
    FILE *fp = fopen(path, "rb");
    ck_assert_uint_eq(fread(img, 1, len, fp), len);
    fclose(fp);
    bn_st_file *mf;
    ck_assert_int_eq(bn_st_parse(img, len, "image", &mf, &err), 0);
    const bn_st_tensor *mb = bn_st_find(mf, "b");
    ck_assert_int_eq(mb->file_fd, -1);
    memset(cb, 0, sizeof cb);
    ck_assert_int_eq(bn_st_tensor_copy(mb, cb, &err), 0);
    ck_assert_mem_eq(cb, b, (size_t)n2);
    /* a file cut short after opening: a clear error, not a crash */
    ck_assert_int_eq(truncate(path, (off_t)(len - 100)), 0);
    ck_assert_int_eq(bn_st_tensor_copy(tb, cb, &err), BN_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "'b'"));
    bn_st_close(mf);
    bn_st_close(sf);
    free(img);
    free(ca);
    free(a);
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

static void write_simple(const char *path, const char *const *names, int n)
{
    bn_err err;
    bn_st_writer *w;
    ck_assert_int_eq(bn_st_writer_new(path, &w, &err), 0);
    int64_t s[1] = { 4 };
    for (int i = 0; i < n; i++) ck_assert_int_eq(bn_st_writer_declare(w, names[i], BN_DTYPE_F32, 1, s, &err), 0);
    float v[4] = { 1, 2, 3, 4 };
    for (int i = 0; i < n; i++) ck_assert_int_eq(bn_st_writer_write(w, v, 16, &err), 0);
    ck_assert_int_eq(bn_st_writer_finish(w, &err), 0);
}

START_TEST(st_shards)
{
    char *dir = bn_test_tmpdir("shards");
    char p[4096];
    const char *a[] = { "t1", "t2" }, *b[] = { "t3" };
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_simple(p, a, 2);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_simple(p, b, 1);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    const char *idx = "{\"metadata\":{\"total_size\":48},\"weight_map\":{\"t1\":\"model-00001-of-00002.safetensors\","
                      "\"t2\":\"model-00001-of-00002.safetensors\",\"t3\":\"model-00002-of-00002.safetensors\"}}";
    bn_err err = { 0 };
    ck_assert_int_eq(bn_fs_write_atomic(p, idx, strlen(idx), &err), 0);
    bn_st_set *s;
    ck_assert_int_eq(bn_st_set_open(dir, &s, &err), 0);
    ck_assert_uint_eq(bn_st_set_count(s), 3);
    ck_assert_uint_eq(bn_st_set_bytes(s), 48);
    ck_assert_ptr_nonnull(bn_st_set_find(s, "t3"));
    ck_assert_ptr_nonnull(strstr(bn_st_set_find(s, "t3")->file, "00002"));
    bn_st_set_close(s);
    /* index names a tensor the shard lacks */
    idx = "{\"weight_map\":{\"t1\":\"model-00001-of-00002.safetensors\",\"t2\":\"model-00001-of-00002.safetensors\","
          "\"t3\":\"model-00001-of-00002.safetensors\"}}";
    bn_fs_write_atomic(p, idx, strlen(idx), &err);
    ck_assert_int_eq(bn_st_set_open(dir, &s, &err), BN_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "'t3'"));
    /* shard path escaping the folder */
    idx = "{\"weight_map\":{\"t1\":\"../x.safetensors\"}}";
    bn_fs_write_atomic(p, idx, strlen(idx), &err);
    ck_assert_int_eq(bn_st_set_open(dir, &s, &err), BN_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "weight_map['t1']"));
    /* tensor in a shard but not in the index */
    idx = "{\"weight_map\":{\"t1\":\"model-00001-of-00002.safetensors\"}}";
    bn_fs_write_atomic(p, idx, strlen(idx), &err);
    ck_assert_int_eq(bn_st_set_open(dir, &s, &err), BN_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "'t2' is not listed"));
    /* no weights at all */
    unlink(p);
    char empty[4096];
    snprintf(empty, sizeof empty, "%s/none", dir);
    bn_fs_mkdir_p(empty, &err);
    ck_assert_int_eq(bn_st_set_open(empty, &s, &err), BN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "no model.safetensors"));
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- malformed corpus ------------------------------------------------------------- */

typedef struct {
    const char *what;
    const char *header;  /* JSON text (NULL: raw bytes below) */
    int64_t hlen_override; /* -1: use the header length */
    size_t data_len;
    const char *raw; size_t raw_len;
    const char *expect;  /* substring of the error */
} bad_case;

static const bad_case corpus[] = {
    { "empty file", NULL, -1, 0, "", 0, "shorter than the 8-byte header length" },
    { "truncated length", NULL, -1, 0, "\x10\x00\x00", 3, "shorter than the 8-byte header length" },
    { "header past end", "{}", 4096, 0, NULL, 0, "runs past the end of the file" },
    { "header too large", "{}", 200000000, 0, NULL, 0, "exceeds the" },
    { "header tiny", "{", 1, 0, NULL, 0, "cannot hold a JSON object" },
    { "not JSON", "{\"a\": [1, 2", -1, 0, NULL, 0, "not valid JSON" },
    { "JSON array", "[1, 2, 3]", -1, 0, NULL, 0, "not a JSON object" },
    { "trailing bytes", "{} xyz", -1, 0, NULL, 0, "trailing bytes" },
    { "unknown dtype", "{\"w\":{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,2]}}", -1, 2, NULL, 0,
      "tensor 'w': unknown dtype 'F8'" },
    { "missing dtype", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, NULL, 0, "tensor 'w': missing or non-string 'dtype'" },
    { "shape not array", "{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", -1, 8, NULL, 0,
      "tensor 'w': missing or non-array 'shape'" },
    { "fractional dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", -1, 8, NULL, 0,
      "tensor 'w': shape[0] is not a non-negative integer" },
    { "negative dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", -1, 8, NULL, 0,
      "tensor 'w': shape[1] is not a non-negative integer" },
    { "shape overflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", -1,
      8, NULL, 0, "tensor 'w': shape overflows 64 bits" },
    { "bytes overflow", "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,536870912],\"data_offsets\":[0,8]}}", -1, 8,
      NULL, 0, "tensor 'w': shape overflows 64 bits" },
    { "huge dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", -1, 8, NULL, 0,
      "tensor 'w': shape[0] is not a non-negative integer" },
    { "too many dims", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", -1, 1, NULL,
      0, "tensor 'w': 9 dimensions" },
    { "size mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", -1, 16, NULL, 0,
      "tensor 'w': data span is 12 bytes but shape x F32 needs 16" },
    { "end before begin", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", -1, 16, NULL, 0,
      "tensor 'w': data_offsets end 4 before begin 8" },
    { "offsets out of range", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", -1, 16, NULL, 0,
      "tensor 'w': data_offsets [8, 24] outside the 16-byte data section" },
    { "three offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", -1, 8, NULL, 0,
      "tensor 'w': 'data_offsets' must be [begin, end]" },
    { "negative offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", -1, 8, NULL, 0,
      "tensor 'w': data_offsets are not non-negative integers" },
    { "overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", -1, 16, NULL, 0,
      "tensors 'a' and 'b' have overlapping data spans" },
    { "duplicate names", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", -1, 8, NULL, 0,
      "duplicate tensor name 'a'" },
    { "unknown field", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", -1, 4, NULL, 0,
      "tensor 'w': unknown field 'x'" },
    { "entry not object", "{\"w\":[1,2]}", -1, 0, NULL, 0, "tensor 'w': entry is not a JSON object" },
    { "metadata value", "{\"__metadata__\":{\"k\":1}}", -1, 0, NULL, 0, "__metadata__ value of 'k' is not a string" },
    { "metadata type", "{\"__metadata__\":[]}", -1, 0, NULL, 0, "__metadata__ is not a JSON object" },
    { "empty name", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, NULL, 0,
      "tensor with an empty name" },
    { "NUL in header", "{\"w\":1}\0    ", 12, 0, NULL, 0, "header contains a NUL byte" },
    { "deep nesting", NULL, -2, 0, NULL, 0, "not valid JSON" },
};

static uint8_t *build_case(const bad_case *c, size_t *len)
{
    if (c->raw) {
        uint8_t *b = malloc(c->raw_len + 1);
        memcpy(b, c->raw, c->raw_len);
        *len = c->raw_len;
        return b;
    }
    char deep[5000];
    const char *hdr = c->header;
    size_t hl;
    if (c->hlen_override == -2) { /* 2000 nested arrays */
        size_t k = 0;
        k += (size_t)sprintf(deep, "{\"w\":");
        for (int i = 0; i < 2000; i++) deep[k++] = '[';
        for (int i = 0; i < 2000; i++) deep[k++] = ']';
        deep[k++] = '}';
        deep[k] = 0;
        hdr = deep;
        hl = k;
    } else {
        hl = c->hlen_override == 12 ? 12 : strlen(hdr);
    }
    uint64_t declared = c->hlen_override >= 0 ? (uint64_t)c->hlen_override : hl;
    size_t body = hl;
    *len = 8 + body + c->data_len;
    uint8_t *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(declared >> (8 * i));
    memcpy(b + 8, hdr, body);
    return b;
}

START_TEST(st_malformed_corpus)
{
    size_t n = sizeof corpus / sizeof corpus[0];
    ck_assert_uint_ge(n, 20);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = build_case(&corpus[i], &len);
        bn_st_file *f = NULL;
        bn_err err = { 0 };
        int rc = bn_st_parse(b, len, "case.safetensors", &f, &err);
        if (rc != BN_EFORMAT || !strstr(err.msg, corpus[i].expect) || !strstr(err.msg, "case.safetensors"))
            ck_abort_msg("case '%s': rc %d, message '%s', expected '%s'", corpus[i].what, rc, err.msg,
                         corpus[i].expect);
        ck_assert_ptr_null(f);
        free(b);
    }
}
END_TEST

/* The same corpus as files on disk (mmap path), plus every truncation of a valid file. */
START_TEST(st_malformed_files)
{
    char *dir = bn_test_tmpdir("corpus");
    char p[4096];
    bn_err err;
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        size_t len;
        uint8_t *b = build_case(&corpus[i], &len);
        snprintf(p, sizeof p, "%s/case%zu.safetensors", dir, i);
        bn_fs_write_atomic(p, b, len, &err);
        free(b);
        bn_st_file *f = NULL;
        ck_assert_int_eq(bn_st_open(p, &f, &err), BN_EFORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, p));
    }
    /* every prefix of a valid two-tensor file is rejected */
    snprintf(p, sizeof p, "%s/good.safetensors", dir);
    const char *names[] = { "a", "b" };
    write_simple(p, names, 2);
    char *full;
    size_t flen;
    ck_assert_int_eq(bn_fs_read_file(p, 1 << 20, &full, &flen, &err), 0);
    for (size_t cut = 0; cut < flen; cut++) {
        bn_st_file *f = NULL;
        ck_assert_int_eq(bn_st_parse(full, cut, "trunc", &f, &err), BN_EFORMAT);
    }
    bn_st_file *f = NULL;
    ck_assert_int_eq(bn_st_parse(full, flen, "full", &f, &err), 0);
    bn_st_close(f);
    free(full);
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- config.json -------------------------------------------------------------------- */

START_TEST(hf_config)
{
    bn_model_config c;
    bn_err err = { 0 };
    const char *ok = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":172,\"num_hidden_layers\":5,"
                     "\"num_attention_heads\":8,\"num_key_value_heads\":4,\"vocab_size\":512,\"rms_norm_eps\":1e-5,"
                     "\"tie_word_embeddings\":true,\"bos_token_id\":1,\"eos_token_id\":[2,3]}";
    ck_assert_int_eq(bn_hf_config_parse(ok, strlen(ok), &c, &err), 0);
    ck_assert_int_eq(c.head_dim, 8);
    ck_assert_int_eq(c.n_kv_heads, 4);
    ck_assert_int_eq(c.max_seq_len, 2048);
    ck_assert(c.tied_embeddings);
    ck_assert(!c.attention_bias);
    ck_assert_int_eq(c.eos_id, 2);
    ck_assert_float_eq_tol(c.rms_norm_eps, 1e-5f, 1e-12f);
    ck_assert_float_eq(c.rope_theta, 10000.0f);
    const char *qwen = "{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":4,\"vocab_size\":100}";
    ck_assert_int_eq(bn_hf_config_parse(qwen, strlen(qwen), &c, &err), 0);
    ck_assert(c.attention_bias);
    ck_assert_int_eq(c.arch, BN_ARCH_QWEN2);
    struct { const char *json, *expect; int code; } bad[] = {
        { "{\"model_type\":\"gpt2\"}", "model_type: \"gpt2\" is not supported", BN_EUNSUPPORTED },
        { "{\"hidden_size\":1}", "missing 'model_type'", BN_EFORMAT },
        { "{\"model_type\":\"llama\",\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":1,"
          "\"vocab_size\":1}", "missing 'hidden_size'", BN_EFORMAT },
        { "{\"model_type\":\"llama\",\"hidden_size\":\"64\",\"intermediate_size\":1,\"num_hidden_layers\":1,"
          "\"num_attention_heads\":1,\"vocab_size\":1}", "'hidden_size' must be a positive integer", BN_EFORMAT },
        { "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,"
          "\"num_attention_heads\":8,\"num_key_value_heads\":3,\"vocab_size\":1}", "not a multiple of num_key_value_heads",
          BN_EFORMAT },
        { "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,"
          "\"num_attention_heads\":8,\"vocab_size\":1,\"rms_norm_eps\":-1}", "'rms_norm_eps' must be a positive number",
          BN_EFORMAT },
        { "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,"
          "\"num_attention_heads\":8,\"vocab_size\":1,\"tie_word_embeddings\":1}", "'tie_word_embeddings' must be true or false",
          BN_EFORMAT },
        { "not json", "not valid JSON", BN_EFORMAT },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = bn_hf_config_parse(bad[i].json, strlen(bad[i].json), &c, &err);
        if (rc != bad[i].code || !strstr(err.msg, bad[i].expect) || !strstr(err.msg, "config.json"))
            ck_abort_msg("config %zu: rc %d '%s'", i, rc, err.msg);
    }
}
END_TEST

START_TEST(hf_roles)
{
    int layer;
    ck_assert_int_eq(bn_hf_role_of("model.layers.12.mlp.down_proj.weight", &layer), BN_ROLE_W_DOWN);
    ck_assert_int_eq(layer, 12);
    ck_assert_int_eq(bn_hf_role_of("model.layers.0.self_attn.k_proj.bias", &layer), BN_ROLE_BK);
    ck_assert_int_eq(bn_hf_role_of("model.embed_tokens.weight", &layer), BN_ROLE_EMBED);
    ck_assert_int_eq(layer, -1);
    ck_assert_int_eq(bn_hf_role_of("model.layers.x.mlp.up_proj.weight", &layer), BN_ROLE_OTHER);
    ck_assert_int_eq(bn_hf_role_of("model.layers.3.self_attn.rotary_emb.inv_freq", &layer), BN_ROLE_OTHER);
    char buf[128];
    for (int r = 0; r < BN_ROLE_OTHER; r++) {
        bn_hf_name((bn_role)r, 7, buf, sizeof buf);
        ck_assert_int_eq(bn_hf_role_of(buf, &layer), r);
    }
    ck_assert(bn_role_is_linear(BN_ROLE_WO));
    ck_assert(!bn_role_is_linear(BN_ROLE_EMBED));
}
END_TEST

/* The real stories260K folder opens, with the expected roles and counts. */
START_TEST(hf_open_stories)
{
    const char *dir = bn_test_data("stories260K-hf");
    if (access(dir, R_OK) != 0) {
        bn_test_require_data("stories260K-hf/config.json");
    }
    bn_hf_model *m;
    bn_err err = { 0 };
    ck_assert_msg(bn_hf_open(dir, &m, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m->cfg.dim, 64);
    ck_assert_int_eq(m->cfg.n_layers, 5);
    ck_assert_uint_eq(m->n_params, 260032);
    ck_assert_ptr_null(bn_hf_tensor(m, BN_ROLE_HEAD, -1));
    ck_assert_ptr_nonnull(bn_hf_tensor(m, BN_ROLE_W_UP, 4));
    bn_hf_close(m);
}
END_TEST

/* A model folder whose config disagrees with its tensors. */
START_TEST(hf_open_errors)
{
    char *dir = bn_test_tmpdir("hf");
    char p[4096];
    bn_err err = { 0 };
    bn_hf_model *m;
    snprintf(p, sizeof p, "%s/config.json", dir);
    const char *cfg = "{\"model_type\":\"llama\",\"hidden_size\":4,\"intermediate_size\":8,\"num_hidden_layers\":1,"
                      "\"num_attention_heads\":2,\"vocab_size\":4,\"tie_word_embeddings\":true}";
    bn_fs_write_atomic(p, cfg, strlen(cfg), &err);
    ck_assert_int_eq(bn_hf_open(dir, &m, &err), BN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "no model.safetensors"));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    const char *names[] = { "model.embed_tokens.weight" };
    write_simple(p, names, 1); /* shape [4] instead of [4, 4] */
    ck_assert_int_eq(bn_hf_open(dir, &m, &err), BN_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "'model.embed_tokens.weight' has shape [4], config.json implies [4, 4]"));
    const char *names2[] = { "model.norm.weight" };
    write_simple(p, names2, 1);
    ck_assert_int_eq(bn_hf_open(dir, &m, &err), BN_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing tensor 'model.embed_tokens.weight'"));
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine-io");
    TCase *tc = tcase_create("io");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, f16_all_values_round_trip);
    tcase_add_test(tc, f16_rounding);
    tcase_add_test(tc, bf16_conversions);
    tcase_add_test(tc, sha256_vectors);
    tcase_add_test(tc, sha256_million);
    tcase_add_test(tc, fs_helpers);
    tcase_add_test(tc, st_write_read);
    tcase_add_test(tc, st_write_big_sha_and_copy);
    tcase_add_test(tc, st_shards);
    tcase_add_test(tc, st_malformed_corpus);
    tcase_add_test(tc, st_malformed_files);
    tcase_add_test(tc, hf_config);
    tcase_add_test(tc, hf_roles);
    tcase_add_test(tc, hf_open_stories);
    tcase_add_test(tc, hf_open_errors);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
