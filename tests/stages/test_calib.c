/* test_calib.c - calibration text sources: blank-line documents, JSONL, UTF-8 checks,
 * short-text skipping, the fallback chain with its events, custom input errors, the
 * synthetic source (never silent) and the deterministic, disjoint eval split. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bn_test.h"
#include "stages/calib_text.h"

static int n_warn, n_info;
static char last_warn[2048];
static void on_event(void *ctx, bn_stage st, const char *level, const char *msg)
{
    (void)ctx; (void)st;
    if (strcmp(level, "warn") == 0) {
        n_warn++;
        snprintf(last_warn, sizeof last_warn, "%s", msg);
    } else {
        n_info++;
    }
}
static const bn_progress progress = {NULL, NULL, on_event, NULL};

static void opts(bn_options *o, bn_calib_dataset ds)
{
    memset(o, 0, sizeof *o);
    o->seed = 42;
    o->calibration.dataset = ds;
    o->calibration.enabled = true;
    o->calibration.samples = 20;
    o->calibration.eval_fraction = 0.1;
    n_warn = n_info = 0;
    last_warn[0] = 0;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(data, 1, len, f);
    fclose(f);
}

#define LONG1 "Once upon a time there was a little dog named Max who liked to run."
#define LONG2 "Lily went to the park with her mom and saw a big red ball on the grass."

START_TEST(text_documents_at_blank_lines)
{
    const char *t = LONG1 "\nsecond line of one.\n\n" LONG2 "\n \n\n\nshort\n\n" LONG1;
    bn_calib_docs d = {0};
    ck_assert_int_eq(bn_calib_parse_text(&d, t, strlen(t), "t", NULL), 0);
    ck_assert_int_eq(d.n, 3);
    ck_assert_int_eq(d.skipped, 1);
    ck_assert_str_eq(d.text[0], LONG1 "\nsecond line of one.");
    ck_assert_str_eq(d.text[1], LONG2);
    ck_assert_str_eq(d.text[2], LONG1);
    bn_calib_docs_free(&d);
}
END_TEST

START_TEST(jsonl_and_errors)
{
    const char *j = "{\"text\": \"" LONG1 "\", \"id\": 1}\n\n{\"text\":\"tiny\"}\n{\"text\":\"" LONG2 "\"}";
    bn_calib_docs d = {0};
    bn_err e = {0};
    ck_assert_int_eq(bn_calib_parse_jsonl(&d, j, strlen(j), "x.jsonl", &e), 0);
    ck_assert_int_eq(d.n, 2);
    ck_assert_int_eq(d.skipped, 1);
    const char *bad = "{\"text\": \"" LONG1 "\"}\n{\"body\": 3}\n";
    ck_assert_int_eq(bn_calib_parse_jsonl(&d, bad, strlen(bad), "x.jsonl", &e), BN_EFORMAT);
    ck_assert_msg(strstr(e.msg, "x.jsonl:2") && strstr(e.msg, "text"), "%s", e.msg);
    bn_calib_docs_free(&d);
}
END_TEST

START_TEST(utf8_validation)
{
    size_t bad = 0;
    ck_assert(bn_calib_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15, &bad));
    ck_assert(!bn_calib_utf8_valid("ab\xff", 3, &bad));
    ck_assert_uint_eq(bad, 2);
    ck_assert(!bn_calib_utf8_valid("a\xc3", 2, &bad));          /* truncated */
    ck_assert(!bn_calib_utf8_valid("\xc0\xaf", 2, &bad));       /* overlong */
    ck_assert(!bn_calib_utf8_valid("\xed\xa0\x80", 3, &bad));   /* surrogate */
    ck_assert(!bn_calib_utf8_valid("\xf4\x90\x80\x80", 4, &bad)); /* > U+10FFFF */
}
END_TEST

