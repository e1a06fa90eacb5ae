/* log_sink.h - a log destination handed to a module by its owner: a callback and its
 * context. The daemon passes its logger to the API, the workers and the tracker this
 * way, so none of them owns a logger (and tests can capture what they say). */
#ifndef BN_LOG_SINK_H
#define BN_LOG_SINK_H

#include <stdarg.h>

/* Receives one formatted line; level is the daemon's (BN_LOG_ERR ... BN_LOG_DEBUG). */
typedef void (*bn_log_fn)(void *ctx, int level, const char *msg);

/* Formats a line (at most 2 KiB, longer is cut) and hands it to fn; does nothing when fn
 * is NULL. */
void bn_log_send(bn_log_fn fn, void *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* bn_log_send with the arguments as a va_list (for loggers with a printf-like front). */
void bn_log_vsend(bn_log_fn fn, void *ctx, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif
