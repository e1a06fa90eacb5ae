/* test_parity.c - bitnetd's FP32 forward against transformers' own logits.
 *
 * Every folder under tests/parity/fixtures/ is a small random model that transformers
 * built and saved (make_fixtures.py says how), with the logits transformers computed for
 * the token ids in tokens.json. Each must load, and each row of bitnetd's logits must lie
 * within 1e-4 x max |logit| of transformers' row. A fixture whose config scales the
 * rotary embedding must also move clearly away from that bound when computed with plain
 * rope: otherwise the fixture could not tell a scaling that is ignored from one that is
 * honoured.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "bn_test.h"
#include "formats/hf.h"
#include "model/llama.h"

#define MAX_T 256

typedef struct fixture {
    int32_t tokens[MAX_T];
    int T, V;
    float *logits; /* [T, V] from transformers */
} fixture;

static void read_fixture(const char *dir, fixture *fx)
{
    char p[4600], *text;
    size_t len;
    bn_err err = { 0 };
    snprintf(p, sizeof p, "%s/tokens.json", dir);
    ck_assert_msg(bn_fs_read_file(p, 1 << 20, &text, &len, &err) == 0, "%s", err.msg);
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(o, "tokens");
    fx->T = cJSON_GetArraySize(toks);
    fx->V = cJSON_GetObjectItemCaseSensitive(o, "vocab")->valueint;
    ck_assert_int_gt(fx->T, 0);
    ck_assert_int_le(fx->T, MAX_T);
    int i = 0;
    for (const cJSON *t = toks->child; t; t = t->next) fx->tokens[i++] = t->valueint;
    cJSON_Delete(o);
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_nonnull(f);
    fx->logits = malloc((size_t)fx->T * fx->V * sizeof(float));
    ck_assert_int_eq(fread(fx->logits, sizeof(float), (size_t)fx->T * fx->V, f), (size_t)fx->T * fx->V);
    fclose(f);
}

/* The worst row of |ours - theirs| / max |theirs|, computing with config cfg. */
static double worst_row(bn_hf_model *hf, const bn_model_config *cfg, const fixture *fx)
{
    bn_err err = { 0 };
    bn_model_config saved = hf->cfg;
    hf->cfg = *cfg;
    bn_llama *m;
    ck_assert_msg(bn_llama_load(hf, &m, &err) == 0, "%s", err.msg);
    hf->cfg = saved;
    ck_assert_msg(bn_llama_forward(m, fx->tokens, 1, fx->T, &err) == 0, "%s", err.msg);
    double worst = 0;
    for (int t = 0; t < fx->T; t++) {
        const float *ref = fx->logits + (size_t)t * fx->V;
        const bn_llama_float *got = m->acts.logits + (size_t)t * fx->V;
        double mx = 0, md = 0;
        for (int v = 0; v < fx->V; v++) {
            mx = fmax(mx, fabs(ref[v]));
            md = fmax(md, fabs((double)got[v] - ref[v]));
        }
        worst = fmax(worst, md / mx);
    }
    bn_llama_free(m);
    return worst;
}

START_TEST(every_fixture_matches_transformers)
{
    char root[4096];
    const char *src = getenv("BN_SOURCE_ROOT");
    snprintf(root, sizeof root, "%s/tests/parity/fixtures", src ? src : ".");
    DIR *d = opendir(root);
    ck_assert_msg(d != NULL, "%s: no fixtures", root);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[4400];
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        fixture fx;
        read_fixture(dir, &fx);
        bn_err err = { 0 };
        bn_hf_model *hf;
        ck_assert_msg(bn_hf_open(dir, &hf, &err) == 0, "%s: %s", e->d_name, err.msg);
        ck_assert_int_eq(hf->cfg.vocab_size, fx.V);
        double worst = worst_row(hf, &hf->cfg, &fx);
        fprintf(stderr, "parity %-28s rope %-8s worst row %.2e\n", e->d_name, bn_hf_rope_type_name(hf->cfg.rope_type), worst);
        ck_assert_msg(worst <= 1e-4, "%s: max |logit diff| = %.3g x max |logit|", e->d_name, worst);
        if (hf->cfg.rope_type != BN_ROPE_DEFAULT) {
            bn_model_config plain = hf->cfg;
            plain.rope_type = BN_ROPE_DEFAULT;
            double off = worst_row(hf, &plain, &fx);
            ck_assert_msg(off > 1e-2, "%s: plain rope is as close (%.3g): the fixture cannot see the scaling",
                          e->d_name, off);
        }
        bn_hf_close(hf);
        free(fx.logits);
        n++;
    }
    closedir(d);
    ck_assert_int_ge(n, 6);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("transformers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_fixture_matches_transformers);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
