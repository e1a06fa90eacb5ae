/* dashboard.c - the dashboard page served at "/".
 *
 * The page is a single self-contained HTML document (inline CSS and JavaScript, system
 * fonts, no CDN) written as ordinary files under api/dashboard/: index.html, style.css
 * and app.js. At build time api/dashboard/embed.py inlines the two into the HTML and
 * emits dashboard_data.c, a NUL-terminated byte array with its length. This
 * file only exposes that array; it owns nothing and allocates nothing.
 *
 * The page talks to the same REST API as bitnetctl (GET /v1/jobs, /v1/jobs/{id},
 * /v1/jobs/{id}/events as Server-Sent Events, /metrics, /artifacts, POST .../cancel),
 * so it needs no route of its own beyond "/".
 */
#include "bn_api.h"

#include <stddef.h>

/* Defined in the generated dashboard_data.c. */
extern const unsigned char bn_api_dashboard_bytes[];
extern const size_t bn_api_dashboard_len;

const char *bn_api_dashboard_page(void)
{
    return (const char *)bn_api_dashboard_bytes;
}
