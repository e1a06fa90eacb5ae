/* log_sink.c - see log_sink.h. */
#include "base/log_sink.h"

#include <stdarg.h>
#include <stdio.h>

void bn_log_send(bn_log_fn fn, void *ctx, int level, const char *fmt, ...)
{
    if (!fn) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(ctx, level, msg);
}
