/* tok_regex.c - the regex engine behind the Split and ByteLevel pre-tokenizers.
 *
 * Pre-tokenizer patterns in tokenizer.json are Oniguruma regexes run with
 * leftmost-first (Perl) semantics, and they use a lookahead (\s+(?!\S)), so a DFA will
 * not do. This is a small backtracking matcher in the style of Pike/Thompson bytecode
 * (Russ Cox's "backtrack" VM): the pattern is parsed into an AST, compiled to
 * instructions (CHAR, CLASS, SPLIT with a preferred branch, JMP, LOOK, MATCH), and run
 * over an array of code points with an explicit stack. A lookahead runs its own
 * sub-program at the current position. Counted repeats are unrolled. The caller gives a
 * step budget for a whole scan of a text (bn_tok_re_budget), so a pathological pattern
 * becomes an error instead of a hang; the patterns of GPT-2, Llama-3 and Qwen2 take a
 * few dozen steps per character, far below it.
 */
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unicode/uchar.h>

#define BN_TOK_RE_MAX_DEPTH 64       /* nesting of groups */
#define BN_TOK_RE_MAX_PROG 100000     /* instructions after unrolling counted repeats */

/* ---- character classes ---- */

enum { CI_RANGE, CI_GC, CI_SPACE, CI_ALPHA, CI_WORD };
typedef struct cls_item {
    uint8_t kind, neg;
    uint32_t lo, hi, mask;
} cls_item;
typedef struct cls {
    cls_item *items;
    size_t n, cap;
    int neg, icase;
} cls;

static int item_match(const cls_item *it, uint32_t c)
{
    int r;
    switch (it->kind) {
    case CI_RANGE: r = c >= it->lo && c <= it->hi; break;
    case CI_GC: r = (bn_tok_uc_gc_mask(c) & it->mask) != 0; break;
    case CI_SPACE: r = bn_tok_uc_is_space(c); break;
    case CI_ALPHA: r = bn_tok_uc_is_alphabetic(c); break;
    default: /* CI_WORD: Alphabetic, marks, decimal digits, connector punctuation */
        r = bn_tok_uc_is_alphabetic(c) ||
            (bn_tok_uc_gc_mask(c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
        break;
    }
    return it->neg ? !r : r;
}

static uint32_t ascii_swapcase(uint32_t c)
{
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c >= 'A' && c <= 'Z') return c + 32;
    return c;
}

static int cls_match(const cls *k, uint32_t c)
{
    int r = 0;
    for (size_t i = 0; i < k->n && !r; i++) r = item_match(&k->items[i], c);
    if (!r && k->icase && ascii_swapcase(c) != c) {
        uint32_t d = ascii_swapcase(c);
        for (size_t i = 0; i < k->n && !r; i++) r = item_match(&k->items[i], d);
    }
    return k->neg ? !r : r;
}

/* ---- AST ---- */

enum { N_CHAR, N_ANY, N_CLASS, N_CAT, N_ALT, N_REPEAT, N_LOOK, N_EMPTY };
typedef struct node {
    int type;
    int child, next;   /* first child, next sibling (-1 = none) */
    int min, max;      /* repeat bounds, max -1 = unbounded */
    int greedy, neg, icase;
    uint32_t c;        /* N_CHAR code point; N_CLASS class index */
} node;

enum { OP_CHAR, OP_CHARI, OP_ANY, OP_CLASS, OP_SPLIT, OP_JMP, OP_LOOK, OP_MATCH };
typedef struct inst {
    int op, neg;
    int x, y;
    uint32_t c;
} inst;

struct bn_tok_re {
    inst *prog;
    size_t n, cap;
    cls *classes;
    size_t ncls;
};

typedef struct parser {
    const uint32_t *p;
    size_t n, i;
    const char *src;
    node *nodes;
    size_t nn, ncap;
    cls *classes;
    size_t ncls, clscap;
    int icase;
    int depth;              /* group nesting, bounded so hostile patterns cannot blow the stack */
    bn_err *err;
    int failed;
} parser;

static int perr(parser *ps, int code, const char *what)
{
    if (!ps->failed)
        bn_err_set(ps->err, code, "regex /%s/: %s at character %zu", ps->src, what, ps->i);
    ps->failed = 1;
    return -1;
}

static int new_node(parser *ps, int type)
{
    if (ps->nn == ps->ncap) {
        size_t cap = ps->ncap ? ps->ncap * 2 : 64;
        node *nn = realloc(ps->nodes, cap * sizeof *nn);
        if (!nn) return perr(ps, BN_ENOMEM, "out of memory");
        ps->nodes = nn;
        ps->ncap = cap;
    }
    node *d = &ps->nodes[ps->nn];
    memset(d, 0, sizeof *d);
    d->type = type;
    d->child = d->next = -1;
    d->icase = ps->icase;
    return (int)ps->nn++;
}

static int new_class(parser *ps)
{
    if (ps->ncls == ps->clscap) {
        size_t cap = ps->clscap ? ps->clscap * 2 : 8;
        cls *nc = realloc(ps->classes, cap * sizeof *nc);
        if (!nc) return perr(ps, BN_ENOMEM, "out of memory");
        ps->classes = nc;
        ps->clscap = cap;
    }
    memset(&ps->classes[ps->ncls], 0, sizeof(cls));
    ps->classes[ps->ncls].icase = ps->icase;
    return (int)ps->ncls++;
}

static int cls_add(parser *ps, int k, cls_item it)
{
    cls *c = &ps->classes[k];
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        cls_item *ni = realloc(c->items, cap * sizeof *ni);
        if (!ni) return perr(ps, BN_ENOMEM, "out of memory");
        c->items = ni;
        c->cap = cap;
    }
    c->items[c->n++] = it;
    return 0;
}

