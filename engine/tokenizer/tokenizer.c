/* tokenizer.c - Hugging Face tokenizer.json BPE: loading, encoding, decoding.
 *
 * Design. Loading turns tokenizer.json into flat tables: an id-indexed token table
 * (string, type, score), a string->id hash map for the model vocabulary, a pair->merge
 * hash map ((left id, right id) -> rank, result id), a byte trie of the added tokens and
 * small arrays describing the normalizer, pre-tokenizer and decoder steps. Nothing is
 * mutated afterwards, so one bn_tok serves any number of threads.
 *
 * Encoding follows the Hugging Face pipeline (and transformers.js, which the tests
 * compare against): split the raw text at added tokens (leftmost-longest, lstrip/rstrip
 * trim the neighbouring text), normalize each remaining section, split it again at
 * "normalized" added tokens, pre-tokenize (Split regex, ByteLevel, Metaspace) and run
 * BPE on each pre-token. BPE keeps the symbols of a word in a linked list and candidate
 * merges in a binary heap ordered by (rank, position); stale heap entries are skipped
 * when popped. Byte-level vocabularies are converted back from the ByteLevel alphabet
 * to raw bytes at load time, so encoding works on the text's own bytes.
 *
 * Memory: strings live in an arena owned by the bn_tok; encode allocates only scratch
 * buffers that it frees before returning.
 */
#include "tokenizer/tokenizer.h"
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <oniguruma.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ arena */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    char data[];
} arena_block;

static char *arena_alloc(arena_block **a, size_t n)
{
    if (!*a || (*a)->cap - (*a)->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        arena_block *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = *a;
        b->used = 0;
        b->cap = cap;
        *a = b;
    }
    char *p = (*a)->data + (*a)->used;
    (*a)->used += n;
    return p;
}

static char *arena_strndup(arena_block **a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n); /* s may be NULL when n == 0 (an empty JSON string) */
    p[n] = 0;
    return p;
}

static void arena_free(arena_block *a)
{
    while (a) {
        arena_block *n = a->next;
        free(a);
        a = n;
    }
}

/* ------------------------------------------------------------------ hash maps */

typedef struct sm_slot { const char *key; uint32_t len; int32_t val; } sm_slot;
typedef struct strmap { sm_slot *slots; size_t cap, n; } strmap;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h ^ (h >> 29);
}

static int sm_init(strmap *m, size_t expect)
{
    size_t cap = 16;
    while (cap < expect * 2) cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    m->cap = cap;
    m->n = 0;
    return m->slots ? 0 : -1;
}

static int32_t sm_get(const strmap *m, const char *k, size_t n)
{
    if (!m->cap) return -1;
    size_t mask = m->cap - 1, i = (size_t)hash_bytes(k, n) & mask;
    for (;; i = (i + 1) & mask) {
        const sm_slot *s = &m->slots[i];
        if (!s->key) return -1;
        if (s->len == n && memcmp(s->key, k, n) == 0) return s->val;
    }
}

/* Inserts or overwrites; key must outlive the map. */
static int sm_put(strmap *m, const char *k, size_t n, int32_t v)
{
    if ((m->n + 1) * 2 > m->cap) {
        strmap big;
        if (sm_init(&big, m->cap) != 0) return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key) sm_put(&big, m->slots[i].key, m->slots[i].len, m->slots[i].val);
        free(m->slots);
        *m = big;
    }
    size_t mask = m->cap - 1, i = (size_t)hash_bytes(k, n) & mask;
    for (;; i = (i + 1) & mask) {
        sm_slot *s = &m->slots[i];
        if (!s->key) { *s = (sm_slot){ k, (uint32_t)n, v }; m->n++; return 0; }
        if (s->len == n && memcmp(s->key, k, n) == 0) { s->val = v; return 0; }
    }
}

typedef struct pm_slot { uint64_t key; int32_t rank, result; } pm_slot;
typedef struct pairmap { pm_slot *slots; size_t cap; } pairmap;

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static size_t pair_hash(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdull; k ^= k >> 33; return (size_t)k; }

static int pm_init(pairmap *m, size_t expect)
{
    size_t cap = 16;
    while (cap < expect * 2) cap <<= 1;
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return -1;
    for (size_t i = 0; i < cap; i++) m->slots[i].rank = -1;
    m->cap = cap;
    return 0;
}

static void pm_put(pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t result)
{
    uint64_t k = pair_key(a, b);
    size_t mask = m->cap - 1, i = pair_hash(k) & mask;
    for (;; i = (i + 1) & mask) {
        pm_slot *s = &m->slots[i];
        if (s->rank < 0 || s->key == k) { *s = (pm_slot){ k, rank, result }; return; }
    }
}

static const pm_slot *pm_get(const pairmap *m, int32_t a, int32_t b)
{
    uint64_t k = pair_key(a, b);
    size_t mask = m->cap - 1, i = pair_hash(k) & mask;
    for (;; i = (i + 1) & mask) {
        const pm_slot *s = &m->slots[i];
        if (s->rank < 0) return NULL;
        if (s->key == k) return s;
    }
}

/* ------------------------------------------------------------------ types */

typedef struct added_tok {
    int32_t id;
    const char *content;  /* as matched: raw content, or normalized content */
    size_t len;
    int special, lstrip, rstrip, normalized;
} added_tok;

/* A byte trie over added-token contents; node 0 is the root. */
typedef struct trie_node { int32_t child, sibling, added; uint8_t byte; } trie_node;
typedef struct trie { trie_node *nodes; size_t n, cap; uint8_t first[32]; } trie;

enum { NORM_PREPEND, NORM_REPLACE, NORM_UNICODE, NORM_STRIP };
typedef struct norm_step {
    int type;
    const char *a, *b;      /* prepend text / replace pattern, content / unicode form */
    size_t alen, blen;
    OnigRegex re;           /* Replace with a Regex pattern */
    int left, right;        /* Strip */
} norm_step;

enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE, PRE_DIGITS };
enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct pre_step {
    int type;
    OnigRegex re;           /* Split (Regex) or ByteLevel with use_regex */
    const char *lit;        /* Split (String) */
    size_t litlen;
    int behavior, invert;
    int add_prefix_space;   /* ByteLevel */
    const char *repl;       /* Metaspace replacement */
    size_t repllen;
    int prepend, split;     /* Metaspace */
    int individual;         /* Digits */
} pre_step;

enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE, DEC_BYTELEVEL };
typedef struct dec_step {
    int type;
    const char *a, *b;      /* Replace pattern/content, Metaspace replacement, Strip content */
    size_t alen, blen;
    int start, stop;
} dec_step;

struct bn_tok {
    bn_tok_kind kind;
    arena_block *arena;
    /* id-indexed tables */
    size_t n_ids;
    const char **tok_str;   /* tokenizer.json spelling */
    uint8_t *tok_type;
    uint8_t *is_added, *is_special;
    float *score;
    /* model vocab (no added tokens), keyed in the model's input alphabet (raw bytes
     * for byte-level), and every token (vocab + added) keyed by its spelling */
    strmap model_map, all_map;
    int32_t byte_sym[256];  /* byte-level: id of byte b's alphabet char; llama: <0xXX> */
    /* merges */
    size_t n_merges;
    const char **merge_str;
    pairmap merges;
    /* added tokens */
    added_tok *added;
    size_t n_added;
    trie trie_raw, trie_norm;
    /* pipeline */
    norm_step *norm; size_t n_norm;
    pre_step *pre; size_t n_pre;
    dec_step *dec; size_t n_dec;
    int has_decoder;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id, bos_id, eos_id, pad_id;
    int add_bos, add_eos;
    const char *pre_name;
};

/* ------------------------------------------------------------------ ByteLevel alphabet */

static void bytelevel_tables(uint32_t b2u[256], int16_t u2b[512])
{
    int n = 0;
    for (int i = 0; i < 512; i++) u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        b2u[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
        u2b[b2u[b]] = (int16_t)b;
    }
}

/* Converts a ByteLevel-alphabet string to raw bytes in out (>= len bytes); returns the
 * raw length or -1 if a character is outside the alphabet. */
static long bytelevel_to_raw(const int16_t u2b[512], const char *s, size_t len, char *out)
{
    size_t i = 0, k = 0;
    while (i < len) {
        uint32_t cp;
        if (bn_tok_utf8_next(s, len, &i, &cp) != 0 || cp >= 512 || u2b[cp] < 0) return -1;
        out[k++] = (char)u2b[cp];
    }
    return (long)k;
}

/* ------------------------------------------------------------------ trie */

static int trie_add(trie *t, const char *s, size_t len, int32_t added)
{
    if (t->n == 0) {
        t->cap = 64;
        t->nodes = malloc(t->cap * sizeof *t->nodes);
        if (!t->nodes) return -1;
        t->nodes[0] = (trie_node){ -1, -1, -1, 0 };
        t->n = 1;
    }
    int32_t cur = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (i == 0) t->first[c >> 3] |= (uint8_t)(1u << (c & 7));
        int32_t ch = t->nodes[cur].child;
        while (ch >= 0 && t->nodes[ch].byte != c) ch = t->nodes[ch].sibling;
        if (ch < 0) {
            if (t->n == t->cap) {
                trie_node *nn = realloc(t->nodes, t->cap * 2 * sizeof *nn);
                if (!nn) return -1;
                t->nodes = nn;
                t->cap *= 2;
            }
            ch = (int32_t)t->n++;
            t->nodes[ch] = (trie_node){ -1, t->nodes[cur].child, -1, c };
            t->nodes[cur].child = ch;
        }
        cur = ch;
    }
    if (t->nodes[cur].added < 0) t->nodes[cur].added = added;
    return 0;
}

/* Longest added token starting at s[i] (skipping special ones when skip_special);
 * returns its index in tok->added or -1. */
static int32_t trie_match(const bn_tok *tok, const trie *t, const char *s, size_t len,
                          size_t i, int skip_special, size_t *mlen)
{
    if (t->n == 0) return -1;
    uint8_t c0 = (uint8_t)s[i];
    if (!(t->first[c0 >> 3] & (1u << (c0 & 7)))) return -1;
    int32_t cur = 0, best = -1;
    for (size_t j = i; j < len; j++) {
        int32_t ch = t->nodes[cur].child;
        while (ch >= 0 && t->nodes[ch].byte != (uint8_t)s[j]) ch = t->nodes[ch].sibling;
        if (ch < 0) break;
        cur = ch;
        int32_t a = t->nodes[cur].added;
        if (a >= 0 && !(skip_special && tok->added[a].special)) { best = a; *mlen = j - i + 1; }
    }
    return best;
}

/* ------------------------------------------------------------------ growable buffers */

typedef struct buf { char *p; size_t n, cap; } buf;