START_TEST(custom_bad_inputs_fail_clearly)
{
    bn_options o;
    bn_calib_set s;
    bn_err e = {0};
    char *dir = bn_test_tmpdir("calib");
    char path[4096];

    opts(&o, BN_CALIB_CUSTOM); /* empty custom list */
    ck_assert_int_eq(bn_calib_load(&o, NULL, &progress, &s, &e), BN_EINVAL);
    ck_assert_msg(strstr(e.msg, "config.calibration.texts") && strstr(e.msg, "empty"), "%s", e.msg);

    snprintf(path, sizeof path, "%s/latin1.txt", dir); /* not UTF-8 */
    write_file(path, LONG1 "\n\ncaf\xe9 " LONG2, strlen(LONG1) + 2 + 5 + strlen(LONG2));
    o.calibration.path = path;
    ck_assert_int_eq(bn_calib_load(&o, NULL, &progress, &s, &e), BN_EFORMAT);
    ck_assert_msg(strstr(e.msg, "latin1.txt") && strstr(e.msg, "UTF-8"), "%s", e.msg);

    o.calibration.path = dir; /* a folder is not a regular file */
    ck_assert_int_eq(bn_calib_load(&o, NULL, &progress, &s, &e), BN_EINVAL);
    ck_assert_msg(strstr(e.msg, "not a regular file"), "%s", e.msg);

    snprintf(path, sizeof path, "%s/missing.txt", dir);
    o.calibration.path = path;
    ck_assert_int_ne(bn_calib_load(&o, NULL, &progress, &s, &e), 0);
    ck_assert_msg(strstr(e.msg, "missing.txt"), "%s", e.msg);

    char *texts[3] = {LONG1, "x", LONG2};
    o.calibration.path = NULL;
    o.calibration.texts = texts;
    o.calibration.n_texts = 3;
    ck_assert_int_eq(bn_calib_load(&o, NULL, &progress, &s, &e), 0);
    ck_assert_int_eq(s.docs.n, 2);
    ck_assert_int_eq(s.n_train + s.n_eval, 2);
    ck_assert_int_eq(s.n_eval, 1);
    ck_assert(!s.synthetic);
    bn_calib_free(&s);

    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(fallback_chain_and_synthetic)
{
    bn_options o;
    bn_calib_set s;
    bn_err e = {0};
    char *dir = bn_test_tmpdir("calibfb");
    char p[4096];

    /* nothing at all: openwebtext -> c4 -> wikitext -> synthetic, three warnings + one */
    opts(&o, BN_CALIB_OPENWEBTEXT);
    ck_assert_int_eq(bn_calib_load(&o, dir, &progress, &s, &e), 0);
    ck_assert(s.synthetic);
    ck_assert_int_eq(n_warn, 4);
    ck_assert_msg(strstr(last_warn, "SYNTHETIC"), "%s", last_warn);
    ck_assert_int_eq(s.docs.n, 20);
    ck_assert_int_eq(s.n_eval, 2);
    ck_assert(strstr(s.docs.text[0], "The quick brown fox") == s.docs.text[0]);
    ck_assert(strstr(s.docs.text[1], "quantization. Quantization") == NULL);
    ck_assert(strstr(s.docs.text[1], "inference. Quantization reduces") != NULL);
    bn_calib_free(&s);

    /* synthetic chosen explicitly is still announced */
    opts(&o, BN_CALIB_SYNTHETIC);
    ck_assert_int_eq(bn_calib_load(&o, dir, &progress, &s, &e), 0);
    ck_assert_int_eq(n_warn, 1);
    bn_calib_free(&s);

    /* wikitext present: openwebtext and c4 fall back to it (2 warnings), file order kept */
    snprintf(p, sizeof p, "%s/datasets", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/datasets/wikitext", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/datasets/wikitext/b.jsonl", dir);
    const char *jl = "{\"text\": \"" LONG2 "\"}\n";
    write_file(p, jl, strlen(jl));
    snprintf(p, sizeof p, "%s/datasets/wikitext/a.txt", dir);
    const char *tx = LONG1 "\n\n" LONG1 " again\n";
    write_file(p, tx, strlen(tx));
    snprintf(p, sizeof p, "%s/datasets/wikitext/ignored.csv", dir);
    write_file(p, "x", 1);
    opts(&o, BN_CALIB_OPENWEBTEXT);
    o.calibration.eval_fraction = 0.0;
    ck_assert_int_eq(bn_calib_load(&o, dir, &progress, &s, &e), 0);
    ck_assert(!s.synthetic);
    ck_assert_int_eq(n_warn, 2);
    ck_assert_int_eq(s.docs.n, 3);
    ck_assert_str_eq(s.docs.text[2], LONG2);
    ck_assert(strstr(s.source, "wikitext"));
    bn_calib_free(&s);

    /* a non-UTF-8 file inside a named dataset fails the load, naming the file */
    snprintf(p, sizeof p, "%s/datasets/wikitext/c.txt", dir);
    write_file(p, "\xfe\xfe", 2);
    opts(&o, BN_CALIB_WIKITEXT);
    ck_assert_int_eq(bn_calib_load(&o, dir, &progress, &s, &e), BN_EFORMAT);
    ck_assert_msg(strstr(e.msg, "c.txt"), "%s", e.msg);

    bn_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(split_deterministic_and_disjoint)
{
    int *tr, *ev, ntr, nev, *tr2, *ev2, ntr2, nev2, *tr3, *ev3, ntr3, nev3;
    ck_assert_int_eq(bn_calib_split(1000, 0.1, 7, &tr, &ntr, &ev, &nev, NULL), 0);
    ck_assert_int_eq(nev, 100);
    ck_assert_int_eq(ntr, 900);
    ck_assert_int_eq(bn_calib_split(1000, 0.1, 7, &tr2, &ntr2, &ev2, &nev2, NULL), 0);
    ck_assert(memcmp(ev, ev2, sizeof(int) * 100) == 0);
    ck_assert_int_eq(bn_calib_split(1000, 0.1, 8, &tr3, &ntr3, &ev3, &nev3, NULL), 0);
    ck_assert(memcmp(ev, ev3, sizeof(int) * 100) != 0);
    char seen[1000] = {0};
    for (int i = 0; i < nev; i++) seen[ev[i]] |= 1;
    for (int i = 0; i < ntr; i++) seen[tr[i]] |= 2;
    for (int i = 0; i < 1000; i++) ck_assert(seen[i] == 1 || seen[i] == 2);
    for (int i = 1; i < ntr; i++) ck_assert(tr[i] > tr[i - 1]);
    free(tr); free(ev); free(tr2); free(ev2); free(tr3); free(ev3);
    ck_assert_int_eq(bn_calib_split(1, 0.1, 7, &tr, &ntr, &ev, &nev, NULL), 0);
    ck_assert_int_eq(ntr, 1);
    ck_assert_int_eq(nev, 0);
    free(tr); free(ev);
    ck_assert_int_eq(bn_calib_split(10, 1.5, 7, &tr, &ntr, &ev, &nev, NULL), BN_EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, text_documents_at_blank_lines);
    tcase_add_test(tc, jsonl_and_errors);
    tcase_add_test(tc, utf8_validation);
    tcase_add_test(tc, custom_bad_inputs_fail_clearly);
    tcase_add_test(tc, fallback_chain_and_synthetic);
    tcase_add_test(tc, split_deterministic_and_disjoint);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
