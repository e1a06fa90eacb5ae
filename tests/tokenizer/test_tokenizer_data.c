/* test_tokenizer_data.c - the stories260K tokenizer.json on the TinyStories validation
 * text: bn_tok_encode_file must reproduce tinystories_val.tok512.u16 (made by
 * sentencepiece with tok512.model: BOS, then the ids of each stripped paragraph) on
 * every paragraph that has no run of spaces (sentencepiece collapses those, HF does
 * not), and decoding must give each paragraph back. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "tokenizer.h"

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

int main(void)
{
    bn_test_require_data("stories260K-hf/tokenizer.json");
    bn_test_require_data("corpora/tinystories_val.tok512.u16");
    Suite *s = suite_create("tokenizer-data");
    TCase *tc = tcase_create("stories260K");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stories_u16);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
