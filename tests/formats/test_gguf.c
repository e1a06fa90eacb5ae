/* test_gguf.c - GGUF container and block codecs: TQ2_0/TQ1_0 layouts against
 * independent reference decoders, Q8_0 error bound, writer -> reader round trip,
 * rejection of damaged files. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_test.h"
#include "formats/gguf.h"
#include "base/tensor.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static void random_codes(int8_t *c, int n)
{
    for (int i = 0; i < n; i++) c[i] = (int8_t)(next() % 3) - 1;
}

/* TQ2_0 decoded the way ggml's dequantizer walks it: for each 32-byte half j and
 * shift l, 32 consecutive weights. */
static void ref_tq2(const bn_gguf_block_tq2_0 *b, float *y)
{
    float d = bn_f16_to_f32(b->d);
    for (int j = 0; j < 64; j += 32)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++) *y++ = (float)(((b->qs[j + m] >> (2 * l)) & 3) - 1) * d;
}

/* TQ1_0 decoded as ggml does: multiply by 3^n (mod 256), take the top trit. */
static void ref_tq1(const bn_gguf_block_tq1_0 *b, float *y)
{
    static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
    float d = bn_f16_to_f32(b->d);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++) {
            uint8_t q = (uint8_t)(b->qs[m] * pow3[n]);
            *y++ = (float)((((uint16_t)q * 3) >> 8) - 1) * d;
        }
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++) {
            uint8_t q = (uint8_t)(b->qs[32 + m] * pow3[n]);
            *y++ = (float)((((uint16_t)q * 3) >> 8) - 1) * d;
        }
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) {
            uint8_t q = (uint8_t)(b->qh[j] * pow3[n]);
            *y++ = (float)((((uint16_t)q * 3) >> 8) - 1) * d;
        }
}

START_TEST(tq2_layout)
{
    enum { N = 512 };
    int8_t c[N], back[N];
    bn_gguf_block_tq2_0 b[2];
    random_codes(c, N);
    bn_gguf_tq2_0_pack(c, 0.0375f, N, b);
    float y[256];
    for (int k = 0; k < 2; k++) {
        ref_tq2(&b[k], y);
        float d = bn_f16_to_f32(bn_f32_to_f16(0.0375f));
        for (int i = 0; i < 256; i++) ck_assert_float_eq(y[i], c[k * 256 + i] * d);
    }
    uint16_t d[2];
    bn_gguf_tq2_0_unpack(b, N, back, d);
    ck_assert_int_eq(memcmp(c, back, N), 0);
    ck_assert_uint_eq(d[0], bn_f32_to_f16(0.0375f));
    /* weight 1 of block 0 is byte 1, bits 0..1; weight 32 is byte 0 bits 2..3 */
    memset(c, 0, N);
    c[1] = 1, c[32] = -1, c[128] = 1;
    bn_gguf_tq2_0_pack(c, 1, 256, b);
    ck_assert_uint_eq(b[0].qs[1], 0x56);  /* 01 01 01 10 */
    ck_assert_uint_eq(b[0].qs[0], 0x51);  /* 01 01 00 01 */
    ck_assert_uint_eq(b[0].qs[32], 0x56);
}
END_TEST

START_TEST(tq1_layout)
{
    enum { N = 768 };
    int8_t c[N], back[N];
    bn_gguf_block_tq1_0 b[3];
    random_codes(c, N);
    bn_gguf_tq1_0_pack(c, 0.5f, N, b);
    float y[256];
    for (int k = 0; k < 3; k++) {
        ref_tq1(&b[k], y);
        for (int i = 0; i < 256; i++) ck_assert_float_eq(y[i], c[k * 256 + i] * 0.5f);
    }
    bn_gguf_tq1_0_unpack(b, N, back, NULL);
    ck_assert_int_eq(memcmp(c, back, N), 0);
    /* all zero codes: digits 1,1,1,1,1 -> v = 121 -> ceil(121*256/243) = 128 */
    memset(c, 0, 256);
    bn_gguf_tq1_0_pack(c, 1, 256, b);
    ck_assert_uint_eq(b[0].qs[0], 128);
    /* qh: 4 digits 1 then a 0 digit: v = 120 -> ceil(120*256/243) = 127 */
    ck_assert_uint_eq(b[0].qh[0], 127);
    /* every code at every position decodes back, including all +1 and all -1 */
    for (int v = -1; v <= 1; v++) {
        memset(c, v, 256);
        bn_gguf_tq1_0_pack(c, 1, 256, b);
        bn_gguf_tq1_0_unpack(b, 256, back, NULL);
        ck_assert_int_eq(memcmp(c, back, 256), 0);
    }
}
END_TEST

