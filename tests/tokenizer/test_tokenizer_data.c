/* test_tokenizer_data.c - the stories260K tokenizer.json on the TinyStories validation
 * text: bn_tok_encode_file must reproduce tinystories_val.tok512.u16 (made by
 * sentencepiece with tok512.model: BOS, then the ids of each stripped paragraph) on
 * every paragraph that has no run of spaces (sentencepiece collapses those, HF does
 * not), and decoding must give each paragraph back.
 * The GGUF facts are checked against stories260K-f32.gguf, which llama.cpp's converter
 * made from tok512.model: same tokens, types and special ids, and scores in the same
 * order; and llama.cpp's SPM tokenizer algorithm (highest-scoring adjacent pair whose
 * concatenation is a token merges first), run here with bn_tok_score, must give the
 * same ids as bn_tok_encode on every paragraph: what llama.cpp will do with our GGUF. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)sz + 1);
    ck_assert_uint_eq(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    p[sz] = 0;
    *n = (size_t)sz;
    return p;
}

static int is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

START_TEST(stories_u16)
{
    bn_tok *t = NULL;
    bn_err e = { 0 };
    ck_assert_msg(bn_tok_load(bn_test_data("stories260K-hf"), &t, &e) == 0, "%s", e.msg);
    bn_tok_ids ids = { 0 }, starts = { 0 };
    ck_assert_msg(bn_tok_encode_file(t, bn_test_data("corpora/tinystories_val.txt"), BN_TOK_ADD_SPECIAL,
                                     &ids, &starts, &e) == 0, "%s", e.msg);
    size_t ulen, tlen;
    char *u = slurp(bn_test_data("corpora/tinystories_val.tok512.u16"), &ulen);
    char *text = slurp(bn_test_data("corpora/tinystories_val.txt"), &tlen);
    const uint16_t *ref = (const uint16_t *)u;
    size_t nref = ulen / 2;

    /* the paragraphs, as encode_file defines them */
    size_t npara = 0, r = 0, checked = 0, spaced = 0, pos = 0;
    while (pos < tlen) {
        char *sep = strstr(text + pos, "\n\n");
        size_t end = sep ? (size_t)(sep - text) : tlen, a = pos, b = end;
        while (a < b && is_ws(text[a])) a++;
        while (b > a && is_ws(text[b - 1])) b--;
        pos = sep ? end + 2 : tlen;
        if (a == b) continue;
        ck_assert_uint_lt(npara, starts.n);
        size_t s0 = (size_t)starts.ids[npara], s1 = npara + 1 < starts.n ? (size_t)starts.ids[npara + 1] : ids.n;
        /* the reference paragraph: from its BOS to the next BOS */
        ck_assert_uint_lt(r, nref);
        ck_assert_int_eq(ref[r], 1);
        size_t r1 = r + 1;
        while (r1 < nref && ref[r1] != 1) r1++;
        int has_run = memmem(text + a, b - a, "  ", 2) != NULL;
        if (has_run) {
            spaced++;
        } else {
            ck_assert_msg(s1 - s0 == r1 - r, "paragraph %zu: %zu ids, reference %zu", npara, s1 - s0, r1 - r);
            for (size_t i = 0; i < s1 - s0; i++)
                ck_assert_msg(ids.ids[s0 + i] == ref[r + i], "paragraph %zu, token %zu: %d != %d",
                              npara, i, ids.ids[s0 + i], ref[r + i]);
            checked++;
        }
        char *dec;
        size_t dl;
        ck_assert_int_eq(bn_tok_decode(t, ids.ids + s0, s1 - s0, BN_TOK_SKIP_SPECIAL, &dec, &dl, &e), 0);
        ck_assert_msg(dl == b - a && memcmp(dec, text + a, dl) == 0, "paragraph %zu does not round-trip", npara);
        free(dec);
        npara++;
        r = r1;
    }
    ck_assert_uint_eq(npara, starts.n);
    ck_assert_uint_eq(r, nref);
    ck_assert_uint_eq(npara, 4300);
    ck_assert_uint_eq(spaced, 4);
    ck_assert_uint_eq(checked, 4296);
    free(u);
    free(text);
    bn_tok_ids_free(&ids);
    bn_tok_ids_free(&starts);
    bn_tok_free(t);
}
END_TEST

static size_t n_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

