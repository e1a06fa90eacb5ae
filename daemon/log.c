/* log.c - bitnetd's log lines on stderr.
 *
 * Three formats: "journal" (a syslog priority prefix "<6>" per line, which journald
 * turns into the priority; chosen automatically when JOURNAL_STREAM says stderr is the
 * journal), "text" (UTC timestamp, level, message) and "json" (one object per line).
 * The level can change at run time (SIGHUP). Callers never pass secrets: the API logs
 * token names, never tokens.
 */
#include "daemon.h"

#include "base/log_sink.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *level_name(int level)
{
    switch (level) {
    case BN_LOG_ERR: return "error";
    case BN_LOG_WARNING: return "warn";
    case BN_LOG_INFO: return "info";
    default: return "debug";
    }
}

int bn_log_level_parse(const char *s)
{
    if (!strcmp(s, "error") || !strcmp(s, "err")) return BN_LOG_ERR;
    if (!strcmp(s, "warn") || !strcmp(s, "warning")) return BN_LOG_WARNING;
    if (!strcmp(s, "info")) return BN_LOG_INFO;
    if (!strcmp(s, "debug")) return BN_LOG_DEBUG;
    return -1;
}

int bn_logger_init(bn_logger *l, const char *format, const char *level, char *err,
                   size_t errlen)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->lock, NULL);
    l->out = stderr;
    int lv = bn_log_level_parse(level);
    if (lv < 0) {
        snprintf(err, errlen, "log_level: \"%s\" is not error, warn, info or debug", level);
        return -1;
    }
    l->level = lv;
    if (!strcmp(format, "auto")) l->format = getenv("JOURNAL_STREAM") ? BN_LOGFMT_JOURNAL
                                                                      : BN_LOGFMT_TEXT;
    else if (!strcmp(format, "text")) l->format = BN_LOGFMT_TEXT;
    else if (!strcmp(format, "json")) l->format = BN_LOGFMT_JSON;
    else if (!strcmp(format, "journal")) l->format = BN_LOGFMT_JOURNAL;
    else {
        snprintf(err, errlen, "log_format: \"%s\" is not auto, text, json or journal", format);
        return -1;
    }
    /* text under systemd still gets priority prefixes */
    if (l->format == BN_LOGFMT_TEXT && getenv("JOURNAL_STREAM")) l->format = BN_LOGFMT_JOURNAL;
    return 0;
}

static void json_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
}

static void emit(bn_logger *l, int level, const char *msg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[40];
    strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&l->lock);
    if (level > l->level) {
        pthread_mutex_unlock(&l->lock);
        return;
    }
    switch (l->format) {
    case BN_LOGFMT_JOURNAL:
        fprintf(l->out, "<%d>%s\n", level, msg);
        break;
    case BN_LOGFMT_JSON:
        fprintf(l->out, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"", t,
                ts.tv_nsec / 1000000, level_name(level));
        json_escape(l->out, msg);
        fputs("\"}\n", l->out);
        break;
    default:
        fprintf(l->out, "%s.%03ldZ %-5s %s\n", t, ts.tv_nsec / 1000000, level_name(level), msg);
    }
    fflush(l->out);
    pthread_mutex_unlock(&l->lock);
}

void bn_log_cb(void *ctx, int level, const char *msg)
{
    emit(ctx, level, msg);
}

void bn_log(bn_logger *l, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bn_log_vsend(bn_log_cb, l, level, fmt, ap);
    va_end(ap);
}

void bn_logger_destroy(bn_logger *l)
{
    pthread_mutex_destroy(&l->lock);
}