static int peek(parser *ps) { return ps->i < ps->n ? (int)ps->p[ps->i] : -1; }

static int hexval(uint32_t c)
{
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* Reads hex digits: exactly `count`, or inside braces when count == 0. */
static int parse_hex(parser *ps, int count, uint32_t *out)
{
    uint32_t v = 0;
    int got = 0;
    if (count == 0) {
        if (peek(ps) != '{') return perr(ps, BN_EFORMAT, "expected {");
        ps->i++;
        while (peek(ps) >= 0 && peek(ps) != '}') {
            int h = hexval(ps->p[ps->i++]);
            if (h < 0 || got >= 6) return perr(ps, BN_EFORMAT, "bad hex escape");
            v = v * 16 + (uint32_t)h;
            got++;
        }
        if (peek(ps) != '}' || !got) return perr(ps, BN_EFORMAT, "bad hex escape");
        ps->i++;
    } else {
        for (; got < count; got++) {
            int h = peek(ps) >= 0 ? hexval(ps->p[ps->i]) : -1;
            if (h < 0) return perr(ps, BN_EFORMAT, "bad hex escape");
            v = v * 16 + (uint32_t)h;
            ps->i++;
        }
    }
    if (v > 0x10FFFF) return perr(ps, BN_EFORMAT, "code point out of range");
    *out = v;
    return 0;
}

/* An escape after '\'. Either a single code point (*is_set = 0, *cp) or a set item. */
static int parse_escape(parser *ps, int *is_set, uint32_t *cp, cls_item *it)
{
    int c = peek(ps);
    if (c < 0) return perr(ps, BN_EFORMAT, "pattern ends after a backslash");
    ps->i++;
    *is_set = 1;
    memset(it, 0, sizeof *it);
    switch (c) {
    case 's': it->kind = CI_SPACE; return 0;
    case 'S': it->kind = CI_SPACE; it->neg = 1; return 0;
    case 'd': it->kind = CI_GC; it->mask = U_GC_ND_MASK; return 0;
    case 'D': it->kind = CI_GC; it->mask = U_GC_ND_MASK; it->neg = 1; return 0;
    case 'w': it->kind = CI_WORD; return 0;
    case 'W': it->kind = CI_WORD; it->neg = 1; return 0;
    case 'p': case 'P': {
        char name[32];
        size_t k = 0;
        if (peek(ps) != '{') return perr(ps, BN_EFORMAT, "expected { after \\p");
        ps->i++;
        while (peek(ps) >= 0 && peek(ps) != '}') {
            if (k + 1 >= sizeof name) return perr(ps, BN_EUNSUPPORTED, "unknown \\p{} property");
            name[k++] = (char)ps->p[ps->i++];
        }
        name[k] = 0;
        if (peek(ps) != '}') return perr(ps, BN_EFORMAT, "unterminated \\p{");
        ps->i++;
        it->neg = c == 'P';
        const char *nm = name[0] == '^' ? name + 1 : name;
        if (name[0] == '^') it->neg = !it->neg;
        if (strcmp(nm, "Alphabetic") == 0 || strcmp(nm, "Alpha") == 0) { it->kind = CI_ALPHA; return 0; }
        if (strcmp(nm, "White_Space") == 0 || strcmp(nm, "Space") == 0) { it->kind = CI_SPACE; return 0; }
        it->kind = CI_GC;
        it->mask = bn_tok_uc_gc_mask_by_name(nm);
        if (!it->mask) {
            char msg[80];
            snprintf(msg, sizeof msg, "unsupported property \\p{%s}", name);
            return perr(ps, BN_EUNSUPPORTED, msg);
        }
        return 0;
    }
    default: break;
    }
    *is_set = 0;
    switch (c) {
    case 'n': *cp = '\n'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case 'a': *cp = 7; return 0;
    case 'e': *cp = 27; return 0;
    case '0': *cp = 0; return 0;
    case 'x': return parse_hex(ps, peek(ps) == '{' ? 0 : 2, cp);
    case 'u': return parse_hex(ps, peek(ps) == '{' ? 0 : 4, cp);
    default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '1' && c <= '9'))
            return perr(ps, BN_EUNSUPPORTED, "unsupported escape (anchor, backreference or class)");
        *cp = (uint32_t)c; /* escaped punctuation stands for itself */
        return 0;
    }
}

