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
static const bn_progress progress = {NULL, NULL, on_event, NULL, NULL, NULL};

static void opts(bn_options *o, bn_calib_dataset ds)
{
    memset(o, 0, sizeof *o);
    o->seed = 42;
    o->calibration.dataset = ds;
    o->calibration.enabled = true;
    o->calibration.samples = 20;
    o->calibration.eval_fraction = 0.1;
    o->calibration.selection_fraction = 0.05;
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
    ck_assert_int_eq(s.parts.n_train + s.parts.n_eval, 2);
    ck_assert_int_eq(s.parts.n_eval, 1);
    ck_assert_int_eq(s.parts.n_select, 0); /* no room: training keeps one document */
    ck_assert(!s.synthetic);
    ck_assert_str_eq(s.label, "inline:3 texts");
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
    /* 20 samples of 15 distinct template combinations: the 5 repeats are dropped */
    ck_assert_int_eq(s.docs.n, 15);
    ck_assert_int_eq(s.docs.duplicates, 5);
    ck_assert_int_eq(s.parts.n_eval, 2);
    ck_assert_int_eq(s.parts.n_select, 1);
    ck_assert_str_eq(s.label, "synthetic");
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
    ck_assert_str_eq(s.label, "dataset:wikitext");
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

/* Every index in exactly one of the three parts; each part sorted. */
static void check_partition(int n, const bn_calib_parts *p)
{
    char *seen = calloc((size_t)n, 1);
    const int *parts[3] = {p->train, p->select, p->eval};
    const int counts[3] = {p->n_train, p->n_select, p->n_eval};
    ck_assert_int_eq(counts[0] + counts[1] + counts[2], n);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < counts[k]; i++) {
            ck_assert(parts[k][i] >= 0 && parts[k][i] < n);
            ck_assert_msg(seen[parts[k][i]] == 0, "document %d in two splits", parts[k][i]);
            seen[parts[k][i]] = (char)(1 + k);
            if (i) ck_assert(parts[k][i] > parts[k][i - 1]);
        }
    free(seen);
}

START_TEST(split_three_ways_deterministic_and_disjoint)
{
    bn_calib_parts a, b, c;
    ck_assert_int_eq(bn_calib_split(1000, 0.1, 0.05, 7, &a, NULL), 0);
    ck_assert_int_eq(a.n_eval, 100);
    ck_assert_int_eq(a.n_select, 50);
    ck_assert_int_eq(a.n_train, 850);
    check_partition(1000, &a);
    ck_assert_int_eq(bn_calib_split(1000, 0.1, 0.05, 7, &b, NULL), 0);
    ck_assert(memcmp(a.eval, b.eval, sizeof(int) * 100) == 0);
    ck_assert(memcmp(a.select, b.select, sizeof(int) * 50) == 0);
    ck_assert_int_eq(bn_calib_split(1000, 0.1, 0.05, 8, &c, NULL), 0);
    ck_assert(memcmp(a.eval, c.eval, sizeof(int) * 100) != 0);
    check_partition(1000, &c);
    bn_calib_parts_free(&a); bn_calib_parts_free(&b); bn_calib_parts_free(&c);
    /* small sets: the report split first, then selection, training keeps one */
    static const struct { int n, tr, sl, ev; } small[] = {
        {1, 1, 0, 0}, {2, 1, 0, 1}, {3, 1, 1, 1}, {10, 8, 1, 1}, {30, 25, 2, 3}};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        ck_assert_int_eq(bn_calib_split(small[i].n, 0.1, 0.05, 7, &a, NULL), 0);
        ck_assert_int_eq(a.n_train, small[i].tr);
        ck_assert_int_eq(a.n_select, small[i].sl);
        ck_assert_int_eq(a.n_eval, small[i].ev);
        check_partition(small[i].n, &a);
        bn_calib_parts_free(&a);
    }
    ck_assert_int_eq(bn_calib_split(100, 0.1, 0.0, 7, &a, NULL), 0);
    ck_assert_int_eq(a.n_select, 0);
    check_partition(100, &a);
    bn_calib_parts_free(&a);
    bn_err e = {0};
    ck_assert_int_eq(bn_calib_split(10, 1.5, 0.05, 7, &a, &e), BN_EINVAL);
    ck_assert_int_eq(bn_calib_split(10, 0.5, 0.6, 7, &a, &e), BN_EINVAL);
    ck_assert_msg(strstr(e.msg, "selection_fraction"), "%s", e.msg);
}
END_TEST

/* A file that repeats documents: after loading, no held-out (selection or report) text
 * equals any training text. */
START_TEST(held_out_text_never_in_training)
{
    char *dir = bn_test_tmpdir("calibdup");
    char path[4096];
    snprintf(path, sizeof path, "%s/rep.txt", dir);
    size_t cap = 200000, len = 0;
    char *buf = malloc(cap);
    for (int i = 0; i < 400; i++) /* 400 paragraphs, only 97 distinct */
        len += (size_t)snprintf(buf + len, cap - len, "Paragraph number %d tells a short story.\n\n",
                                (i * 37) % 97);
    write_file(path, buf, len);
    free(buf);
    bn_options o;
    opts(&o, BN_CALIB_CUSTOM);
    o.calibration.path = path;
    o.calibration.eval_fraction = 0.2;
    o.calibration.selection_fraction = 0.1;
    bn_calib_set s;
    bn_err e = {0};
    ck_assert_int_eq(bn_calib_load(&o, NULL, &progress, &s, &e), 0);
    ck_assert_int_eq(s.docs.n, 97);
    ck_assert_int_eq(s.docs.duplicates, 303);
    check_partition(s.docs.n, &s.parts);
    ck_assert_int_gt(s.parts.n_select, 0);
    ck_assert_int_gt(s.parts.n_eval, 0);
    const int *held[2] = {s.parts.select, s.parts.eval};
    const int nheld[2] = {s.parts.n_select, s.parts.n_eval};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < nheld[k]; i++)
            for (int j = 0; j < s.parts.n_train; j++)
                ck_assert_msg(strcmp(s.docs.text[held[k][i]], s.docs.text[s.parts.train[j]]) != 0,
                              "held-out text also in training: %s", s.docs.text[held[k][i]]);
    ck_assert(strncmp(s.label, "file:", 5) == 0);
    bn_calib_free(&s);
    bn_test_rmtree(dir);
    free(dir);
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
    tcase_add_test(tc, split_three_ways_deterministic_and_disjoint);
    tcase_add_test(tc, held_out_text_never_in_training);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
