/* log_sink.c - see log_sink.h. */
#include "base/log_sink.h"

#include <stdarg.h>
#include <stdio.h>

void bn_log_vsend(bn_log_fn fn, void *ctx, int level, const char *fmt, va_list ap)
{
    if (!fn) return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fn(ctx, level, msg);
}

void bn_log_send(bn_log_fn fn, void *ctx, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bn_log_vsend(fn, ctx, level, fmt, ap);
    va_end(ap);
}