static int parse_class(parser *ps)
{
    /* at '[' */
    ps->i++;
    int k = new_class(ps);
    if (k < 0) return -1;
    if (peek(ps) == '^') { ps->classes[k].neg = 1; ps->i++; }
    int first = 1;
    for (;;) {
        int c = peek(ps);
        if (c < 0) return perr(ps, BN_EFORMAT, "unterminated character class");
        if (c == ']' && !first) { ps->i++; break; }
        first = 0;
        if (c == '[') return perr(ps, BN_EUNSUPPORTED, "nested character classes");
        uint32_t lo;
        cls_item it;
        int is_set = 0;
        ps->i++;
        if (c == '\\') {
            if (parse_escape(ps, &is_set, &lo, &it) < 0) return -1;
            if (is_set) { if (cls_add(ps, k, it) < 0) return -1; continue; }
        } else {
            lo = (uint32_t)c;
        }
        uint32_t hi = lo;
        if (peek(ps) == '-' && ps->i + 1 < ps->n && ps->p[ps->i + 1] != ']') {
            ps->i++;
            int d = peek(ps);
            ps->i++;
            if (d == '\\') {
                if (parse_escape(ps, &is_set, &hi, &it) < 0) return -1;
                if (is_set) return perr(ps, BN_EFORMAT, "range ends in a set");
            } else {
                hi = (uint32_t)d;
            }
            if (hi < lo) return perr(ps, BN_EFORMAT, "range out of order");
        }
        cls_item r = { CI_RANGE, 0, lo, hi, 0 };
        if (cls_add(ps, k, r) < 0) return -1;
    }
    int nd = new_node(ps, N_CLASS);
    if (nd < 0) return -1;
    ps->nodes[nd].c = (uint32_t)k;
    return nd;
}

static int parse_alt(parser *ps);

