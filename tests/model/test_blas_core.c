/* test_blas_core.c - OpenBLAS core selection (bn_blas_init) and correctness per core.
 *
 * main() calls bn_blas_init first, like bitnetctl and bitnetd, so the process may
 * re-execute itself. meson runs this program in several environments:
 *   BN_EXPECT=wanted  OPENBLAS_CORETYPE empty and BN_BLAS_SIMULATE_CORE=Prescott: the
 *                     re-exec must land on the core chosen for this CPU;
 *   BN_EXPECT=<name>  a user-set OPENBLAS_CORETYPE=<name> is kept as is.
 * In every case the stories260K golden logits must hold with the core in use.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/blas.h"
#include "bn_test.h"
#include "formats/hf.h"
#include "model/llama.h"

START_TEST(core_as_expected)
{
    const char *expect = getenv("BN_EXPECT");
    const char *have = bn_blas_core_name();
    if (expect && !strcmp(expect, "wanted")) {
        const char *want = bn_blas_wanted_core();
        if (want) ck_assert_msg(!strcasecmp(have, want), "core %s, wanted %s", have, want);
    } else if (expect && *expect) {
        ck_assert_msg(!strcasecmp(have, expect), "core %s, expected %s", have, expect);
    }
    ck_assert_int_eq(bn_blas_core_rank("Prescott"), 0);
    ck_assert_int_eq(bn_blas_core_rank("Cooperlake"), 3);
    ck_assert_int_eq(bn_blas_core_rank("haswell"), 2);
}
END_TEST

START_TEST(golden_with_this_core)
{
    bn_test_require_data("stories260K-hf/model.safetensors");
    static const int32_t tok[16] = { 1,   403, 407, 261, 378, 432, 383, 286,
                                     261, 376, 298, 315, 421, 395, 317, 426 };
    bn_err err = { 0 };
    bn_hf_model *hf;
    ck_assert_msg(bn_hf_open(bn_test_data("stories260K-hf"), &hf, &err) == 0, "%s", err.msg);
    bn_llama *m;
    ck_assert_msg(bn_llama_load(hf, &m, &err) == 0, "%s", err.msg);
    bn_hf_close(hf);
    bn_llama_set_threads(m, 2);
    ck_assert_int_eq(bn_llama_forward(m, tok, 1, 16, &err), 0);
    FILE *f = fopen(bn_test_data("stories260K/golden_greedy16_logits.f32"), "rb");
    ck_assert_ptr_nonnull(f);
    static float g[16 * 512];
    ck_assert_int_eq(fread(g, sizeof(float), 16 * 512, f), 16 * 512);
    fclose(f);
    double md = 0;
    for (int i = 0; i < 16 * 512; i++) md = fmax(md, fabs(g[i] - m->acts.logits[i]));
    ck_assert_msg(md < 1e-4, "core %s: max |logit - golden| = %g", bn_blas_core_name(), md);
    bn_llama_free(m);
}
END_TEST

int main(int argc, char **argv)
{
    bn_blas_init(argc, argv, 1);
    Suite *s = suite_create("blas_core");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0); /* meson enforces the timeout */
    tcase_add_test(tc, core_as_expected);
    tcase_add_test(tc, golden_with_this_core);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