static int buf_reserve(buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) return -1;
    b->p = np;
    b->cap = cap;
    return 0;
}

static int buf_add(buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int ids_push(bn_tok_ids *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *np = realloc(v->ids, cap * sizeof *np);
        if (!np) return -1;
        v->ids = np;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

void bn_tok_ids_free(bn_tok_ids *v)
{
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

static int normalize_text(const bn_tok *t, const char *s, size_t n, char **out,
                          size_t *out_len, bn_err *err);

/* ------------------------------------------------------------------ loading: helpers */

typedef struct loader {
    bn_tok *tok;
    const char *name;
    bn_err *err;
    int32_t post_bos, post_eos; /* what the post-processor's template adds (-1: nothing) */
} loader;

static int lerr(loader *L, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lerr(loader *L, int code, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bn_err_set(L->err, code, "%s: %s", L->name, msg);
}

static char *ldup(loader *L, const char *s, size_t n)
{
    char *p = arena_strndup(&L->tok->arena, s, n);
    if (!p) lerr(L, BN_ENOMEM, "out of memory");
    return p;
}

/* Optional boolean member: returns dflt when absent or null; -1 on a wrong type. */
static int get_bool(loader *L, const cJSON *o, const char *key, const char *where, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    if (!cJSON_IsBool(v)) { lerr(L, BN_EFORMAT, "%s.%s: expected true or false", where, key); return -1; }
    return cJSON_IsTrue(v);
}

/* Optional string member: NULL when absent or null; sets *bad on a wrong type. */
static const char *get_str(loader *L, const cJSON *o, const char *key, const char *where, int *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return NULL;
    if (!cJSON_IsString(v)) { lerr(L, BN_EFORMAT, "%s.%s: expected a string", where, key); *bad = 1; return NULL; }
    return v->valuestring;
}

/* ------------------------------------------------------------------ loading: model */

static int set_token(loader *L, int32_t id, const char *s, size_t n)
{
    bn_tok *t = L->tok;
    if (t->tok_str[id]) return 0; /* first spelling wins */
    const char *p = ldup(L, s, n);
    if (!p) return BN_ENOMEM;
    t->tok_str[id] = p;
    return 0;
}

static int load_vocab(loader *L, const cJSON *model, const cJSON *added)
{
    bn_tok *t = L->tok;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return lerr(L, BN_EFORMAT, "model.vocab: expected an object of token -> id");
    /* size = 1 + max id over vocab and added tokens */
    long max_id = -1;
    size_t nv = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, nv++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 16777216.0 ||
            e->valuedouble != (double)(long)e->valuedouble)
            return lerr(L, BN_EFORMAT, "model.vocab[\"%s\"]: expected a token id (integer >= 0)", e->string);
        if ((long)e->valuedouble > max_id) max_id = (long)e->valuedouble;
    }
    if (nv == 0) return lerr(L, BN_EFORMAT, "model.vocab: empty");
    size_t na = 0;
    if (added && !cJSON_IsNull(added)) {
        if (!cJSON_IsArray(added)) return lerr(L, BN_EFORMAT, "added_tokens: expected an array");
        size_t k = 0;
        for (const cJSON *e = added->child; e; e = e->next, k++) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (!cJSON_IsObject(e) || !cJSON_IsNumber(id) || id->valuedouble < 0 ||
                id->valuedouble > 16777216.0 || !cJSON_IsString(c) || !c->valuestring[0])
                return lerr(L, BN_EFORMAT, "added_tokens[%zu]: expected {\"id\": integer, \"content\": non-empty string, ...}", k);
            if ((long)id->valuedouble > max_id) max_id = (long)id->valuedouble;
        }
        na = k;
    }
    t->n_ids = (size_t)max_id + 1;
    t->tok_str = calloc(t->n_ids, sizeof *t->tok_str);
    t->tok_type = calloc(t->n_ids, 1);
    t->is_added = calloc(t->n_ids, 1);
    t->is_special = calloc(t->n_ids, 1);
    t->score = calloc(t->n_ids, sizeof *t->score);
    t->added = calloc(na ? na : 1, sizeof *t->added);
    if (!t->tok_str || !t->tok_type || !t->is_added || !t->is_special || !t->score || !t->added ||
        sm_init(&t->model_map, nv) || sm_init(&t->all_map, nv + na))
        return lerr(L, BN_ENOMEM, "out of memory for %zu tokens", t->n_ids);

    uint32_t b2u[256];
    int16_t u2b[512];
    bytelevel_tables(b2u, u2b);
    char *raw = NULL;
    size_t rawcap = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        size_t n = strlen(e->string);
        if (set_token(L, id, e->string, n)) { free(raw); return BN_ENOMEM; }
        const char *key = t->tok_str[id];
        if (t->tok_str[id] != NULL && strcmp(key, e->string) != 0) {
            free(raw);
            return lerr(L, BN_EFORMAT, "model.vocab: id %d is used by both \"%s\" and \"%s\"", id, key, e->string);
        }
        sm_put(&t->all_map, key, n, id);
        if (t->kind == BN_TOK_KIND_GPT2) {
            if (n > rawcap) {
                rawcap = n * 2;
                char *nr = realloc(raw, rawcap);
                if (!nr) { free(raw); return lerr(L, BN_ENOMEM, "out of memory"); }
                raw = nr;
            }
            long rl = bytelevel_to_raw(u2b, key, n, raw);
            if (rl < 0) continue; /* unreachable by BPE: only its spelling is known */
            const char *rk = ldup(L, raw, (size_t)rl);
            if (!rk) { free(raw); return BN_ENOMEM; }
            if (sm_put(&t->model_map, rk, (size_t)rl, id)) { free(raw); return lerr(L, BN_ENOMEM, "out of memory"); }
        } else if (sm_put(&t->model_map, key, n, id)) {
            free(raw);
            return lerr(L, BN_ENOMEM, "out of memory");
        }
    }
    free(raw);

    /* initial BPE symbols of single bytes */
    for (int b = 0; b < 256; b++) {
        char s[8];
        if (t->kind == BN_TOK_KIND_GPT2) {
            size_t k = bn_tok_utf8_put(b2u[b], s);
            t->byte_sym[b] = sm_get(&t->all_map, s, k);
        } else {
            snprintf(s, sizeof s, "<0x%02X>", b);
            t->byte_sym[b] = sm_get(&t->all_map, s, 6);
        }
    }

    /* added tokens */
    size_t k = 0;
    if (na) {
        for (const cJSON *e = added->child; e; e = e->next, k++) {
            added_tok *a = &t->added[k];
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
            char where[32];
            snprintf(where, sizeof where, "added_tokens[%zu]", k);
            a->id = (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
            a->len = strlen(c->valuestring);
            a->content = ldup(L, c->valuestring, a->len);
            if (!a->content) return BN_ENOMEM;
            if ((a->special = get_bool(L, e, "special", where, 0)) < 0 ||
                (a->lstrip = get_bool(L, e, "lstrip", where, 0)) < 0 ||
                (a->rstrip = get_bool(L, e, "rstrip", where, 0)) < 0 ||
                (a->normalized = get_bool(L, e, "normalized", where, !a->special)) < 0 ||
                get_bool(L, e, "single_word", where, 0) < 0)
                return L->err ? L->err->code : BN_EFORMAT;
            if (t->tok_str[a->id] && strcmp(t->tok_str[a->id], a->content) != 0 &&
                t->is_added[a->id])
                return lerr(L, BN_EFORMAT, "%s: id %d is already \"%s\"", where, a->id, t->tok_str[a->id]);
            /* an added token's content names its id, even over a vocab entry */
            t->tok_str[a->id] = a->content;
            t->is_added[a->id] = 1;
            t->is_special[a->id] = (uint8_t)a->special;
            sm_put(&t->all_map, a->content, a->len, a->id);
        }
    }
    t->n_added = k;
    return 0;
}

static int load_merges(loader *L, const cJSON *model)
{
    bn_tok *t = L->tok;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!merges || cJSON_IsNull(merges)) merges = NULL;
    else if (!cJSON_IsArray(merges)) return lerr(L, BN_EFORMAT, "model.merges: expected an array");
    size_t n = merges ? (size_t)cJSON_GetArraySize(merges) : 0;
    t->merge_str = calloc(n ? n : 1, sizeof *t->merge_str);
    if (!t->merge_str || pm_init(&t->merges, n)) return lerr(L, BN_ENOMEM, "out of memory");
    char *cat = NULL;
    size_t catcap = 0;
    size_t r = 0;
    int rc = 0;
    for (const cJSON *e = merges ? merges->child : NULL; e; e = e->next, r++) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ') || sp == s || !sp[1]) {
                rc = lerr(L, BN_EFORMAT, "model.merges[%zu] \"%s\": expected two tokens separated by one space", r, s);
                break;
            }
            a = s; al = (size_t)(sp - s); b = sp + 1; bl = strlen(b);
            t->merge_str[r] = ldup(L, s, strlen(s));
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
            a = e->child->valuestring; al = strlen(a);
            b = e->child->next->valuestring; bl = strlen(b);
            char *ms = arena_alloc(&t->arena, al + bl + 2);
            if (ms) { memcpy(ms, a, al); ms[al] = ' '; memcpy(ms + al + 1, b, bl + 1); }
            else lerr(L, BN_ENOMEM, "out of memory");
            t->merge_str[r] = ms;
        } else {
            rc = lerr(L, BN_EFORMAT, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", r);
            break;
        }
        if (!t->merge_str[r]) { rc = BN_ENOMEM; break; }
        int32_t ia = sm_get(&t->all_map, a, al), ib = sm_get(&t->all_map, b, bl);
        if (al + bl + 1 > catcap) {
            catcap = (al + bl + 1) * 2;
            char *nc = realloc(cat, catcap);
            if (!nc) { rc = lerr(L, BN_ENOMEM, "out of memory"); break; }
            cat = nc;
        }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int32_t ir = sm_get(&t->all_map, cat, al + bl);
        if (ia < 0 || ib < 0 || ir < 0) {
            rc = lerr(L, BN_EFORMAT, "model.merges[%zu] \"%s\": %s is not in the vocab", r,
                      t->merge_str[r], ia < 0 ? "the left token" : ib < 0 ? "the right token"
                                                                       : "the merged token");
            break;
        }
        pm_put(&t->merges, ia, ib, (int32_t)r, ir);
    }
    free(cat);
    t->n_merges = r;
    return rc;
}

/* ------------------------------------------------------------------ regex (Oniguruma) */