static int parse_atom(parser *ps)
{
    int c = peek(ps);
    if (c == '(') {
        if (++ps->depth > BN_TOK_RE_MAX_DEPTH) return perr(ps, BN_EUNSUPPORTED, "groups nested too deeply");
        ps->i++;
        int saved = ps->icase, look = 0, neg = 0;
        if (peek(ps) == '?') {
            ps->i++;
            int d = peek(ps);
            ps->i++;
            if (d == ':') {
            } else if (d == 'i' && peek(ps) == ':') {
                ps->i++;
                ps->icase = 1;
            } else if (d == '=' || d == '!') {
                look = 1;
                neg = d == '!';
            } else if (d == '>') { /* atomic group: read as a plain group */
            } else {
                return perr(ps, BN_EUNSUPPORTED, "unsupported group kind");
            }
        }
        int inner = parse_alt(ps);
        ps->icase = saved;
        ps->depth--;
        if (inner < 0) return -1;
        if (peek(ps) != ')') return perr(ps, BN_EFORMAT, "missing )");
        ps->i++;
        if (!look) return inner;
        int nd = new_node(ps, N_LOOK);
        if (nd < 0) return -1;
        ps->nodes[nd].child = inner;
        ps->nodes[nd].neg = neg;
        return nd;
    }
    if (c == '[') return parse_class(ps);
    if (c == '.') {
        ps->i++;
        return new_node(ps, N_ANY);
    }
    if (c == '^' || c == '$') return perr(ps, BN_EUNSUPPORTED, "anchors are not supported");
    if (c == '*' || c == '+' || c == '?') return perr(ps, BN_EFORMAT, "quantifier without an atom");
    ps->i++;
    uint32_t cp = (uint32_t)c;
    if (c == '\\') {
        int is_set;
        cls_item it;
        if (parse_escape(ps, &is_set, &cp, &it) < 0) return -1;
        if (is_set) {
            int k = new_class(ps);
            if (k < 0 || cls_add(ps, k, it) < 0) return -1;
            int nd = new_node(ps, N_CLASS);
            if (nd < 0) return -1;
            ps->nodes[nd].c = (uint32_t)k;
            return nd;
        }
    }
    int nd = new_node(ps, N_CHAR);
    if (nd < 0) return -1;
    ps->nodes[nd].c = cp;
    return nd;
}

/* {n}, {n,}, {n,m}, {,m}: returns 1 if a counted quantifier was read, 0 if '{' is literal. */
static int parse_braces(parser *ps, int *min, int *max)
{
    size_t j = ps->i + 1;
    long a = -1, b = -1;
    int comma = 0;
    while (j < ps->n && ps->p[j] >= '0' && ps->p[j] <= '9') {
        a = (a < 0 ? 0 : a) * 10 + (long)(ps->p[j] - '0');
        if (a > 1000) return 0;
        j++;
    }
    if (j < ps->n && ps->p[j] == ',') {
        comma = 1;
        j++;
        while (j < ps->n && ps->p[j] >= '0' && ps->p[j] <= '9') {
            b = (b < 0 ? 0 : b) * 10 + (long)(ps->p[j] - '0');
            if (b > 1000) return 0;
            j++;
        }
    }
    if (j >= ps->n || ps->p[j] != '}' || (a < 0 && b < 0)) return 0;
    *min = a < 0 ? 0 : (int)a;
    *max = comma ? (b < 0 ? -1 : (int)b) : *min;
    ps->i = j + 1;
    return 1;
}

