/* str.h - string helpers shared by the engine and the service: a NULL-safe strdup and a
 * growing string buffer. Header-only. */
#ifndef BN_STR_H
#define BN_STR_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* strdup that passes NULL through (NULL in, NULL out). The caller frees the copy. */
static inline char *bn_str_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* A growing NUL-terminated string. Zero-initialised it is empty; the owner frees p. Once
 * an allocation fails, oom stays set and nothing more is appended. */
typedef struct bn_strbuf {
    char *p;
    size_t len, cap;
    bool oom;
} bn_strbuf;

/* Appends s[0..n). */
static inline void bn_strbuf_put(bn_strbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Appends the string s. */
static inline void bn_strbuf_str(bn_strbuf *b, const char *s)
{
    bn_strbuf_put(b, s, strlen(s));
}

#endif
