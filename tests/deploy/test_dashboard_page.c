/* test_dashboard_page.c - the embedded dashboard page is complete and self-contained.
 *
 * Links the generated dashboard_data.c alone (no server): the page must be one HTML
 * document with the stylesheet and script inlined (no build marker left), reference no
 * other origin (no CDN, no web fonts: the dashboard must work on an offline host), use
 * only the API routes the daemon serves, and carry the elements the browser test and
 * users rely on. The byte length and the NUL terminator are checked too.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"

extern const unsigned char bn_api_dashboard_bytes[];
extern const size_t bn_api_dashboard_len;

static const char *page(void) { return (const char *)bn_api_dashboard_bytes; }

START_TEST(test_complete_document)
{
    ck_assert_uint_eq(strlen(page()), bn_api_dashboard_len);
    ck_assert_msg(strncmp(page(), "<!doctype html>", 15) == 0, "page does not start with a doctype");
    ck_assert_ptr_nonnull(strstr(page(), "</html>"));
    ck_assert_ptr_null(strstr(page(), "/*@STYLE@*/"));
    ck_assert_ptr_null(strstr(page(), "/*@SCRIPT@*/"));
    /* exactly one inline script and one inline style */
    const char *s = strstr(page(), "<script>");
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_null(strstr(s + 1, "<script"));
    ck_assert_ptr_nonnull(strstr(page(), "<style>"));
    ck_assert_uint_ge(bn_api_dashboard_len, 10000); /* css + js really inlined */
}
END_TEST

START_TEST(test_no_external_resources)
{
    static const char *const banned[] = {"https://", "//cdn", "@import", "@font-face",
                                         "<script src", "<link rel=\"stylesheet\""};
    for (size_t i = 0; i < sizeof banned / sizeof banned[0]; i++)
        ck_assert_msg(strstr(page(), banned[i]) == NULL, "page contains '%s'", banned[i]);
    /* The one URL with a scheme allowed is the SVG namespace name, which is never fetched. */
    static const char svg_ns[] = "http://www.w3.org/2000/svg";
    for (const char *p = strstr(page(), "http://"); p; p = strstr(p + 1, "http://"))
        ck_assert_msg(strncmp(p, svg_ns, sizeof svg_ns - 1) == 0, "page references %.40s", p);
}
END_TEST

START_TEST(test_uses_the_api)
{
    static const char *const needed[] = {
        "/v1/jobs", "/events", "/metrics", "/artifacts", "/cancel", "text/event-stream",
        "Authorization", "sessionStorage", "fine_tune/loss", "loss-chart", "jobs-body",
        "compression/original_size_mb", "compression/fine_tune_time_hours",
        "compression/gradient_flow_test_passed",
    };
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
        ck_assert_msg(strstr(page(), needed[i]) != NULL, "page lacks '%s'", needed[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dashboard_page");
    TCase *tc = tcase_create("page");
    tcase_add_test(tc, test_complete_document);
    tcase_add_test(tc, test_no_external_resources);
    tcase_add_test(tc, test_uses_the_api);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