/* Pre-tokenizer and normalizer patterns are Oniguruma regexes, and HF tokenizers runs
 * them with Oniguruma (Ruby syntax, UTF-8, no options): so do we, and every pattern a
 * tokenizer.json may carry means here what it means there. A compiled regex_t is only
 * read by onig_search, so one serves every thread. Each search gets a retry limit that
 * grows with the text left to scan (RE_RETRY_BASE + RE_RETRY_PER_BYTE per byte), so
 * a pattern that backtracks exponentially ends with an error instead of a hang; the
 * GPT-2, Llama-3 and Qwen2 patterns retry a few times per byte. */
#define RE_RETRY_BASE 100000UL
#define RE_RETRY_PER_BYTE 1000UL

static pthread_once_t re_once = PTHREAD_ONCE_INIT;
static int re_init_rc;

static void re_init(void)
{
    OnigEncoding enc[1] = { ONIG_ENCODING_UTF8 };
    re_init_rc = onig_initialize(enc, 1);
}

static int re_compile(const char *pattern, OnigRegex *out, bn_err *err)
{
    pthread_once(&re_once, re_init);
    if (re_init_rc != ONIG_NORMAL) return bn_err_set(err, BN_ENOMEM, "Oniguruma: initialization failed");
    OnigErrorInfo einfo;
    const UChar *p = (const UChar *)pattern;
    int r = onig_new(out, p, p + strlen(pattern), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                     ONIG_SYNTAX_RUBY, &einfo);
    if (r == ONIG_NORMAL) return 0;
    *out = NULL;
    UChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(msg, r, &einfo);
    return bn_err_set(err, r == ONIGERR_MEMORY ? BN_ENOMEM : BN_EFORMAT, "bad regex /%.60s%s/: %s",
                      pattern, strlen(pattern) > 60 ? "..." : "", (const char *)msg);
}

/* State of one left-to-right scan of a text for non-empty matches. */
typedef struct re_scan {
    OnigRegion region;
    OnigMatchParam *mp;
} re_scan;

static int re_scan_init(re_scan *sc, bn_err *err)
{
    onig_region_init(&sc->region);
    sc->mp = onig_new_match_param();
    if (!sc->mp) return bn_err_set(err, BN_ENOMEM, "regex: out of memory");
    onig_initialize_match_param(sc->mp);
    return 0;
}

static void re_scan_free(re_scan *sc)
{
    onig_region_free(&sc->region, 0);
    if (sc->mp) onig_free_match_param(sc->mp);
}

/* The next non-empty match [*a, *b) of re in s[0..n) that starts at or after *pos
 * (leftmost-first, as onig's find_iter, which HF uses: an empty match moves on by one
 * character). Returns 1 (and sets *pos = *b), 0 when there is none, or a BN_E* code. */
static int re_next(OnigRegex re, re_scan *sc, const char *s, size_t n, size_t *pos,
                   size_t *a, size_t *b, bn_err *err)
{
    const UChar *str = (const UChar *)s, *end = str + n;
    while (*pos <= n) {
        unsigned long limit = RE_RETRY_BASE + RE_RETRY_PER_BYTE * (unsigned long)(n - *pos);
        onig_set_retry_limit_in_match_of_match_param(sc->mp, limit);
        onig_set_retry_limit_in_search_of_match_param(sc->mp, limit);
        /* Pre-tokenizer patterns match at almost every position, so try *pos itself
         * first (one match attempt, no search set-up); a search finds the next start
         * otherwise. Both give the leftmost-first match at the first matching start. */
        int r = onig_match_with_param(re, str, end, str + *pos, NULL, ONIG_OPTION_NONE, sc->mp);
        if (r > 0) {
            *a = *pos;
            *b = *pos += (size_t)r;
            return 1;
        }
        if (r == 0) { /* an empty match at *pos: move on by one character */
            if (*pos >= n) return 0;
            size_t cl = 1;
            while (*pos + cl < n && ((unsigned char)s[*pos + cl] & 0xC0) == 0x80) cl++;
            *pos += cl;
            continue;
        }
        if (r == ONIG_MISMATCH)
            r = onig_search_with_param(re, str, end, str + *pos, end, &sc->region,
                                       ONIG_OPTION_NONE, sc->mp);
        if (r == ONIG_MISMATCH) return 0;
        if (r == ONIGERR_RETRY_LIMIT_IN_MATCH_OVER || r == ONIGERR_RETRY_LIMIT_IN_SEARCH_OVER)
            return bn_err_set(err, BN_EUNSUPPORTED, "regex: retry limit of %lu backtracking steps "
                              "exceeded at byte %zu of a %zu-byte text (the pattern backtracks "
                              "exponentially)", limit, *pos, n);
        if (r < 0) {
            UChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
            onig_error_code_to_str(msg, r);
            return bn_err_set(err, r == ONIGERR_MEMORY ? BN_ENOMEM : BN_EUNSUPPORTED, "regex: %s",
                              (const char *)msg);
        }
        size_t ms = (size_t)sc->region.beg[0], me = (size_t)sc->region.end[0];
        if (me > ms) {
            *a = ms;
            *b = *pos = me;
            return 1;
        }
        if (ms >= n) return 0;
        size_t cl = 1; /* step over the character at ms */
        while (ms + cl < n && ((unsigned char)s[ms + cl] & 0xC0) == 0x80) cl++;
        *pos = ms + cl;
    }
    return 0;
}

/* ------------------------------------------------------------------ loading: pipeline */

static int parse_pattern(loader *L, const cJSON *pat, const char *where, OnigRegex *re,
                         const char **lit, size_t *litlen)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(pat, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    if (cJSON_IsString(s)) {
        *litlen = strlen(s->valuestring);
        if (*litlen == 0) return lerr(L, BN_EFORMAT, "%s.pattern.String: empty", where);
        *lit = ldup(L, s->valuestring, *litlen);
        return *lit ? 0 : BN_ENOMEM;
    }
    if (cJSON_IsString(r)) {
        int rc = re_compile(r->valuestring, re, L->err);
        if (rc) bn_err_prefix(L->err, "%s: %s.pattern.Regex: ", L->name, where);
        return rc;
    }
    return lerr(L, BN_EFORMAT, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", where);
}

/* The "type" of the component n (normalizer, pre-tokenizer, decoder, post-processor) at
 * where: *ty stays NULL for an absent (null) component. */
static int component_type(loader *L, const cJSON *n, const char *where, const char **ty)
{
    *ty = NULL;
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsObject(n) || !cJSON_IsString(type))
        return lerr(L, BN_EFORMAT, "%s: expected an object with a \"type\"", where);
    *ty = type->valuestring;
    return 0;
}

/* A "Sequence" component: add() on each element of its array n[key], named where.key[k]. */
static int each_in_sequence(loader *L, const cJSON *n, const char *key, const char *where,
                            int (*add)(loader *, const cJSON *, const char *))
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, key);
    if (!cJSON_IsArray(list)) return lerr(L, BN_EFORMAT, "%s.%s: expected an array", where, key);
    size_t k = 0;
    for (const cJSON *e = list->child; e; e = e->next, k++) {
        char w[160];
        snprintf(w, sizeof w, "%s.%s[%zu]", where, key, k);
        int rc = add(L, e, w);
        if (rc) return rc;
    }
    return 0;
}

static int add_norm(loader *L, const cJSON *n, const char *where)
{
    bn_tok *t = L->tok;
    const char *ty;
    int rc0 = component_type(L, n, where, &ty);
    if (rc0 || !ty) return rc0;
    if (strcmp(ty, "Sequence") == 0) return each_in_sequence(L, n, "normalizers", where, add_norm);
    norm_step *ns = realloc(t->norm, (t->n_norm + 1) * sizeof *ns);
    if (!ns) return lerr(L, BN_ENOMEM, "out of memory");
    t->norm = ns;
    norm_step *s = &t->norm[t->n_norm++]; /* owned (and freed) from here, even on error */
    memset(s, 0, sizeof *s);
    int bad = 0;
    if (strcmp(ty, "Prepend") == 0) {
        const char *p = get_str(L, n, "prepend", where, &bad);
        if (!p) return bad ? BN_EFORMAT : lerr(L, BN_EFORMAT, "%s.prepend: missing", where);
        s->type = NORM_PREPEND;
        s->alen = strlen(p);
        if (!(s->a = ldup(L, p, s->alen))) return BN_ENOMEM;
    } else if (strcmp(ty, "Replace") == 0) {
        const char *c = get_str(L, n, "content", where, &bad);
        if (bad) return BN_EFORMAT;
        s->type = NORM_REPLACE;
        int rc = parse_pattern(L, cJSON_GetObjectItemCaseSensitive(n, "pattern"), where, &s->re, &s->a, &s->alen);
        if (rc) return rc;
        s->blen = c ? strlen(c) : 0;
        if (!(s->b = ldup(L, c ? c : "", s->blen))) return BN_ENOMEM;
    } else if (strcmp(ty, "NFC") == 0 || strcmp(ty, "NFD") == 0 || strcmp(ty, "NFKC") == 0 ||
               strcmp(ty, "NFKD") == 0) {
        s->type = NORM_UNICODE;
        if (!(s->a = ldup(L, ty, strlen(ty)))) return BN_ENOMEM;
    } else if (strcmp(ty, "Strip") == 0) {
        s->type = NORM_STRIP;
        if ((s->left = get_bool(L, n, "strip_left", where, 0)) < 0 ||
            (s->right = get_bool(L, n, "strip_right", where, 0)) < 0)
            return BN_EFORMAT;
    } else {
        return lerr(L, BN_EUNSUPPORTED, "%s.type: normalizer \"%s\" is not supported "
                    "(supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Strip)", where, ty);
    }
    return 0;
}

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int add_pre(loader *L, const cJSON *n, const char *where)
{
    bn_tok *t = L->tok;
    const char *ty;
    int rc0 = component_type(L, n, where, &ty);
    if (rc0 || !ty) return rc0;
    if (strcmp(ty, "Sequence") == 0) return each_in_sequence(L, n, "pretokenizers", where, add_pre);
    if (t->n_pre && t->pre[t->n_pre - 1].type == PRE_BYTELEVEL)
        return lerr(L, BN_EUNSUPPORTED, "%s: a pre-tokenizer after ByteLevel is not supported", where);
    pre_step *ps = realloc(t->pre, (t->n_pre + 1) * sizeof *ps);
    if (!ps) return lerr(L, BN_ENOMEM, "out of memory");
    t->pre = ps;
    pre_step *s = &t->pre[t->n_pre++]; /* owned (and freed) from here, even on error */
    memset(s, 0, sizeof *s);
    int bad = 0;
    if (strcmp(ty, "Split") == 0) {
        s->type = PRE_SPLIT;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        int rc = parse_pattern(L, pat, where, &s->re, &s->lit, &s->litlen);
        if (rc) return rc;
        const char *b = get_str(L, n, "behavior", where, &bad);
        if (bad) return BN_EFORMAT;
        if (!b || strcmp(b, "Isolated") == 0) s->behavior = SPLIT_ISOLATED;
        else if (strcmp(b, "Removed") == 0) s->behavior = SPLIT_REMOVED;
        else if (strcmp(b, "MergedWithPrevious") == 0) s->behavior = SPLIT_MERGED_PREV;
        else if (strcmp(b, "MergedWithNext") == 0) s->behavior = SPLIT_MERGED_NEXT;
        else return lerr(L, BN_EUNSUPPORTED, "%s.behavior: \"%s\" is not supported", where, b);
        if ((s->invert = get_bool(L, n, "invert", where, 0)) < 0) return BN_EFORMAT;
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        if (cJSON_IsString(rx) && !t->pre_name) {
            if (strcmp(rx->valuestring, LLAMA3_PATTERN) == 0) t->pre_name = "llama-bpe";
            else if (strcmp(rx->valuestring, QWEN2_PATTERN) == 0) t->pre_name = "qwen2";
        }
    } else if (strcmp(ty, "ByteLevel") == 0) {
        s->type = PRE_BYTELEVEL;
        int use_regex;
        if ((s->add_prefix_space = get_bool(L, n, "add_prefix_space", where, 0)) < 0 ||
            (use_regex = get_bool(L, n, "use_regex", where, 1)) < 0)
            return BN_EFORMAT;
        if (use_regex) {
            int rc = re_compile(GPT2_PATTERN, &s->re, L->err);
            if (rc) return rc;
            if (!t->pre_name) t->pre_name = "gpt-2";
        }
        t->kind = BN_TOK_KIND_GPT2;
    } else if (strcmp(ty, "Metaspace") == 0) {
        s->type = PRE_METASPACE;
        const char *r = get_str(L, n, "replacement", where, &bad);
        const char *scheme = get_str(L, n, "prepend_scheme", where, &bad);
        if (bad) return BN_EFORMAT;
        if (!r) r = "\xe2\x96\x81";
        s->repllen = strlen(r);
        if (!(s->repl = ldup(L, r, s->repllen))) return BN_ENOMEM;
        int aps = get_bool(L, n, "add_prefix_space", where, 1);
        if (aps < 0 || (s->split = get_bool(L, n, "split", where, 1)) < 0) return BN_EFORMAT;
        if (!scheme) s->prepend = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
        else if (strcmp(scheme, "always") == 0) s->prepend = PREPEND_ALWAYS;
        else if (strcmp(scheme, "first") == 0) s->prepend = PREPEND_FIRST;
        else if (strcmp(scheme, "never") == 0) s->prepend = PREPEND_NEVER;
        else return lerr(L, BN_EFORMAT, "%s.prepend_scheme: \"%s\" is not always, first or never", where, scheme);
    } else if (strcmp(ty, "Digits") == 0) {
        s->type = PRE_DIGITS;
        if ((s->individual = get_bool(L, n, "individual_digits", where, 0)) < 0) return BN_EFORMAT;
    } else {
        return lerr(L, BN_EUNSUPPORTED, "%s.type: pre-tokenizer \"%s\" is not supported "
                    "(supported: Sequence, Split, ByteLevel, Metaspace, Digits)", where, ty);
    }
    return 0;
}