START_TEST(gguf_facts)
{
    bn_tok *t = NULL;
    bn_err e = { 0 };
    ck_assert_msg(bn_tok_load(bn_test_data("stories260K-hf"), &t, &e) == 0, "%s", e.msg);
    bn_gguf_file *g = NULL;
    ck_assert_msg(bn_gguf_open(bn_test_data("stories260K/stories260K-f32.gguf"), &g, &e) == 0, "%s", e.msg);
    const bn_gguf_kv *toks = bn_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const bn_gguf_kv *types = bn_gguf_find_kv(g, "tokenizer.ggml.token_type");
    const bn_gguf_kv *scores = bn_gguf_find_kv(g, "tokenizer.ggml.scores");
    ck_assert_ptr_nonnull(toks);
    ck_assert_ptr_nonnull(types);
    ck_assert_ptr_nonnull(scores);
    ck_assert_uint_eq(toks->n, bn_tok_vocab_size(t));
    ck_assert_str_eq(bn_gguf_find_kv(g, "tokenizer.ggml.model")->str, bn_tok_model_name(t));
    for (uint64_t i = 0; i < toks->n; i++) {
        ck_assert_str_eq(toks->arr_str[i], bn_tok_token(t, (int32_t)i));
        ck_assert_int_eq(bn_gguf_kv_arr_i64(types, i), bn_tok_get_type(t, (int32_t)i));
    }
    ck_assert_int_eq(bn_gguf_find_kv(g, "tokenizer.ggml.bos_token_id")->v.u, bn_tok_bos_id(t));
    ck_assert_int_eq(bn_gguf_find_kv(g, "tokenizer.ggml.eos_token_id")->v.u, bn_tok_eos_id(t));
    ck_assert_int_eq(bn_gguf_find_kv(g, "tokenizer.ggml.unknown_token_id")->v.u, bn_tok_unk_id(t));
    ck_assert_int_eq(bn_gguf_find_kv(g, "tokenizer.ggml.add_bos_token")->v.b, bn_tok_add_bos(t));
    ck_assert_int_eq(bn_gguf_find_kv(g, "tokenizer.ggml.add_eos_token")->v.b, bn_tok_add_eos(t));
    /* scores: the same order on multi-character pieces (the only ones SPM ever merges
     * into), the same values on byte and control tokens */
    for (uint64_t i = 0; i < toks->n; i++) {
        int32_t a = (int32_t)i;
        if (bn_tok_get_type(t, a) != BN_TOK_TYPE_NORMAL) {
            ck_assert_float_eq(bn_gguf_kv_arr_f64(scores, i), bn_tok_score(t, a));
            continue;
        }
        if (n_chars(bn_tok_token(t, a)) < 2) continue;
        for (uint64_t j = 0; j < toks->n; j++) {
            int32_t b = (int32_t)j;
            if (bn_tok_get_type(t, b) != BN_TOK_TYPE_NORMAL || n_chars(bn_tok_token(t, b)) < 2) continue;
            int ref = bn_gguf_kv_arr_f64(scores, i) > bn_gguf_kv_arr_f64(scores, j);
            ck_assert_msg(ref == (bn_tok_score(t, a) > bn_tok_score(t, b)), "score order of %s and %s",
                          bn_tok_token(t, a), bn_tok_token(t, b));
        }
    }
    bn_gguf_close(g);
    bn_tok_free(t);
}
END_TEST

/* llama.cpp's SPM tokenizer (llm_tokenizer_spm), reduced to what it does on this
 * vocabulary: "▁" + text with spaces as "▁", UTF-8 characters as symbols, repeatedly
 * merge the adjacent pair with the highest-scoring concatenation (leftmost on ties),
 * then unknown symbols as <0xXX> bytes. */
typedef struct spm_sym { int prev, next; size_t off, len; } spm_sym;

static int32_t lookup(const bn_tok *t, const char *s, size_t n)
{
    char buf[256];
    if (n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    return bn_tok_token_id(t, buf);
}

static size_t spm_encode(const bn_tok *t, const char *para, size_t plen, int32_t *out)
{
    char *s = malloc(plen * 3 + 4);
    size_t n = 0;
    memcpy(s, "\xe2\x96\x81", 3);
    n = 3;
    for (size_t i = 0; i < plen; i++) {
        if (para[i] == ' ') { memcpy(s + n, "\xe2\x96\x81", 3); n += 3; }
        else s[n++] = para[i];
    }
    spm_sym *sym = malloc((n + 1) * sizeof *sym);
    int ns = 0;
    for (size_t i = 0; i < n;) {
        size_t l = 1;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xF0) l = 4; else if (c >= 0xE0) l = 3; else if (c >= 0xC0) l = 2;
        sym[ns] = (spm_sym){ ns - 1, ns + 1, i, l };
        ns++;
        i += l;
    }
    sym[ns - 1].next = -1;
    /* O(n^2) pair search: fine for paragraphs */
    for (;;) {
        int best = -1;
        float bs = 0;
        for (int i = 0; i >= 0 && sym[i].next >= 0; i = sym[i].next) {
            int j = sym[i].next;
            int32_t id = lookup(t, s + sym[i].off, sym[i].len + sym[j].len);
            if (id < 0) continue;
            float sc = bn_tok_score(t, id);
            if (best < 0 || sc > bs) { best = i; bs = sc; }
        }
        if (best < 0) break;
        int j = sym[best].next;
        sym[best].len += sym[j].len;
        sym[best].next = sym[j].next;
        if (sym[j].next >= 0) sym[sym[j].next].prev = best;
    }
    size_t k = 0;
    out[k++] = bn_tok_bos_id(t);
    for (int i = 0; i >= 0; i = sym[i].next) {
        int32_t id = lookup(t, s + sym[i].off, sym[i].len);
        if (id >= 0) { out[k++] = id; continue; }
        for (size_t b = 0; b < sym[i].len; b++) {
            char hex[8];
            snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)s[sym[i].off + b]);
            out[k++] = bn_tok_token_id(t, hex);
        }
    }
    free(sym);
    free(s);
    return k;
}

