/* err.c - formatting of bn_err values (see err.h). */
#include "base/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int bn_err_set(bn_err *e, int code, const char *fmt, ...)
{
    if (!e) return code;
    e->code = code;
    e->field[0] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* "config.a[2].b" -> "/config/a/2/b" */
static void json_pointer(const char *dotted, char *out, size_t cap)
{
    size_t k = 0;
    if (cap < 2) return;
    out[k++] = '/';
    for (const char *p = dotted; *p && k < cap - 1; p++) {
        if (*p == ']') continue;
        out[k++] = (*p == '.' || *p == '[') ? '/' : *p;
    }
    out[k] = 0;
}

int bn_err_set_at(bn_err *e, int code, const char *at, const char *fmt, ...)
{
    if (!e) return code;
    e->code = code;
    int n = snprintf(e->msg, sizeof e->msg, "%s: ", at);
    if (n < 0 || (size_t)n >= sizeof e->msg) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg + n, sizeof e->msg - (size_t)n, fmt, ap);
    va_end(ap);
    json_pointer(at, e->field, sizeof e->field);
    return code;
}

int bn_err_prefix(bn_err *e, const char *fmt, ...)
{
    if (!e) return BN_EINVAL;
    char head[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    old[sizeof old - 1] = 0;
    size_t h = strnlen(head, sizeof head), o = strlen(old);
    if (h > sizeof e->msg - 1) h = sizeof e->msg - 1;
    if (o > sizeof e->msg - 1 - h) o = sizeof e->msg - 1 - h;
    memcpy(e->msg, head, h);
    memcpy(e->msg + h, old, o);
    e->msg[h + o] = 0;
    return e->code;
}

int bn_err_from_errno(int errnum)
{
    switch (errnum) {
    case ENOSPC: case EDQUOT: return BN_ENOSPC;
    case ENOMEM: return BN_ENOMEM;
    default: return BN_EIO;
    }
}

const char *bn_err_code_name(int code)
{
    static const char *names[] = { "ok", "invalid", "io", "format", "nomem",
                                   "unsupported", "numeric", "cancelled", "nospace" };
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0])) return "unknown";
    return names[code];
}