static int add_dec(loader *L, const cJSON *n, const char *where)
{
    bn_tok *t = L->tok;
    const char *ty;
    int rc0 = component_type(L, n, where, &ty);
    if (rc0 || !ty) return rc0;
    t->has_decoder = 1;
    if (strcmp(ty, "Sequence") == 0) return each_in_sequence(L, n, "decoders", where, add_dec);
    dec_step *ds = realloc(t->dec, (t->n_dec + 1) * sizeof *ds);
    if (!ds) return lerr(L, BN_ENOMEM, "out of memory");
    t->dec = ds;
    dec_step *s = &t->dec[t->n_dec];
    memset(s, 0, sizeof *s);
    int bad = 0;
    if (strcmp(ty, "Replace") == 0) {
        s->type = DEC_REPLACE;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const char *c = get_str(L, n, "content", where, &bad);
        if (bad) return BN_EFORMAT;
        if (!cJSON_IsString(ps) || !ps->valuestring[0])
            return lerr(L, BN_EUNSUPPORTED, "%s.pattern: only a non-empty {\"String\": ...} is supported", where);
        s->alen = strlen(ps->valuestring);
        s->blen = c ? strlen(c) : 0;
        if (!(s->a = ldup(L, ps->valuestring, s->alen)) || !(s->b = ldup(L, c ? c : "", s->blen)))
            return BN_ENOMEM;
    } else if (strcmp(ty, "ByteFallback") == 0) {
        s->type = DEC_BYTEFALLBACK;
    } else if (strcmp(ty, "Fuse") == 0) {
        s->type = DEC_FUSE;
    } else if (strcmp(ty, "Strip") == 0) {
        s->type = DEC_STRIP;
        const char *c = get_str(L, n, "content", where, &bad);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(n, "start");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(n, "stop");
        if (bad) return BN_EFORMAT;
        if (!c || (st && !cJSON_IsNumber(st)) || (sp && !cJSON_IsNumber(sp)))
            return lerr(L, BN_EFORMAT, "%s: expected content (string), start and stop (integers)", where);
        s->alen = strlen(c);
        if (!(s->a = ldup(L, c, s->alen))) return BN_ENOMEM;
        s->start = st ? st->valueint : 0;
        s->stop = sp ? sp->valueint : 0;
    } else if (strcmp(ty, "Metaspace") == 0) {
        s->type = DEC_METASPACE;
        const char *r = get_str(L, n, "replacement", where, &bad);
        if (bad) return BN_EFORMAT;
        if (!r) r = "\xe2\x96\x81";
        s->alen = strlen(r);
        if (!(s->a = ldup(L, r, s->alen))) return BN_ENOMEM;
    } else if (strcmp(ty, "ByteLevel") == 0) {
        s->type = DEC_BYTELEVEL;
    } else {
        return lerr(L, BN_EUNSUPPORTED, "%s.type: decoder \"%s\" is not supported "
                    "(supported: Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel)", where, ty);
    }
    t->n_dec++;
    return 0;
}

/* Finds the special token ids that the TemplateProcessing "single" template puts
 * before and after the sequence. */
static int load_post(loader *L, const cJSON *p, const char *where)
{
    const char *ty;
    int rc0 = component_type(L, p, where, &ty);
    if (rc0 || !ty) return rc0;
    if (strcmp(ty, "Sequence") == 0) return each_in_sequence(L, p, "processors", where, load_post);
    if (strcmp(ty, "ByteLevel") == 0) return 0; /* offsets only */
    if (strcmp(ty, "TemplateProcessing") != 0)
        return lerr(L, BN_EUNSUPPORTED, "%s.type: post-processor \"%s\" is not supported "
                    "(supported: TemplateProcessing, ByteLevel, Sequence)", where, ty);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    if (!cJSON_IsArray(single)) return lerr(L, BN_EFORMAT, "%s.single: expected an array", where);
    int seen_seq = 0;
    size_t k = 0;
    for (const cJSON *e = single->child; e; e = e->next, k++) {
        if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) { seen_seq = 1; continue; }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(st, "id");
        if (!cJSON_IsString(id))
            return lerr(L, BN_EFORMAT, "%s.single[%zu]: expected {\"Sequence\"} or {\"SpecialToken\": {\"id\": ...}}", where, k);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(specials, id->valuestring);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(sp, "ids");
        int32_t tid;
        if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 && cJSON_IsNumber(ids->child))
            tid = (int32_t)ids->child->valuedouble;
        else
            tid = sm_get(&L->tok->all_map, id->valuestring, strlen(id->valuestring));
        if (tid < 0 || (size_t)tid >= L->tok->n_ids)
            return lerr(L, BN_EFORMAT, "%s.single[%zu]: special token \"%s\" has no id", where, k, id->valuestring);
        if (!seen_seq) { if (L->post_bos < 0) L->post_bos = tid; }
        else if (L->post_eos < 0) L->post_eos = tid;
    }
    return 0;
}

/* tokenizer_config.json's token fields are a string, {"content": ...} or null. */
static int config_token(loader *L, const cJSON *cfg, const char *key, int32_t *id)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return 0;
    const char *s = NULL;
    if (cJSON_IsString(v)) s = v->valuestring;
    else if (cJSON_IsObject(v) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(v, "content")))
        s = cJSON_GetObjectItemCaseSensitive(v, "content")->valuestring;
    else return lerr(L, BN_EFORMAT, "tokenizer_config.json: %s: expected a string or {\"content\": ...}", key);
    int32_t t = sm_get(&L->tok->all_map, s, strlen(s));
    if (t < 0) return lerr(L, BN_EFORMAT, "tokenizer_config.json: %s \"%s\" is not a token of the vocab", key, s);
    *id = t;
    return 0;
}

/* ------------------------------------------------------------------ loading: types, scores */

static void classify(bn_tok *t)
{
    /* first merge rank producing each token */
    int32_t *rank = malloc(t->n_ids * sizeof *rank);
    for (size_t i = 0; rank && i < t->n_ids; i++) rank[i] = -1;
    for (size_t i = 0; rank && i < t->merges.cap; i++) {
        const pm_slot *s = &t->merges.slots[i];
        if (s->rank >= 0 && (rank[s->result] < 0 || s->rank < rank[s->result])) rank[s->result] = s->rank;
    }
    for (size_t id = 0; id < t->n_ids; id++) {
        const char *s = t->tok_str[id];
        uint8_t ty;
        float sc = 0.0f;
        /* As llama.cpp's converter: a special added token is CONTROL even when it is
         * also the unk token (tokenizer.ggml.unknown_token_id still names it). */
        if (!s) ty = BN_TOK_TYPE_UNUSED;
        else if (t->is_added[id] && t->is_special[id]) { ty = BN_TOK_TYPE_CONTROL; sc = -1000.0f; }
        else if ((int32_t)id == t->unk_id) { ty = BN_TOK_TYPE_UNKNOWN; sc = -1000.0f; }
        else if (t->is_added[id]) ty = BN_TOK_TYPE_USER_DEFINED;
        else if (t->kind == BN_TOK_KIND_LLAMA && strlen(s) == 6 && strncmp(s, "<0x", 3) == 0 &&
                   s[5] == '>' && strchr("0123456789ABCDEF", s[3]) && strchr("0123456789ABCDEF", s[4]))
            ty = BN_TOK_TYPE_BYTE;
        else {
            ty = BN_TOK_TYPE_NORMAL;
            if (t->kind == BN_TOK_KIND_LLAMA)
                sc = rank && rank[id] >= 0 ? -(float)rank[id] : -(float)(t->n_merges + id);
        }
        if (t->kind == BN_TOK_KIND_GPT2) sc = 0.0f;
        t->tok_type[id] = ty;
        t->score[id] = sc;
    }
    free(rank);
}