/* A continuation keeps its leading space: the ids of "Once upon a time there was",
 * split after the prompt's ids, decode to " there was" in the prompt's context (plain
 * decoding of the continuation alone strips it: SentencePiece's Strip decoder). */
START_TEST(continuation_keeps_leading_space)
{
    bn_tok *t;
    bn_err e = {0};
    ck_assert_msg(bn_tok_load(bn_test_data("stories260K-hf"), &t, &e) == 0, "%s", e.msg);
    const char *prompt = "Once upon a time", *whole = "Once upon a time there was a cat.";
    bn_tok_ids p = {0}, w = {0};
    ck_assert_int_eq(bn_tok_encode(t, prompt, strlen(prompt), BN_TOK_ADD_SPECIAL, &p, &e), 0);
    ck_assert_int_eq(bn_tok_encode(t, whole, strlen(whole), BN_TOK_ADD_SPECIAL, &w, &e), 0);
    ck_assert(w.n > p.n && memcmp(w.ids, p.ids, p.n * sizeof(int32_t)) == 0);
    char *txt;
    size_t len;
    ck_assert_int_eq(bn_tok_decode_continuation(t, p.ids, p.n, w.ids + p.n, w.n - p.n,
                                                BN_TOK_SKIP_SPECIAL, &txt, &len, &e), 0);
    ck_assert_str_eq(txt, " there was a cat.");
    ck_assert_uint_eq(len, strlen(txt));
    free(txt);
    ck_assert_int_eq(bn_tok_decode(t, w.ids + p.n, w.n - p.n, BN_TOK_SKIP_SPECIAL, &txt, &len, &e), 0);
    ck_assert_str_eq(txt, "there was a cat."); /* why the context is needed */
    free(txt);
    /* no prefix: plain decode; an empty continuation: empty text; a bad id: an error */
    ck_assert_int_eq(bn_tok_decode_continuation(t, p.ids, 0, w.ids, w.n, BN_TOK_SKIP_SPECIAL, &txt, &len, &e), 0);
    ck_assert_str_eq(txt, whole);
    free(txt);
    ck_assert_int_eq(bn_tok_decode_continuation(t, p.ids, p.n, NULL, 0, BN_TOK_SKIP_SPECIAL, &txt, &len, &e), 0);
    ck_assert_str_eq(txt, "");
    free(txt);
    int32_t bad = 1 << 20;
    ck_assert_int_eq(bn_tok_decode_continuation(t, p.ids, p.n, &bad, 1, 0, &txt, &len, &e), BN_EINVAL);
    ck_assert_ptr_null(txt);
    bn_tok_ids_free(&p);
    bn_tok_ids_free(&w);
    bn_tok_free(t);
}
END_TEST

START_TEST(llama_cpp_spm_replay)
{
    bn_tok *t = NULL;
    bn_err e = { 0 };
    ck_assert_msg(bn_tok_load(bn_test_data("stories260K-hf"), &t, &e) == 0, "%s", e.msg);
    size_t tlen;
    char *text = slurp(bn_test_data("corpora/tinystories_val.txt"), &tlen);
    size_t pos = 0, npara = 0;
    int32_t *spm = malloc((tlen * 4 + 8) * sizeof *spm);
    while (pos < tlen && npara < 600) {
        char *sep = strstr(text + pos, "\n\n");
        size_t end = sep ? (size_t)(sep - text) : tlen, a = pos, b = end;
        while (a < b && is_ws(text[a])) a++;
        while (b > a && is_ws(text[b - 1])) b--;
        pos = sep ? end + 2 : tlen;
        if (a == b) continue;
        bn_tok_ids ids = { 0 };
        ck_assert_int_eq(bn_tok_encode(t, text + a, b - a, BN_TOK_ADD_SPECIAL, &ids, &e), 0);
        size_t k = spm_encode(t, text + a, b - a, spm);
        ck_assert_msg(k == ids.n && memcmp(spm, ids.ids, k * sizeof *spm) == 0,
                      "paragraph %zu: llama.cpp SPM with our scores differs from HF BPE", npara);
        bn_tok_ids_free(&ids);
        npara++;
    }
    ck_assert_uint_eq(npara, 600);
    free(spm);
    free(text);
    bn_tok_free(t);
}
END_TEST

int main(void)
{
    bn_test_require_data("stories260K-hf/tokenizer.json");
    bn_test_require_data("corpora/tinystories_val.tok512.u16");
    bn_test_require_data("stories260K/stories260K-f32.gguf");
    Suite *s = suite_create("tokenizer-data");
    TCase *tc = tcase_create("stories260K");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stories_u16);
    tcase_add_test(tc, gguf_facts);
    tcase_add_test(tc, llama_cpp_spm_replay);
    tcase_add_test(tc, continuation_keeps_leading_space);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