START_TEST(q8_0_bound)
{
    float x[96], y[96];
    for (int i = 0; i < 96; i++) x[i] = (float)((int64_t)(next() % 2001) - 1000) / 317.0f;
    bn_gguf_block_q8_0 b[3];
    bn_gguf_q8_0_quantize(x, 96, b);
    ck_assert_int_eq(bn_gguf_dequantize(BN_GGUF_Q8_0, b, 96, y), 0);
    for (int j = 0; j < 3; j++) {
        float d = bn_f16_to_f32(b[j].d);
        for (int i = 0; i < 32; i++) ck_assert(fabsf(y[32 * j + i] - x[32 * j + i]) <= 0.5f * d + 1e-3f * fabsf(x[32 * j + i]));
    }
    ck_assert_int_eq(bn_gguf_dequantize(BN_GGUF_Q8_0, b, 95, y), BN_EUNSUPPORTED);
}
END_TEST

static char *tmpfile_path(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* A small file with every value kind and tensor type; returns its path. */
static char *write_sample(const char *dir)
{
    char *path = tmpfile_path(dir, "s.gguf");
    bn_gguf_writer *w;
    bn_err err;
    ck_assert_int_eq(bn_gguf_writer_new(path, &w, &err), 0);
    ck_assert_int_eq(bn_gguf_kv_str(w, "general.architecture", "llama"), 0);
    ck_assert_int_eq(bn_gguf_kv_u32(w, "llama.block_count", 2), 0);
    ck_assert_int_eq(bn_gguf_kv_f32(w, "llama.rope.freq_base", 10000.0f), 0);
    ck_assert_int_eq(bn_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", true), 0);
    ck_assert_int_eq(bn_gguf_kv_i32(w, "x.neg", -5), 0);
    const char *toks[3] = {"<s>", "a", "\xe2\x96\x81" "b"};
    ck_assert_int_eq(bn_gguf_kv_arr_str(w, "tokenizer.ggml.tokens", toks, 3), 0);
    float sc[3] = {0, -1.5f, 2};
    ck_assert_int_eq(bn_gguf_kv_arr_f32(w, "tokenizer.ggml.scores", sc, 3), 0);
    int32_t ty[3] = {3, 1, 1};
    ck_assert_int_eq(bn_gguf_kv_arr_i32(w, "tokenizer.ggml.token_type", ty, 3), 0);
    ck_assert_int_ne(bn_gguf_kv_u32(w, "llama.block_count", 3), 0); /* duplicate */
    int64_t ne1[1] = {5}, ne2[2] = {256, 3}, ne3[2] = {32, 2};
    ck_assert_int_eq(bn_gguf_writer_declare(w, "norm", BN_GGUF_F32, 1, ne1, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_declare(w, "tern", BN_GGUF_TQ2_0, 2, ne2, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_declare(w, "half", BN_GGUF_F16, 2, ne3, &err), 0);
    int64_t bad[2] = {100, 2};
    ck_assert_int_eq(bn_gguf_writer_declare(w, "bad", BN_GGUF_TQ2_0, 2, bad, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad"));
    bn_gguf_writer_abort(w); /* the duplicate key poisoned it: start again cleanly */
    ck_assert_int_eq(access(path, F_OK), -1);

    ck_assert_int_eq(bn_gguf_writer_new(path, &w, &err), 0);
    bn_gguf_kv_str(w, "general.architecture", "llama");
    bn_gguf_kv_u32(w, "llama.block_count", 2);
    bn_gguf_kv_f32(w, "llama.rope.freq_base", 10000.0f);
    bn_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", true);
    bn_gguf_kv_i32(w, "x.neg", -5);
    bn_gguf_kv_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    bn_gguf_kv_arr_f32(w, "tokenizer.ggml.scores", sc, 3);
    bn_gguf_kv_arr_i32(w, "tokenizer.ggml.token_type", ty, 3);
    ck_assert_int_eq(bn_gguf_writer_declare(w, "norm", BN_GGUF_F32, 1, ne1, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_declare(w, "tern", BN_GGUF_TQ2_0, 2, ne2, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_declare(w, "half", BN_GGUF_F16, 2, ne3, &err), 0);
    float nv[5] = {1, 2, 3, 4, 5};
    ck_assert_int_eq(bn_gguf_writer_write(w, nv, sizeof nv, &err), 0);
    int8_t c[768];
    for (int i = 0; i < 768; i++) c[i] = (int8_t)(i % 3) - 1;
    bn_gguf_block_tq2_0 b[3];
    for (int r = 0; r < 3; r++) bn_gguf_tq2_0_pack(c + 256 * r, 0.25f * (r + 1), 256, &b[r]);
    ck_assert_int_eq(bn_gguf_writer_write(w, b, 100, &err), 0); /* in pieces */
    ck_assert_int_eq(bn_gguf_writer_write(w, (uint8_t *)b + 100, sizeof b - 100, &err), 0);
    uint16_t h[64];
    for (int i = 0; i < 64; i++) h[i] = bn_f32_to_f16((float)i / 8);
    ck_assert_int_eq(bn_gguf_writer_write(w, h, 64, &err), 0);
    /* half the last tensor missing: finish fails and leaves nothing */
    char *p2 = tmpfile_path(dir, "short.gguf");
    bn_gguf_writer *w2;
    ck_assert_int_eq(bn_gguf_writer_new(p2, &w2, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_declare(w2, "n", BN_GGUF_F32, 1, ne1, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_write(w2, nv, 8, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_finish(w2, &err), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "n has 8 of 20 bytes"));
    ck_assert_int_eq(access(p2, F_OK), -1);
    free(p2);
    ck_assert_int_eq(bn_gguf_writer_write(w, h + 32, 64, &err), 0);
    ck_assert_int_eq(bn_gguf_writer_finish(w, &err), 0);
    return path;
}

START_TEST(write_read_roundtrip)
{
    char *dir = bn_test_tmpdir("gguf");
    char *path = write_sample(dir);
    bn_gguf_file *f;
    bn_err err;
    ck_assert_int_eq(bn_gguf_open(path, &f, &err), 0);
    ck_assert_uint_eq(bn_gguf_version(f), 3);
    ck_assert_uint_eq(bn_gguf_n_kv(f), 8);
    ck_assert_str_eq(bn_gguf_find_kv(f, "general.architecture")->str, "llama");
    ck_assert_uint_eq(bn_gguf_find_kv(f, "llama.block_count")->v.u, 2);
    ck_assert_int_eq(bn_gguf_find_kv(f, "llama.block_count")->type, BN_GGUF_V_U32);
    ck_assert_double_eq(bn_gguf_find_kv(f, "llama.rope.freq_base")->v.f, 10000.0);
    ck_assert(bn_gguf_find_kv(f, "tokenizer.ggml.add_bos_token")->v.b);
    ck_assert_int_eq(bn_gguf_find_kv(f, "x.neg")->v.i, -5);
    const bn_gguf_kv *t = bn_gguf_find_kv(f, "tokenizer.ggml.tokens");
    ck_assert_uint_eq(t->n, 3);
    ck_assert_str_eq(t->arr_str[2], "\xe2\x96\x81" "b");
    ck_assert_double_eq(bn_gguf_kv_arr_f64(bn_gguf_find_kv(f, "tokenizer.ggml.scores"), 1), -1.5);
    ck_assert_int_eq(bn_gguf_kv_arr_i64(bn_gguf_find_kv(f, "tokenizer.ggml.token_type"), 0), 3);
    ck_assert_uint_eq(bn_gguf_n_tensors(f), 3);
    const bn_gguf_tensor *n = bn_gguf_find_tensor(f, "norm");
    ck_assert_int_eq(n->type, BN_GGUF_F32);
    ck_assert_float_eq(((const float *)n->data)[4], 5);
    const bn_gguf_tensor *te = bn_gguf_find_tensor(f, "tern");
    ck_assert_int_eq(te->n_dims, 2);
    ck_assert_int_eq(te->ne[0], 256);
    ck_assert_int_eq(te->ne[1], 3);
    ck_assert_uint_eq(te->offset % 32, 0);
    ck_assert_uint_eq(te->nbytes, 3 * 66);
    float y[768];
    ck_assert_int_eq(bn_gguf_dequantize(te->type, te->data, 768, y), 0);
    for (int i = 0; i < 768; i++) ck_assert_float_eq(y[i], ((i % 3) - 1) * 0.25f * (i / 256 + 1));
    const bn_gguf_tensor *hf = bn_gguf_find_tensor(f, "half");
    ck_assert_int_eq(bn_gguf_dequantize(hf->type, hf->data, 64, y), 0);
    ck_assert_float_eq(y[63], 63.0f / 8);
    bn_gguf_close(f);

    /* damaged copies: every truncation point and some corrupted fields fail cleanly */
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    rewind(fp);
    unsigned char *buf = malloc((size_t)size);
    ck_assert_int_eq(fread(buf, 1, (size_t)size, fp), size);
    fclose(fp);
    char *bad = tmpfile_path(dir, "bad.gguf");
    for (long cut = 0; cut < size; cut += (cut < 600 ? 7 : 61)) {
        fp = fopen(bad, "wb");
        fwrite(buf, 1, (size_t)cut, fp);
        fclose(fp);
        ck_assert_msg(bn_gguf_open(bad, &f, &err) != 0, "truncated at %ld accepted", cut);
    }
    struct { long off; unsigned char val; const char *msg; } edits[] = {
        {0, 'X', "bad magic"}, {4, 2, "version 2"}, {16, 0xff, "keys"}};
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        unsigned char save = buf[edits[e].off];
        buf[edits[e].off] = edits[e].val;
        fp = fopen(bad, "wb");
        fwrite(buf, 1, (size_t)size, fp);
        fclose(fp);
        buf[edits[e].off] = save;
        ck_assert_int_ne(bn_gguf_open(bad, &f, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.msg, "bad.gguf"));
    }
    free(buf), free(bad), free(path);
    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, tq2_layout);
    tcase_add_test(tc, tq1_layout);
    tcase_add_test(tc, q8_0_bound);
    tcase_add_test(tc, write_read_roundtrip);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