static int fill_holes(loader *L)
{
    bn_tok *t = L->tok;
    for (size_t id = 0; id < t->n_ids; id++) {
        if (t->tok_str[id]) continue;
        char s[32];
        int n = snprintf(s, sizeof s, "[PAD%zu]", id);
        if (!(t->tok_str[id] = ldup(L, s, (size_t)n))) return BN_ENOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------------ loading: entry */

static int build_tries(loader *L)
{
    bn_tok *t = L->tok;
    for (size_t k = 0; k < t->n_added; k++) {
        added_tok *a = &t->added[k];
        if (a->normalized && t->n_norm) {
            /* normalized tokens are matched on normalized text, by normalized content */
            char *nc;
            size_t nl;
            int rc = normalize_text(t, a->content, a->len, &nc, &nl, L->err);
            if (rc) return rc;
            const char *p = ldup(L, nc, nl);
            free(nc);
            if (!p) return BN_ENOMEM;
            a->content = p;
            a->len = nl;
            if (nl && trie_add(&t->trie_norm, p, nl, (int32_t)k)) return lerr(L, BN_ENOMEM, "out of memory");
        } else if (trie_add(&t->trie_raw, a->content, a->len, (int32_t)k)) {
            return lerr(L, BN_ENOMEM, "out of memory");
        }
    }
    return 0;
}

static int load_doc(loader *L, const cJSON *doc, const cJSON *cfg)
{
    bn_tok *t = L->tok;
    if (!cJSON_IsObject(doc)) return lerr(L, BN_EFORMAT, "expected a JSON object");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(doc, "model");
    if (!cJSON_IsObject(model)) return lerr(L, BN_EFORMAT, "model: expected an object");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (mtype && !cJSON_IsString(mtype)) return lerr(L, BN_EFORMAT, "model.type: expected a string");
    if (mtype && strcmp(mtype->valuestring, "BPE") != 0)
        return lerr(L, BN_EUNSUPPORTED, "model.type: \"%s\" is not supported (only BPE)", mtype->valuestring);
    if (!mtype && !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        return lerr(L, BN_EUNSUPPORTED, "model: no type and no merges: not a BPE model");
    const char *where = "model";
    int bad = 0;
    const char *cs = get_str(L, model, "continuing_subword_prefix", where, &bad);
    const char *ew = get_str(L, model, "end_of_word_suffix", where, &bad);
    if (bad) return BN_EFORMAT;
    if ((cs && cs[0]) || (ew && ew[0]))
        return lerr(L, BN_EUNSUPPORTED, "model: continuing_subword_prefix / end_of_word_suffix are not supported");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return lerr(L, BN_EUNSUPPORTED, "model.dropout: BPE dropout is not supported");
    if ((t->byte_fallback = get_bool(L, model, "byte_fallback", where, 0)) < 0 ||
        (t->fuse_unk = get_bool(L, model, "fuse_unk", where, 0)) < 0 ||
        (t->ignore_merges = get_bool(L, model, "ignore_merges", where, 0)) < 0)
        return BN_EFORMAT;

    /* the pipeline decides the kind, which the vocab needs */
    int rc;
    if ((rc = add_norm(L, cJSON_GetObjectItemCaseSensitive(doc, "normalizer"), "normalizer")) ||
        (rc = add_pre(L, cJSON_GetObjectItemCaseSensitive(doc, "pre_tokenizer"), "pre_tokenizer")) ||
        (rc = add_dec(L, cJSON_GetObjectItemCaseSensitive(doc, "decoder"), "decoder")))
        return rc;
    for (size_t i = 0; i < t->n_dec; i++)
        if (t->dec[i].type == DEC_BYTELEVEL) t->kind = BN_TOK_KIND_GPT2;
    if (!t->pre_name) t->pre_name = "default";

    if ((rc = load_vocab(L, model, cJSON_GetObjectItemCaseSensitive(doc, "added_tokens"))) ||
        (rc = load_merges(L, model)) || (rc = build_tries(L)))
        return rc;

    const char *unk = get_str(L, model, "unk_token", where, &bad);
    if (bad) return BN_EFORMAT;
    t->unk_id = t->bos_id = t->eos_id = t->pad_id = -1;
    if (unk) {
        t->unk_id = sm_get(&t->all_map, unk, strlen(unk));
        if (t->unk_id < 0) return lerr(L, BN_EFORMAT, "model.unk_token \"%s\" is not in the vocab", unk);
    }
    L->post_bos = L->post_eos = -1;
    if ((rc = load_post(L, cJSON_GetObjectItemCaseSensitive(doc, "post_processor"), "post_processor")))
        return rc;
    int32_t tb = L->post_bos, te = L->post_eos;
    t->bos_id = tb;
    t->eos_id = te;
    t->add_bos = tb >= 0;
    t->add_eos = te >= 0;
    if (cfg) {
        L->name = "tokenizer_config.json";
        if (!cJSON_IsObject(cfg)) return lerr(L, BN_EFORMAT, "expected a JSON object");
        if ((rc = config_token(L, cfg, "bos_token", &t->bos_id)) ||
            (rc = config_token(L, cfg, "eos_token", &t->eos_id)) ||
            (rc = config_token(L, cfg, "pad_token", &t->pad_id)) ||
            (rc = config_token(L, cfg, "unk_token", &t->unk_id)))
            return rc;
        int ab = get_bool(L, cfg, "add_bos_token", "tokenizer_config.json", -2);
        int ae = get_bool(L, cfg, "add_eos_token", "tokenizer_config.json", -2);
        if (ab == -1 || ae == -1) return BN_EFORMAT;
        if (ab != -2) t->add_bos = ab;
        if (ae != -2) t->add_eos = ae;
        if (t->add_bos && t->bos_id < 0) return lerr(L, BN_EFORMAT, "add_bos_token is true but there is no bos_token");
        if (t->add_eos && t->eos_id < 0) return lerr(L, BN_EFORMAT, "add_eos_token is true but there is no eos_token");
    }
    classify(t);
    return fill_holes(L);
}

void bn_tok_free(bn_tok *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n_norm; i++) if (t->norm[i].re) onig_free(t->norm[i].re);
    for (size_t i = 0; i < t->n_pre; i++) if (t->pre[i].re) onig_free(t->pre[i].re);
    free(t->norm);
    free(t->pre);
    free(t->dec);
    free(t->tok_str);
    free(t->tok_type);
    free(t->is_added);
    free(t->is_special);
    free(t->score);
    free(t->merge_str);
    free(t->merges.slots);
    free(t->model_map.slots);
    free(t->all_map.slots);
    free(t->added);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    arena_free(t->arena);
    free(t);
}

static cJSON *parse_json(const char *s, size_t n, const char *name, bn_err *err)
{
    cJSON *doc = cJSON_ParseWithLength(s, n);
    if (!doc) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= s && at <= s + n ? (size_t)(at - s) : 0;
        size_t line = 1;
        for (size_t i = 0; i < off; i++) line += s[i] == '\n';
        bn_err_set(err, BN_EFORMAT, "%s: invalid JSON near byte %zu (line %zu)", name, off, line);
    }
    return doc;
}

int bn_tok_load_mem(const char *json, size_t json_len, const char *config_json,
                    size_t config_len, const char *name, bn_tok **out, bn_err *err)
{
    *out = NULL;
    if (!name) name = "tokenizer.json";
    cJSON *doc = parse_json(json, json_len, name, err);
    if (!doc) return BN_EFORMAT;
    cJSON *cfg = NULL;
    if (config_json && !(cfg = parse_json(config_json, config_len, "tokenizer_config.json", err))) {
        cJSON_Delete(doc);
        return BN_EFORMAT;
    }
    bn_tok *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(doc);
        cJSON_Delete(cfg);
        return bn_err_set(err, BN_ENOMEM, "%s: out of memory", name);
    }
    loader L = { .tok = t, .name = name, .err = err, .post_bos = -1, .post_eos = -1 };
    int rc = load_doc(&L, doc, cfg);
    cJSON_Delete(doc);
    cJSON_Delete(cfg);
    if (rc) {
        bn_tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static int read_file(const char *path, char **data, size_t *len, bn_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return bn_err_set(err, bn_err_from_errno(errno), "%s: %s", path, strerror(errno));
    char *p = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *np = realloc(p, cap);
            if (!np) { free(p); fclose(f); return bn_err_set(err, BN_ENOMEM, "%s: out of memory", path); }
            p = np;
        }
        size_t got = fread(p + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(p); return bn_err_set(err, BN_EIO, "%s: read error", path); }
    p[n] = 0;
    *data = p;
    *len = n;
    return 0;
}

int bn_tok_load(const char *path, bn_tok **out, bn_err *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return bn_err_set(err, bn_err_from_errno(errno), "%s: %s", path, strerror(errno));
    char jpath[4096], cpath[4096];
    if (S_ISDIR(st.st_mode)) {
        snprintf(jpath, sizeof jpath, "%s/tokenizer.json", path);
        snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", path);
    } else {
        snprintf(jpath, sizeof jpath, "%s", path);
        const char *slash = strrchr(path, '/');
        int dl = slash ? (int)(slash - path) : 1;
        snprintf(cpath, sizeof cpath, "%.*s/tokenizer_config.json", dl, slash ? path : ".");
    }
    char *json = NULL, *cfg = NULL;
    size_t jl = 0, cl = 0;
    int rc = read_file(jpath, &json, &jl, err);
    if (rc) return rc;
    if (access(cpath, F_OK) == 0 && (rc = read_file(cpath, &cfg, &cl, err))) {
        free(json);
        return rc;
    }
    rc = bn_tok_load_mem(json, jl, cfg, cl, jpath, out, err);
    free(json);
    free(cfg);
    return rc;
}

/* ------------------------------------------------------------------ normalization */

static int is_js_space_at(const char *s, size_t n, size_t i, size_t *clen)
{
    size_t j = i;
    uint32_t cp;
    if (bn_tok_utf8_next(s, n, &j, &cp) != 0) return 0;
    *clen = j - i;
    return bn_tok_uc_is_js_space(cp);
}

/* Length of s without trailing JS whitespace. */
static size_t rtrim_len(const char *s, size_t n)
{
    size_t end = n;
    while (end > 0) {
        size_t i = end - 1, cl;
        while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
        if (!is_js_space_at(s, end, i, &cl)) break;
        end = i;
    }
    return end;
}

/* Number of leading JS whitespace bytes of s. */
static size_t ltrim_len(const char *s, size_t n)
{
    size_t i = 0, cl;
    while (i < n && is_js_space_at(s, n, i, &cl)) i += cl;
    return i;
}

/* Replaces every occurrence of a literal (or regex match) in s[0..n) by rep. */
static int replace_all(const norm_step *st, const char *s, size_t n, buf *o, bn_err *err)
{
    o->n = 0;
    if (buf_reserve(o, n)) return bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
    if (!st->re) {
        size_t i = 0;
        while (i < n) {
            const char *hit = st->alen <= n - i ? memmem(s + i, n - i, st->a, st->alen) : NULL;
            size_t upto = hit ? (size_t)(hit - s) : n;
            if (buf_add(o, s + i, upto - i)) return bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
            if (!hit) break;
            if (buf_add(o, st->b, st->blen)) return bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
            i = upto + st->alen;
        }
        return 0;
    }
    re_scan sc;
    int rc = re_scan_init(&sc, err);
    size_t pos = 0, copied = 0, a, b;
    while (!rc && (rc = re_next(st->re, &sc, s, n, &pos, &a, &b, err)) == 1) {
        rc = buf_add(o, s + copied, a - copied) || buf_add(o, st->b, st->blen)
                 ? bn_err_set(err, BN_ENOMEM, "normalizer: out of memory") : 0;
        copied = b;
    }
    if (!rc && buf_add(o, s + copied, n - copied)) rc = bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
    re_scan_free(&sc);
    return rc;
}

static int normalize_text(const bn_tok *t, const char *s, size_t n, char **out,
                          size_t *out_len, bn_err *err)
{
    buf cur = { 0 }, tmp = { 0 };
    int rc = 0;
    if (buf_add(&cur, s, n)) return bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
    for (size_t k = 0; k < t->n_norm && !rc; k++) {
        const norm_step *st = &t->norm[k];
        switch (st->type) {
        case NORM_PREPEND:
            if (cur.n == 0) break;
            tmp.n = 0;
            if (buf_add(&tmp, st->a, st->alen) || buf_add(&tmp, cur.p, cur.n)) rc = BN_ENOMEM;
            else { buf x = cur; cur = tmp; tmp = x; }
            break;
        case NORM_REPLACE:
            rc = replace_all(st, cur.p, cur.n, &tmp, err);
            if (!rc) { buf x = cur; cur = tmp; tmp = x; }
            break;
        case NORM_UNICODE: {
            char *o;
            size_t ol;
            rc = bn_tok_uc_normalize(st->a, cur.p, cur.n, &o, &ol, err);
            if (!rc) { free(cur.p); cur.p = o; cur.n = ol; cur.cap = ol + 1; }
            break;
        }
        default: { /* NORM_STRIP */
            size_t a = st->left ? ltrim_len(cur.p, cur.n) : 0;
            size_t b = st->right ? rtrim_len(cur.p, cur.n) : cur.n;
            if (b < a) b = a;
            memmove(cur.p, cur.p + a, b - a);
            cur.n = b - a;
            cur.p[cur.n] = 0;
            break;
        }
        }
    }
    free(tmp.p);
    if (rc) {
        free(cur.p);
        if (rc == BN_ENOMEM) bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
        return rc;
    }
    *out = cur.p ? cur.p : calloc(1, 1);
    *out_len = cur.n;
    return *out ? 0 : bn_err_set(err, BN_ENOMEM, "normalizer: out of memory");
}

/* ------------------------------------------------------------------ pre-tokenization */

typedef struct span { size_t off, len; } span;
typedef struct spans { span *v; size_t n, cap; } spans;

static int spans_add(spans *s, size_t off, size_t len)
{
    if (len == 0) return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        span *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = (span){ off, len };
    return 0;
}

/* Match boundaries of a Split step inside one span: calls back with [a,b) pairs. */
typedef struct match_list { size_t *v; size_t n, cap; } match_list;

static int ml_add(match_list *m, size_t a, size_t b)
{
    if (m->n + 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        size_t *nv = realloc(m->v, cap * sizeof *nv);
        if (!nv) return -1;
        m->v = nv;
        m->cap = cap;
    }
    m->v[m->n++] = a;
    m->v[m->n++] = b;
    return 0;
}

/* Non-empty matches (byte offsets relative to s) of a regex or literal in s. */
static int find_matches(OnigRegex re, const char *lit, size_t litlen, const char *s,
                        size_t n, match_list *m, bn_err *err)
{
    m->n = 0;
    if (!re) {
        size_t i = 0;
        while (i + litlen <= n) {
            const char *hit = memmem(s + i, n - i, lit, litlen);
            if (!hit) break;
            size_t a = (size_t)(hit - s);
            if (ml_add(m, a, a + litlen)) return bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
            i = a + litlen;
        }
        return 0;
    }
    re_scan sc;
    int rc = re_scan_init(&sc, err);
    size_t pos = 0, a, b;
    while (!rc && (rc = re_next(re, &sc, s, n, &pos, &a, &b, err)) == 1)
        rc = ml_add(m, a, b) ? bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory") : 0;
    re_scan_free(&sc);
    return rc;
}

static int pre_split(const pre_step *st, const char *base, span sp, spans *out, match_list *m,
                     bn_err *err)
{
    const char *s = base + sp.off;
    int rc = find_matches(st->re, st->lit, st->litlen, s, sp.len, m, err);
    if (rc) return rc;
    size_t prev = 0, pend = 0; /* pend: start of text waiting to be merged with the next */
    for (size_t k = 0; k < m->n; k += 2) {
        size_t a = m->v[k], b = m->v[k + 1];
        int e = 0;
        if (st->invert) {
            e = spans_add(out, sp.off + a, b - a);
        } else switch (st->behavior) {
        case SPLIT_ISOLATED:
            e = spans_add(out, sp.off + prev, a - prev) || spans_add(out, sp.off + a, b - a);
            break;
        case SPLIT_REMOVED:
            e = spans_add(out, sp.off + prev, a - prev);
            break;
        case SPLIT_MERGED_PREV:
            e = spans_add(out, sp.off + prev, b - prev);
            break;
        default: /* SPLIT_MERGED_NEXT */
            e = spans_add(out, sp.off + pend, a - pend);
            pend = a;
            break;
        }
        if (e) return bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
        prev = b;
    }
    if (!st->invert) {
        size_t from = st->behavior == SPLIT_MERGED_NEXT ? pend : prev;
        if (spans_add(out, sp.off + from, sp.len - from)) return bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
    }
    return 0;
}

/* Runs the pre-tokenizer steps over text (copied into wb) and returns the pieces. */
static int pre_tokenize(const bn_tok *t, const char *text, size_t n, size_t section_index,
                        buf *wb, spans *cur, spans *nxt, match_list *m, bn_err *err)
{
    wb->n = 0;
    cur->n = 0;
    if (buf_add(wb, text, n) || spans_add(cur, 0, n)) return bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
    for (size_t k = 0; k < t->n_pre; k++) {
        const pre_step *st = &t->pre[k];
        nxt->n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            span sp = cur->v[i];
            int rc = 0;
            switch (st->type) {
            case PRE_SPLIT:
                rc = pre_split(st, wb->p, sp, nxt, m, err);
                break;
            case PRE_BYTELEVEL: {
                if (st->add_prefix_space && wb->p[sp.off] != ' ') {
                    size_t off = wb->n;
                    if (buf_add(wb, " ", 1) || buf_add(wb, wb->p + sp.off, sp.len))
                        return bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
                    sp = (span){ off, sp.len + 1 };
                }
                if (st->re) {
                    pre_step iso = *st;
                    iso.behavior = SPLIT_ISOLATED;
                    iso.invert = 0;
                    rc = pre_split(&iso, wb->p, sp, nxt, m, err);
                } else if (spans_add(nxt, sp.off, sp.len)) {
                    rc = bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
                }
                break;
            }
            case PRE_METASPACE: {
                size_t off = wb->n;
                int prepend = st->prepend == PREPEND_ALWAYS ||
                              (st->prepend == PREPEND_FIRST && section_index == 0 && i == 0);
                /* copy with ' ' -> replacement; the source may move when wb grows */
                size_t src = sp.off;
                /* after ' ' -> replacement, prepend unless it starts with one */
                if (prepend && wb->p[src] != ' ' &&
                    !(sp.len >= st->repllen && memcmp(wb->p + src, st->repl, st->repllen) == 0))
                    if (buf_add(wb, st->repl, st->repllen)) return bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
                for (size_t j = 0; j < sp.len; j++) {
                    char c = wb->p[src + j];
                    int e = c == ' ' ? buf_add(wb, st->repl, st->repllen) : buf_add(wb, &c, 1);
                    if (e) return bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
                }
                span ns = { off, wb->n - off };
                if (st->split) {
                    pre_step sp2 = { 0 };
                    sp2.lit = st->repl;
                    sp2.litlen = st->repllen;
                    sp2.behavior = SPLIT_MERGED_NEXT;
                    rc = pre_split(&sp2, wb->p, ns, nxt, m, err);
                } else if (spans_add(nxt, ns.off, ns.len)) {
                    rc = bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
                }
                break;
            }
            default: { /* PRE_DIGITS */
                size_t j = 0, start = 0;
                const char *s = wb->p + sp.off;
                while (j < sp.len && !rc) {
                    if (s[j] >= '0' && s[j] <= '9') {
                        size_t e = j + 1;
                        if (!st->individual) while (e < sp.len && s[e] >= '0' && s[e] <= '9') e++;
                        if (spans_add(nxt, sp.off + start, j - start) || spans_add(nxt, sp.off + j, e - j))
                            rc = bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
                        start = j = e;
                    } else {
                        j++;
                    }
                }
                if (!rc && spans_add(nxt, sp.off + start, sp.len - start))
                    rc = bn_err_set(err, BN_ENOMEM, "pre-tokenizer: out of memory");
                break;
            }
            }
            if (rc) return rc;
        }
        spans x = *cur;
        *cur = *nxt;
        *nxt = x;
    }
    return 0;
}

