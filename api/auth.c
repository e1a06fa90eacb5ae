/* auth.c - bearer tokens.
 *
 * The tokens file holds one token per line: "name scope sha256hex" (scope read, submit
 * or admin; '#' starts a comment). Only digests are stored, so the file never holds a
 * usable secret. A presented token is hashed and compared with every entry in constant
 * time (CRYPTO_memcmp, no early exit), so timing reveals neither which entry nor how
 * many bytes matched. Tokens are never logged; only their names are.
 */
#include "bn_api.h"

#include "base/checksum.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct token_entry {
    char name[64];
    bn_api_scope scope;
    unsigned char digest[32];
} token_entry;

struct bn_api_tokens {
    int n;
    token_entry *e;
};

static const char *const scope_names[] = {"none", "read", "submit", "admin"};

const char *bn_api_scope_name(bn_api_scope s)
{
    return (s >= BN_SCOPE_NONE && s <= BN_SCOPE_ADMIN) ? scope_names[s] : "none";
}

int bn_api_scope_parse(const char *s)
{
    for (int i = BN_SCOPE_READ; s && i <= BN_SCOPE_ADMIN; i++)
        if (strcmp(s, scope_names[i]) == 0) return i;
    return -1;
}

static int hex_nibble(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

static int parse_line(char *line, token_entry *e, char *why, size_t whylen)
{
    char name[128], scope[32], hex[128], extra[8];
    int k = sscanf(line, "%127s %31s %127s %7s", name, scope, hex, extra);
    if (k != 3) {
        snprintf(why, whylen, "expected \"name scope sha256hex\"");
        return -1;
    }
    if (strlen(name) >= sizeof e->name) {
        snprintf(why, whylen, "name longer than %zu characters", sizeof e->name - 1);
        return -1;
    }
    int sc = bn_api_scope_parse(scope);
    if (sc < 0) {
        snprintf(why, whylen, "unknown scope \"%s\" (read, submit or admin)", scope);
        return -1;
    }
    if (strlen(hex) != 64) {
        snprintf(why, whylen, "digest must be 64 hex digits (SHA-256 of the token)");
        return -1;
    }
    for (int i = 0; i < 32; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(why, whylen, "digest is not hexadecimal");
            return -1;
        }
        e->digest[i] = (unsigned char)(hi << 4 | lo);
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    e->scope = (bn_api_scope)sc;
    return 0;
}

int bn_api_tokens_load(const char *path, bn_api_tokens **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "tokens file %s: %s", path, strerror(errno));
        return -1;
    }
    bn_api_tokens *t = calloc(1, sizeof *t);
    char line[1024];
    int lineno = 0, cap = 0, rc = 0;
    while (t && fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (!*p || *p == '#') continue;
        if (t->n == cap) {
            cap = cap ? 2 * cap : 8;
            token_entry *g = realloc(t->e, (size_t)cap * sizeof *g);
            if (!g) {
                rc = -1;
                snprintf(err, errlen, "tokens file %s: out of memory", path);
                break;
            }
            t->e = g;
        }
        char why[160];
        if (parse_line(p, &t->e[t->n], why, sizeof why)) {
            snprintf(err, errlen, "tokens file %s:%d: %s", path, lineno, why);
            rc = -1;
            break;
        }
        t->n++;
    }
    fclose(f);
    if (!t || rc) {
        bn_api_tokens_free(t);
        if (!t) snprintf(err, errlen, "tokens file %s: out of memory", path);
        return -1;
    }
    *out = t;
    return 0;
}

void bn_api_tokens_free(bn_api_tokens *t)
{
    if (!t) return;
    OPENSSL_cleanse(t->e, (size_t)t->n * sizeof *t->e);
    free(t->e);
    free(t);
}

int bn_api_tokens_count(const bn_api_tokens *t)
{
    return t ? t->n : 0;
}

bn_api_scope bn_api_tokens_check(const bn_api_tokens *t, const char *token, char *name,
                                 size_t namelen)
{
    if (!t || !token || !*token) return BN_SCOPE_NONE;
    unsigned char d[32];
    if (bn_sha256_digest(token, strlen(token), d)) return BN_SCOPE_NONE;
    int found = -1;
    for (int i = 0; i < t->n; i++) {
        /* no early exit: every entry is compared */
        int eq = CRYPTO_memcmp(d, t->e[i].digest, sizeof d) == 0;
        found = eq ? i : found;
    }
    OPENSSL_cleanse(d, sizeof d);
    if (found < 0) return BN_SCOPE_NONE;
    if (name) snprintf(name, namelen, "%s", t->e[found].name);
    return t->e[found].scope;
}
