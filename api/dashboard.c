/* dashboard.c - the page served at "/". A placeholder: the dashboard issue replaces
 * this file with the real single-page dashboard (same function, same contract: a
 * NUL-terminated HTML document with static storage duration). */
#include "bn_api.h"

const char *bn_api_dashboard_page(void)
{
    return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<title>bitnetd</title></head>\n<body><h1>bitnetd</h1>\n"
           "<p>The dashboard is not built yet. The API is at <a href=\"/v1/jobs\">/v1/jobs</a>"
           " (<a href=\"/v1/openapi.json\">OpenAPI</a>), metrics at "
           "<a href=\"/metrics\">/metrics</a>.</p>\n</body></html>\n";
}