/* ------------------------------------------------------------------ BPE */

typedef struct bpe_sym { int32_t id, prev, next, len; uint8_t frozen; } bpe_sym;
typedef struct bpe_cand { int32_t rank, pos, right; } bpe_cand;

typedef struct scratch {
    buf wb;                 /* pre-token text */
    spans cur, nxt;
    match_list m;
    bpe_sym *sym; size_t symcap;
    bpe_cand *heap; size_t nheap, heapcap;
} scratch;

static void scratch_free(scratch *s)
{
    free(s->wb.p);
    free(s->cur.v);
    free(s->nxt.v);
    free(s->m.v);
    free(s->sym);
    free(s->heap);
}

static int cand_less(const bpe_cand *a, const bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(scratch *s, bpe_cand c)
{
    if (s->nheap == s->heapcap) {
        size_t cap = s->heapcap ? s->heapcap * 2 : 64;
        bpe_cand *nh = realloc(s->heap, cap * sizeof *nh);
        if (!nh) return -1;
        s->heap = nh;
        s->heapcap = cap;
    }
    size_t i = s->nheap++;
    s->heap[i] = c;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&s->heap[i], &s->heap[p])) break;
        bpe_cand x = s->heap[i]; s->heap[i] = s->heap[p]; s->heap[p] = x;
        i = p;
    }
    return 0;
}