static int parse_repeat(parser *ps)
{
    int atom = parse_atom(ps);
    if (atom < 0) return -1;
    for (int nq = 0;; nq++) {
        if (nq > 4) return perr(ps, BN_EUNSUPPORTED, "too many stacked quantifiers");
        int c = peek(ps), min, max;
        if (c == '*') { min = 0; max = -1; ps->i++; }
        else if (c == '+') { min = 1; max = -1; ps->i++; }
        else if (c == '?') { min = 0; max = 1; ps->i++; }
        else if (c == '{' && parse_braces(ps, &min, &max)) {}
        else break;
        if (max >= 0 && max < min) return perr(ps, BN_EFORMAT, "repeat bounds out of order");
        int greedy = 1;
        if (peek(ps) == '?') { greedy = 0; ps->i++; }
        else if (peek(ps) == '+') { ps->i++; } /* possessive: read as greedy */
        int nd = new_node(ps, N_REPEAT);
        if (nd < 0) return -1;
        ps->nodes[nd].child = atom;
        ps->nodes[nd].min = min;
        ps->nodes[nd].max = max;
        ps->nodes[nd].greedy = greedy;
        atom = nd;
    }
    return atom;
}

static int parse_cat(parser *ps)
{
    int cat = new_node(ps, N_CAT);
    if (cat < 0) return -1;
    int last = -1;
    while (peek(ps) >= 0 && peek(ps) != '|' && peek(ps) != ')') {
        int r = parse_repeat(ps);
        if (r < 0) return -1;
        if (last < 0) ps->nodes[cat].child = r;
        else ps->nodes[last].next = r;
        last = r;
    }
    return cat;
}

static int parse_alt(parser *ps)
{
    int first = parse_cat(ps);
    if (first < 0) return -1;
    if (peek(ps) != '|') return first;
    int alt = new_node(ps, N_ALT);
    if (alt < 0) return -1;
    ps->nodes[alt].child = first;
    int last = first;
    while (peek(ps) == '|') {
        ps->i++;
        int r = parse_cat(ps);
        if (r < 0) return -1;
        ps->nodes[last].next = r;
        last = r;
    }
    return alt;
}

/* ---- code generation ---- */

static int emit(bn_tok_re *re, int op, int x, int y, uint32_t c, int neg)
{
    if (re->n >= BN_TOK_RE_MAX_PROG) return -1;
    if (re->n == re->cap) {
        size_t cap = re->cap ? re->cap * 2 : 64;
        inst *np = realloc(re->prog, cap * sizeof *np);
        if (!np) return -1;
        re->prog = np;
        re->cap = cap;
    }
    re->prog[re->n] = (inst){ op, neg, x, y, c };
    return (int)re->n++;
}

static int nullable(const parser *ps, int nd)
{
    const node *d = &ps->nodes[nd];
    switch (d->type) {
    case N_CHAR: case N_ANY: case N_CLASS: return 0;
    case N_CAT:
        for (int ch = d->child; ch >= 0; ch = ps->nodes[ch].next)
            if (!nullable(ps, ch)) return 0;
        return 1;
    case N_ALT:
        for (int ch = d->child; ch >= 0; ch = ps->nodes[ch].next)
            if (nullable(ps, ch)) return 1;
        return 0;
    case N_REPEAT: return d->min == 0 || nullable(ps, d->child);
    default: return 1;
    }
}

