/* source.c - hf://ORG/NAME[@REVISION] sources: syntax and the allow-list (see hub.h).
 * Pure functions, no I/O: the API validates submissions with them without linking the
 * downloader. */
#include "hub/hub.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

bool bn_hub_is_source(const char *s) { return s && strncmp(s, BN_HUB_SCHEME, 5) == 0; }

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 96 || s[0] == '.' || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-') return false;
        if (c == '.' && i + 1 < n && s[i + 1] == '.') return false;
    }
    return true;
}

int bn_hub_parse(const char *src, bn_hub_ref *ref, bn_err *err)
{
    memset(ref, 0, sizeof *ref);
    if (!bn_hub_is_source(src)) return bn_err_set(err, BN_EINVAL, "not a hub source (hf://ORG/NAME[@REVISION])");
    const char *p = src + 5, *slash = strchr(p, '/'), *at = strchr(p, '@');
    const char *end = at ? at : p + strlen(p);
    if (!slash || slash > end || !name_ok(p, (size_t)(slash - p)) ||
        !name_ok(slash + 1, (size_t)(end - slash - 1)))
        return bn_err_set(err, BN_EINVAL, "%.200s: expected hf://ORG/NAME[@REVISION] with ORG and NAME "
                          "of letters, digits, '.', '_', '-'", src);
    snprintf(ref->repo, sizeof ref->repo, "%.*s", (int)(end - p), p);
    const char *rev = at ? at + 1 : "main";
    size_t rn = strlen(rev);
    bool ok = rn > 0 && rn < sizeof ref->revision && rev[0] != '/' && rev[rn - 1] != '/' &&
              !strstr(rev, "..") && !strstr(rev, "//");
    for (size_t i = 0; ok && i < rn; i++) {
        unsigned char c = (unsigned char)rev[i];
        ok = isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/';
    }
    if (!ok)
        return bn_err_set(err, BN_EINVAL, "%.200s: the revision must be a branch, tag or commit of "
                          "letters, digits, '.', '_', '-', '/' (no \"..\")", src);
    memcpy(ref->revision, rev, rn + 1);
    return 0;
}

bool bn_hub_allowed(const char *repo, const char *const *allow, int n_allow)
{
    if (!allow) return true;
    const char *slash = strchr(repo, '/');
    for (int i = 0; i < n_allow; i++) {
        const char *a = allow[i];
        size_t n = strlen(a);
        if (strcmp(a, repo) == 0 || strcmp(a, "*") == 0) return true;
        if (slash && n >= 2 && strcmp(a + n - 2, "/*") == 0 && (size_t)(slash - repo) == n - 2 &&
            strncmp(a, repo, n - 2) == 0)
            return true;
    }
    return false;
}