static bpe_cand heap_pop(scratch *s)
{
    bpe_cand top = s->heap[0];
    s->heap[0] = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nheap && cand_less(&s->heap[l], &s->heap[m])) m = l;
        if (r < s->nheap && cand_less(&s->heap[r], &s->heap[m])) m = r;
        if (m == i) break;
        bpe_cand x = s->heap[i]; s->heap[i] = s->heap[m]; s->heap[m] = x;
        i = m;
    }
    return top;
}

static int try_pair(const bn_tok *t, scratch *s, int32_t left)
{
    if (left < 0) return 0;
    int32_t right = s->sym[left].next;
    if (right < 0 || s->sym[left].frozen || s->sym[right].frozen) return 0;
    const pm_slot *m = pm_get(&t->merges, s->sym[left].id, s->sym[right].id);
    if (!m) return 0;
    return heap_push(s, (bpe_cand){ m->rank, left, right });
}

static int sym_push(scratch *s, size_t *n, int32_t id, int32_t len, int frozen)
{
    if (*n == s->symcap) {
        size_t cap = s->symcap ? s->symcap * 2 : 256;
        bpe_sym *ns = realloc(s->sym, cap * sizeof *ns);
        if (!ns) return -1;
        s->sym = ns;
        s->symcap = cap;
    }
    s->sym[*n] = (bpe_sym){ id, (int32_t)*n - 1, (int32_t)*n + 1, len, (uint8_t)frozen };
    (*n)++;
    return 0;
}

/* BPE of one pre-token; appends ids to out. */
static int bpe_word(const bn_tok *t, scratch *s, const char *w, size_t n, bn_tok_ids *out,
                    bn_err *err)
{
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int32_t id = sm_get(&t->model_map, w, n);
        if (id >= 0) return ids_push(out, id) ? bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory") : 0;
    }
    size_t ns = 0;
    if (t->kind == BN_TOK_KIND_GPT2) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_sym[(unsigned char)w[i]];
            int frozen = 0;
            if (id < 0) { id = t->unk_id; frozen = 1; }
            if (id < 0) continue; /* no symbol and no unk: dropped, as transformers.js does */
            if (sym_push(s, &ns, id, 1, frozen)) return bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
        }
    } else {
        size_t i = 0;
        while (i < n) {
            size_t j = i;
            uint32_t cp;
            if (bn_tok_utf8_next(w, n, &j, &cp) != 0) j = i + 1;
            int32_t id = sm_get(&t->model_map, w + i, j - i);
            int e = 0;
            if (id >= 0) {
                e = sym_push(s, &ns, id, (int32_t)(j - i), 0);
            } else {
                int all = t->byte_fallback;
                for (size_t k = i; all && k < j; k++) all = t->byte_sym[(unsigned char)w[k]] >= 0;
                if (all) {
                    for (size_t k = i; k < j && !e; k++)
                        e = sym_push(s, &ns, t->byte_sym[(unsigned char)w[k]], 1, 1);
                } else if (t->unk_id >= 0) {
                    e = sym_push(s, &ns, t->unk_id, (int32_t)(j - i), 1);
                }
            }
            if (e) return bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
            i = j;
        }
    }
    if (ns == 0) return 0;
    s->sym[ns - 1].next = -1;
    s->nheap = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        if (try_pair(t, s, (int32_t)i)) return bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
    while (s->nheap) {
        bpe_cand c = heap_pop(s);
        bpe_sym *l = &s->sym[c.pos];
        if (l->len == 0 || l->next != c.right) continue;
        bpe_sym *r = &s->sym[c.right];
        const pm_slot *m = pm_get(&t->merges, l->id, r->id);
        if (!m || m->rank != c.rank) continue;
        l->id = m->result;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = c.pos;
        if (try_pair(t, s, l->prev) || try_pair(t, s, c.pos))
            return bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next)
        if (ids_push(out, s->sym[i].id)) return bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
    return 0;
}

/* ------------------------------------------------------------------ encode */

typedef struct section { size_t off, len; int32_t added; } section;
typedef struct sections { section *v; size_t n, cap; } sections;

static int sec_add(sections *s, size_t off, size_t len, int32_t added)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        section *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = (section){ off, len, added };
    return 0;
}

/* Splits s at added tokens of trie tr, then applies their lstrip/rstrip to the
 * neighbouring text sections. */
static int split_added(const bn_tok *t, const trie *tr, const char *s, size_t n, int skip_special,
                       sections *out)
{
    out->n = 0;
    size_t start = 0, i = 0;
    while (i < n) {
        size_t ml = 0;
        int32_t a = trie_match(t, tr, s, n, i, skip_special, &ml);
        if (a < 0) { i++; continue; }
        if (i > start && sec_add(out, start, i - start, -1)) return -1;
        if (sec_add(out, i, ml, a)) return -1;
        i += ml;
        start = i;
    }
    if (start < n && sec_add(out, start, n - start, -1)) return -1;
    for (size_t k = 0; k < out->n; k++) {
        if (out->v[k].added < 0) continue;
        const added_tok *a = &t->added[out->v[k].added];
        if (a->lstrip && k > 0 && out->v[k - 1].added < 0)
            out->v[k - 1].len = rtrim_len(s + out->v[k - 1].off, out->v[k - 1].len);
        if (a->rstrip && k + 1 < out->n && out->v[k + 1].added < 0) {
            size_t d = ltrim_len(s + out->v[k + 1].off, out->v[k + 1].len);
            out->v[k + 1].off += d;
            out->v[k + 1].len -= d;
        }
    }
    return 0;
}

/* Encodes one text section (no added tokens in it at the raw level). */
static int encode_section(const bn_tok *t, const char *s, size_t n, size_t section_index,
                          unsigned flags, scratch *sc, bn_tok_ids *out, bn_err *err)
{
    char *norm = NULL;
    size_t nl = 0;
    int rc = normalize_text(t, s, n, &norm, &nl, err);
    if (rc) return rc;
    sections subs = { 0 };
    if (nl && split_added(t, &t->trie_norm, norm, nl, (flags & BN_TOK_SPLIT_SPECIAL) != 0, &subs)) {
        free(norm);
        return bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
    }
    for (size_t k = 0; k < subs.n && !rc; k++) {
        const section *ss = &subs.v[k];
        if (ss->len == 0) continue;
        if (ss->added >= 0) {
            if (ids_push(out, t->added[ss->added].id)) rc = bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
            continue;
        }
        rc = pre_tokenize(t, norm + ss->off, ss->len, section_index, &sc->wb, &sc->cur, &sc->nxt, &sc->m, err);
        size_t first = out->n;
        for (size_t p = 0; p < sc->cur.n && !rc; p++)
            rc = bpe_word(t, sc, sc->wb.p + sc->cur.v[p].off, sc->cur.v[p].len, out, err);
        if (!rc && t->fuse_unk && t->unk_id >= 0) {
            size_t w = first;
            for (size_t r = first; r < out->n; r++)
                if (!(out->ids[r] == t->unk_id && w > first && out->ids[w - 1] == t->unk_id))
                    out->ids[w++] = out->ids[r];
            out->n = w;
        }
    }
    free(subs.v);
    free(norm);
    return rc;
}

int bn_tok_encode(const bn_tok *t, const char *text, size_t len, unsigned flags,
                  bn_tok_ids *out, bn_err *err)
{
    size_t bad = bn_tok_utf8_check(text, len);
    if (bad < len) return bn_err_set(err, BN_EINVAL, "text is not valid UTF-8 (byte offset %zu)", bad);
    size_t n0 = out->n;
    if ((flags & BN_TOK_ADD_SPECIAL) && t->add_bos && ids_push(out, t->bos_id))
        return bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
    sections secs = { 0 };
    scratch sc = { 0 };
    int rc = 0;
    if (split_added(t, &t->trie_raw, text, len, (flags & BN_TOK_SPLIT_SPECIAL) != 0, &secs))
        rc = bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
    for (size_t k = 0; k < secs.n && !rc; k++) {
        const section *s = &secs.v[k];
        if (s->len == 0) continue;
        if (s->added >= 0) {
            if (ids_push(out, t->added[s->added].id)) rc = bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
            continue;
        }
        rc = encode_section(t, text + s->off, s->len, k, flags, &sc, out, err);
    }
    if (!rc && (flags & BN_TOK_ADD_SPECIAL) && t->add_eos && ids_push(out, t->eos_id))
        rc = bn_err_set(err, BN_ENOMEM, "tokenizer: out of memory");
    free(secs.v);
    scratch_free(&sc);
    if (rc) out->n = n0;
    return rc;
}

/* ------------------------------------------------------------------ decode */

/* The decoder steps work on a list of pieces kept in one buffer: piece i is
 * data[off[i] .. off[i+1]), with a flag telling whether it is an added token (the
 * ByteLevel decoder passes those through unchanged). No allocation per piece. */
typedef struct pieces {
    buf data;
    size_t *off;     /* n + 1 offsets */
    uint8_t *added;
    size_t n, cap;
} pieces;

static int pc_begin(pieces *p, int added)
{
    if (buf_reserve(&p->data, 0)) return -1; /* data.p is never NULL once a piece exists */
    if (p->n + 2 > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        while (cap < p->n + 2) cap *= 2;
        size_t *no = realloc(p->off, cap * sizeof *no);
        if (!no) return -1;
        p->off = no;
        uint8_t *na = realloc(p->added, cap);
        if (!na) return -1;
        p->added = na;
        p->cap = cap;
    }
    if (p->n == 0) p->off[0] = p->data.n;
    p->added[p->n] = (uint8_t)added;
    p->n++;
    p->off[p->n] = p->data.n;
    return 0;
}

/* Appends bytes to the last piece. */
static int pc_add(pieces *p, const char *s, size_t n)
{
    if (buf_add(&p->data, s, n)) return -1;
    p->off[p->n] = p->data.n;
    return 0;
}

static int pc_push(pieces *p, const char *s, size_t n, int added)
{
    return pc_begin(p, added) || pc_add(p, s, n) ? -1 : 0;
}

static void pc_reset(pieces *p) { p->n = 0; p->data.n = 0; }