static int gen(bn_tok_re *re, parser *ps, int nd)
{
    const node *d = &ps->nodes[nd];
    switch (d->type) {
    case N_CHAR: {
        int fold = d->icase && ascii_swapcase(d->c) != d->c;
        return emit(re, fold ? OP_CHARI : OP_CHAR, 0, 0, d->c, 0) < 0 ? -1 : 0;
    }
    case N_ANY: return emit(re, OP_ANY, 0, 0, 0, 0) < 0 ? -1 : 0;
    case N_CLASS: return emit(re, OP_CLASS, 0, 0, d->c, 0) < 0 ? -1 : 0;
    case N_CAT:
        for (int ch = d->child; ch >= 0; ch = ps->nodes[ch].next)
            if (gen(re, ps, ch) < 0) return -1;
        return 0;
    case N_ALT: {
        /* split L1, next; L1: a; jmp end; next: split L2, next2; ... last: z; end: */
        int jmps[256], nj = 0;
        for (int ch = d->child; ch >= 0; ch = ps->nodes[ch].next) {
            int last = ps->nodes[ch].next < 0;
            int sp = -1;
            if (!last && (sp = emit(re, OP_SPLIT, 0, 0, 0, 0)) < 0) return -1;
            if (sp >= 0) re->prog[sp].x = (int)re->n;
            if (gen(re, ps, ch) < 0) return -1;
            if (!last) {
                if (nj == 256) return perr(ps, BN_EUNSUPPORTED, "more than 256 alternatives");
                if ((jmps[nj++] = emit(re, OP_JMP, 0, 0, 0, 0)) < 0) return -1;
                re->prog[sp].y = (int)re->n;
            }
        }
        for (int k = 0; k < nj; k++) re->prog[jmps[k]].x = (int)re->n;
        return 0;
    }
    case N_REPEAT: {
        int min = d->min, max = d->max, child = d->child, greedy = d->greedy;
        if (max < 0 && nullable(ps, child))
            return perr(ps, BN_EUNSUPPORTED, "unbounded repeat of an empty-matching group");
        for (int k = 0; k < min; k++)
            if (gen(re, ps, child) < 0) return -1;
        if (max < 0) {
            int sp = emit(re, OP_SPLIT, 0, 0, 0, 0);
            if (sp < 0 || gen(re, ps, child) < 0 || emit(re, OP_JMP, sp, 0, 0, 0) < 0) return -1;
            int body = sp + 1, out = (int)re->n;
            re->prog[sp].x = greedy ? body : out;
            re->prog[sp].y = greedy ? out : body;
            return 0;
        }
        int splits[1001], ns = 0;
        for (int k = min; k < max; k++) {
            int sp = emit(re, OP_SPLIT, 0, 0, 0, 0);
            if (sp < 0) return -1;
            splits[ns++] = sp;
            if (gen(re, ps, child) < 0) return -1;
        }
        int out = (int)re->n;
        for (int k = 0; k < ns; k++) {
            int body = splits[k] + 1;
            re->prog[splits[k]].x = greedy ? body : out;
            re->prog[splits[k]].y = greedy ? out : body;
        }
        return 0;
    }
    case N_LOOK: {
        int lk = emit(re, OP_LOOK, 0, 0, 0, d->neg);
        if (lk < 0 || gen(re, ps, d->child) < 0 || emit(re, OP_MATCH, 0, 0, 0, 0) < 0) return -1;
        re->prog[lk].x = (int)re->n;
        return 0;
    }
    default: return 0;
    }
}

void bn_tok_re_free(bn_tok_re *re)
{
    if (!re) return;
    for (size_t k = 0; k < re->ncls; k++) free(re->classes[k].items);
    free(re->classes);
    free(re->prog);
    free(re);
}

int bn_tok_re_compile(const char *pattern, bn_tok_re **out, bn_err *err)
{
    *out = NULL;
    parser ps = { 0 };
    ps.src = pattern;
    ps.err = err;
    size_t n = 0;
    uint32_t *cps = NULL;
    if (bn_tok_utf8_decode_all(pattern, strlen(pattern), &cps, NULL, &n) != 0)
        return bn_err_set(err, BN_EFORMAT, "regex: pattern is not valid UTF-8");
    ps.p = cps;
    ps.n = n;
    bn_tok_re *re = calloc(1, sizeof *re);
    int rc = BN_ENOMEM;
    if (!re) { bn_err_set(err, rc, "regex: out of memory"); goto fail; }
    int root = parse_alt(&ps);
    if (root >= 0 && ps.i < ps.n) root = perr(&ps, BN_EFORMAT, "unbalanced )");
    if (root < 0 || gen(re, &ps, root) < 0 || emit(re, OP_MATCH, 0, 0, 0, 0) < 0) {
        if (!ps.failed && re->n >= BN_TOK_RE_MAX_PROG)
            bn_err_set(err, BN_EUNSUPPORTED, "regex /%s/: too large after unrolling repeats", pattern);
        else if (!ps.failed)
            bn_err_set(err, BN_ENOMEM, "regex: out of memory");
        rc = err ? err->code : BN_EFORMAT;
        goto fail;
    }
    re->classes = ps.classes;
    re->ncls = ps.ncls;
    free(ps.nodes);
    free(cps);
    *out = re;
    return 0;
fail:
    for (size_t k = 0; k < ps.ncls; k++) free(ps.classes[k].items);
    free(ps.classes);
    free(ps.nodes);
    free(cps);
    if (re) free(re->prog);
    free(re);
    return rc;
}