static void pc_free(pieces *p)
{
    free(p->data.p);
    free(p->off);
    free(p->added);
    *p = (pieces){ 0 };
}

static int hexdig(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Appends s[0..n) with every occurrence of pat replaced by rep. */
static int add_replaced(pieces *o, const char *s, size_t n, const char *pat, size_t plen,
                        const char *rep, size_t rlen)
{
    size_t j = 0;
    while (j < n) {
        const char *hit = plen <= n - j ? memmem(s + j, n - j, pat, plen) : NULL;
        size_t upto = hit ? (size_t)(hit - s) : n;
        if (pc_add(o, s + j, upto - j)) return -1;
        if (!hit) break;
        if (pc_add(o, rep, rlen)) return -1;
        j = upto + plen;
    }
    return 0;
}

/* One decoder step: in -> out (out starts empty). */
static int dec_apply(const dec_step *d, const pieces *in, pieces *out)
{
    uint32_t b2u[256];
    int16_t u2b[512];
    int in_run = 0;
    if (d->type == DEC_BYTELEVEL) bytelevel_tables(b2u, u2b);
    if (d->type == DEC_FUSE && pc_begin(out, 0)) return -1;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->data.p + in->off[i];
        size_t n = in->off[i + 1] - in->off[i];
        int added = in->added[i];
        switch (d->type) {
        case DEC_REPLACE:
            if (pc_begin(out, added) || add_replaced(out, s, n, d->a, d->alen, d->b, d->blen)) return -1;
            break;
        case DEC_METASPACE: {
            if (pc_begin(out, added)) return -1;
            size_t start = out->data.n;
            if (add_replaced(out, s, n, d->a, d->alen, " ", 1)) return -1;
            if (i == 0 && out->data.n > start && out->data.p[start] == ' ') {
                memmove(out->data.p + start, out->data.p + start + 1, out->data.n - start - 1);
                out->data.n--;
                out->off[out->n] = out->data.n;
            }
            break;
        }
        case DEC_BYTEFALLBACK: {
            int hi, lo;
            if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && (hi = hexdig(s[3])) >= 0 &&
                (lo = hexdig(s[4])) >= 0) {
                char c = (char)(hi * 16 + lo);
                if ((!in_run && pc_begin(out, 0)) || pc_add(out, &c, 1)) return -1;
                in_run = 1;
            } else {
                in_run = 0;
                if (pc_push(out, s, n, added)) return -1;
            }
            break;
        }
        case DEC_FUSE:
            if (pc_add(out, s, n)) return -1;
            break;
        case DEC_STRIP: {
            size_t a = 0, b = n;
            for (int k = 0; k < d->start && b - a >= d->alen && memcmp(s + a, d->a, d->alen) == 0; k++) a += d->alen;
            for (int k = 0; k < d->stop && b - a >= d->alen && memcmp(s + b - d->alen, d->a, d->alen) == 0; k++) b -= d->alen;
            if (pc_push(out, s + a, b - a, added)) return -1;
            break;
        }
        default: /* DEC_BYTELEVEL: runs of non-added pieces back to raw bytes */
            if (added) {
                in_run = 0;
                if (pc_push(out, s, n, 1)) return -1;
                break;
            }
            if (!in_run && pc_begin(out, 0)) return -1;
            in_run = 1;
            for (size_t j = 0; j < n;) {
                size_t k = j;
                uint32_t cp;
                if (bn_tok_utf8_next(s, n, &k, &cp) != 0) k = j + 1, cp = 0xFFFD;
                if (cp < 512 && u2b[cp] >= 0) {
                    char c = (char)u2b[cp];
                    if (pc_add(out, &c, 1)) return -1;
                } else if (pc_add(out, s + j, k - j)) { /* outside the alphabet: as is */
                    return -1;
                }
                j = k;
            }
            break;
        }
    }
    return 0;
}

int bn_tok_decode(const bn_tok *t, const int32_t *ids, size_t n, unsigned flags,
                  char **out, size_t *out_len, bn_err *err)
{
    *out = NULL;
    *out_len = 0;
    pieces a = { 0 }, b = { 0 };
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || t->tok_type[id] == BN_TOK_TYPE_UNUSED)
            rc = bn_err_set(err, BN_EINVAL, "decode: token id %d at position %zu is not in the vocabulary (size %zu)",
                            id, i, t->n_ids);
        else if ((flags & BN_TOK_SKIP_SPECIAL) && t->is_special[id])
            continue;
        else if (pc_push(&a, t->tok_str[id], strlen(t->tok_str[id]), t->is_added[id]))
            rc = bn_err_set(err, BN_ENOMEM, "decode: out of memory");
    }
    for (size_t k = 0; k < t->n_dec && !rc; k++) {
        pc_reset(&b);
        if (dec_apply(&t->dec[k], &a, &b)) { rc = bn_err_set(err, BN_ENOMEM, "decode: out of memory"); break; }
        pieces x = a; a = b; b = x;
    }
    buf o = { 0 };
    if (!rc && buf_reserve(&o, a.data.n + a.n)) rc = bn_err_set(err, BN_ENOMEM, "decode: out of memory");
    if (!rc) {
        /* without a decoder the pieces are joined with spaces, as transformers.js does */
        for (size_t i = 0; i < a.n; i++) {
            if (!t->has_decoder && i > 0) o.p[o.n++] = ' ';
            size_t pl = a.off[i + 1] - a.off[i];
            memcpy(o.p + o.n, a.data.p + a.off[i], pl);
            o.n += pl;
        }
        o.p[o.n] = 0;
    }
    pc_free(&a);
    pc_free(&b);
    if (rc) { free(o.p); return rc; }
    *out = o.p;
    *out_len = o.n;
    return 0;
}

/* The text that ids add after prefix: decode(prefix + ids) minus decode(prefix). Decoding
 * ids alone would run the decoder chain as if they started the text (a Strip decoder
 * drops the first piece's leading space: "time" + "there" instead of "time there"). When
 * decode(prefix) is not a byte prefix of the whole (no decoder in use does that), the
 * bytes after the common prefix are returned. */
int bn_tok_decode_continuation(const bn_tok *t, const int32_t *prefix, size_t n_prefix,
                               const int32_t *ids, size_t n, unsigned flags, char **out,
                               size_t *out_len, bn_err *err)
{
    *out = NULL;
    *out_len = 0;
    if (n_prefix == 0) return bn_tok_decode(t, ids, n, flags, out, out_len, err);
    int32_t *all = malloc((n_prefix + n) * sizeof(int32_t));
    if (!all) return bn_err_set(err, BN_ENOMEM, "decode: out of memory");
    memcpy(all, prefix, n_prefix * sizeof(int32_t));
    if (n) memcpy(all + n_prefix, ids, n * sizeof(int32_t));
    char *whole = NULL, *head = NULL;
    size_t lw = 0, lh = 0;
    int rc = bn_tok_decode(t, all, n_prefix + n, flags, &whole, &lw, err);
    if (!rc) rc = bn_tok_decode(t, prefix, n_prefix, flags, &head, &lh, err);
    free(all);
    if (rc) {
        free(whole);
        free(head);
        return rc;
    }
    size_t k = 0;
    while (k < lh && k < lw && head[k] == whole[k]) k++;
    memmove(whole, whole + k, lw - k + 1); /* with the NUL */
    free(head);
    *out = whole;
    *out_len = lw - k;
    return 0;
}

/* ------------------------------------------------------------------ encode a file */

int bn_tok_encode_file(const bn_tok *t, const char *path, unsigned flags, bn_tok_ids *out,
                       bn_tok_ids *doc_starts, bn_err *err)
{
    char *s;
    size_t n;
    int rc = read_file(path, &s, &n, err);
    if (rc) return rc;
    size_t bad = bn_tok_utf8_check(s, n);
    if (bad < n) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++) line += s[i] == '\n';
        free(s);
        return bn_err_set(err, BN_EINVAL, "%s: not UTF-8 text (invalid byte at offset %zu, line %zu)", path, bad, line);
    }
    size_t start = 0, n0 = out->n, d0 = doc_starts ? doc_starts->n : 0;
    while (start < n && !rc) {
        const char *sep = n - start >= 2 ? memmem(s + start, n - start, "\n\n", 2) : NULL;
        size_t end = sep ? (size_t)(sep - s) : n;
        size_t a = start + ltrim_len(s + start, end - start);
        size_t b = a + rtrim_len(s + a, end - a);
        if (b > a) { /* not blank */
            if (doc_starts && ids_push(doc_starts, (int32_t)out->n))
                rc = bn_err_set(err, BN_ENOMEM, "%s: out of memory", path);
            else if ((rc = bn_tok_encode(t, s + a, b - a, flags, out, err)))
                bn_err_prefix(err, "%s: ", path);
        }
        start = sep ? end + 2 : n;
    }
    free(s);
    if (rc) {
        out->n = n0;
        if (doc_starts) doc_starts->n = d0;
    }
    return rc;
}

/* ------------------------------------------------------------------ accessors */

bn_tok_kind bn_tok_get_kind(const bn_tok *t) { return t->kind; }
const char *bn_tok_model_name(const bn_tok *t) { return t->kind == BN_TOK_KIND_GPT2 ? "gpt2" : "llama"; }
const char *bn_tok_pre_name(const bn_tok *t) { return t->kind == BN_TOK_KIND_GPT2 ? t->pre_name : "default"; }
size_t bn_tok_vocab_size(const bn_tok *t) { return t->n_ids; }

const char *bn_tok_token(const bn_tok *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_ids ? t->tok_str[id] : NULL;
}

int32_t bn_tok_token_id(const bn_tok *t, const char *s)
{
    return sm_get(&t->all_map, s, strlen(s));
}

bn_tok_type bn_tok_get_type(const bn_tok *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_ids ? (bn_tok_type)t->tok_type[id] : BN_TOK_TYPE_UNUSED;
}

float bn_tok_score(const bn_tok *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_ids ? t->score[id] : 0.0f;
}

size_t bn_tok_n_merges(const bn_tok *t) { return t->n_merges; }
const char *bn_tok_merge(const bn_tok *t, size_t rank) { return rank < t->n_merges ? t->merge_str[rank] : NULL; }
int32_t bn_tok_bos_id(const bn_tok *t) { return t->bos_id; }
int32_t bn_tok_eos_id(const bn_tok *t) { return t->eos_id; }
int32_t bn_tok_unk_id(const bn_tok *t) { return t->unk_id; }
int32_t bn_tok_pad_id(const bn_tok *t) { return t->pad_id; }
int bn_tok_add_bos(const bn_tok *t) { return t->add_bos; }
int bn_tok_add_eos(const bn_tok *t) { return t->add_eos; }