/* ---- matching ---- */

typedef struct thread { int pc; size_t sp; } thread;
typedef struct vm {
    const bn_tok_re *re;
    const uint32_t *s;
    size_t n;
    thread *st;       /* local[] until it outgrows it, then malloc'd */
    size_t nst, cap;
    long budget;      /* steps left for the caller's whole scan */
    thread local[128];
} vm;

static int push(vm *m, int pc, size_t sp)
{
    if (m->nst == m->cap) {
        size_t cap = m->cap * 2;
        thread *ns = m->st == m->local ? malloc(cap * sizeof *ns)
                                       : realloc(m->st, cap * sizeof *ns);
        if (!ns) return -1;
        if (m->st == m->local) memcpy(ns, m->local, m->nst * sizeof *ns);
        m->st = ns;
        m->cap = cap;
    }
    m->st[m->nst++] = (thread){ pc, sp };
    return 0;
}

/* Returns the end of the first match from pc at sp, -1 none, -2 budget/memory. */
static long run(vm *m, int pc0, size_t sp0)
{
    size_t base = m->nst;
    if (push(m, pc0, sp0) < 0) return -2;
    while (m->nst > base) {
        thread t = m->st[--m->nst];
        int pc = t.pc;
        size_t sp = t.sp;
        for (;;) {
            if (--m->budget < 0) { m->nst = base; return -2; }
            const inst *I = &m->re->prog[pc];
            if (I->op == OP_CHAR) {
                if (sp < m->n && m->s[sp] == I->c) { pc++; sp++; continue; }
                break;
            } else if (I->op == OP_CHARI) {
                if (sp < m->n && (m->s[sp] == I->c || m->s[sp] == ascii_swapcase(I->c))) { pc++; sp++; continue; }
                break;
            } else if (I->op == OP_ANY) {
                if (sp < m->n && m->s[sp] != '\n') { pc++; sp++; continue; }
                break;
            } else if (I->op == OP_CLASS) {
                if (sp < m->n && cls_match(&m->re->classes[I->c], m->s[sp])) { pc++; sp++; continue; }
                break;
            } else if (I->op == OP_SPLIT) {
                if (push(m, I->y, sp) < 0) { m->nst = base; return -2; }
                pc = I->x;
            } else if (I->op == OP_JMP) {
                pc = I->x;
            } else if (I->op == OP_LOOK) {
                long r = run(m, pc + 1, sp);
                if (r == -2) { m->nst = base; return -2; }
                if ((r >= 0) != I->neg) { pc = I->x; continue; }
                break;
            } else { /* OP_MATCH */
                m->nst = base;
                return (long)sp;
            }
        }
    }
    return -1;
}

int bn_tok_re_match_at(const bn_tok_re *re, const uint32_t *s, size_t n, size_t start,
                       size_t *end, long *budget, bn_err *err)
{
    vm m;
    m.re = re;
    m.s = s;
    m.n = n;
    m.st = m.local;
    m.nst = 0;
    m.cap = sizeof m.local / sizeof m.local[0];
    m.budget = *budget;
    long r = run(&m, 0, start);
    *budget = m.budget;
    if (m.st != m.local) free(m.st);
    if (r == -2)
        return bn_err_set(err, BN_EUNSUPPORTED,
                          "regex: backtracking budget exhausted at character %zu "
                          "(the pattern is too expensive for this text)", start),
               -1;
    if (r < 0) return 0;
    *end = (size_t)r;
    return 1;
}

long bn_tok_re_budget(size_t n_chars) { return 100000L + 1000L * (long)n_chars; }
