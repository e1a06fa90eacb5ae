/* calib_text.c - calibration text sources, parsing and the train/eval split (see calib_text.h).
 *
 * Design: every source ends up as a bn_calib_docs list of owned strings; the split is a
 * seeded permutation of document indices, so the same documents and seed always give
 * the same evaluation part. Files are read whole (bounded by BN_CALIB_MAX_BYTES per
 * source) and validated as UTF-8 before any text is used.
 */
#include "stages/calib_text.h"

#include "base/fsutil.h"
#include "base/rng.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const synthetic_templates[5] = {
    "The quick brown fox jumps over the lazy dog. This is a calibration sample for quantization.",
    "In a world of artificial intelligence, models need to be optimized for efficient inference.",
    "Quantization reduces model size by representing weights with fewer bits while maintaining accuracy.",
    "Natural language processing has made significant progress in recent years with transformer models.",
    "Machine learning systems require careful tuning and calibration for optimal performance.",
};

bool bn_calib_utf8_valid(const char *str, size_t len, size_t *bad)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else goto fail;
        for (size_t k = 1; k <= n; k++) {
            if (i + k >= len || (s[i + k] & 0xC0) != 0x80) goto fail;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto fail;
        i += n + 1;
    }
    return true;
fail:
    if (bad) *bad = i;
    return false;
}

void bn_calib_docs_free(bn_calib_docs *d)
{
    for (int i = 0; i < d->n; i++) free(d->text[i]);
    free(d->text);
    memset(d, 0, sizeof *d);
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int bn_calib_docs_add(bn_calib_docs *d, const char *s, size_t len, const char *label,
                      bn_err *err)
{
    size_t bad;
    if (!bn_calib_utf8_valid(s, len, &bad))
        return bn_err_set(err, BN_EFORMAT, "%s: not valid UTF-8 (byte offset %zu)", label, bad);
    while (len && is_space(*s)) { s++; len--; }
    while (len && is_space(s[len - 1])) len--;
    if (memchr(s, 0, len))
        return bn_err_set(err, BN_EFORMAT, "%s: text contains a NUL byte", label);
    if (len < BN_CALIB_MIN_CHARS) {
        d->skipped++;
        return BN_OK;
    }
    if (d->n >= BN_CALIB_MAX_DOCS || d->bytes + len > BN_CALIB_MAX_BYTES) return BN_OK;
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 64;
        char **t = realloc(d->text, (size_t)cap * sizeof *t);
        if (!t) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", label);
        d->text = t;
        d->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return bn_err_set(err, BN_ENOMEM, "%s: out of memory", label);
    memcpy(c, s, len);
    c[len] = 0;
    d->text[d->n++] = c;
    d->bytes += len;
    return BN_OK;
}

/* A blank line: only spaces/tabs/CR between two newlines. */
int bn_calib_parse_text(bn_calib_docs *d, const char *buf, size_t len, const char *label,
                        bn_err *err)
{
    size_t bad;
    if (!bn_calib_utf8_valid(buf, len, &bad))
        return bn_err_set(err, BN_EFORMAT, "%s: not valid UTF-8 (byte offset %zu)", label, bad);
    size_t start = 0, i = 0;
    while (i < len) {
        if (buf[i] != '\n') { i++; continue; }
        size_t j = i + 1;
        while (j < len && (buf[j] == ' ' || buf[j] == '\t' || buf[j] == '\r')) j++;
        if (j < len && buf[j] == '\n') { /* blank line: close the document */
            int rc = bn_calib_docs_add(d, buf + start, i - start, label, err);
            if (rc) return rc;
            while (j < len && is_space(buf[j])) j++;
            start = i = j;
            continue;
        }
        i++;
    }
    if (start < len) return bn_calib_docs_add(d, buf + start, len - start, label, err);
    return BN_OK;
}

int bn_calib_parse_jsonl(bn_calib_docs *d, const char *buf, size_t len, const char *label,
                         bn_err *err)
{
    size_t bad;
    if (!bn_calib_utf8_valid(buf, len, &bad))
        return bn_err_set(err, BN_EFORMAT, "%s: not valid UTF-8 (byte offset %zu)", label, bad);
    size_t pos = 0;
    int line = 0;
    while (pos < len) {
        line++;
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len;
        size_t a = pos;
        while (a < end && is_space(buf[a])) a++;
        if (a < end) {
            cJSON *j = cJSON_ParseWithLength(buf + a, end - a);
            const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "text") : NULL;
            if (!cJSON_IsString(t)) {
                cJSON_Delete(j);
                return bn_err_set(err, BN_EFORMAT, "%s:%d: %s", label, line,
                                  j ? "object has no string \"text\" field" : "not valid JSON");
            }
            int rc = bn_calib_docs_add(d, t->valuestring, strlen(t->valuestring), label, err);
            cJSON_Delete(j);
            if (rc) return rc;
        }
        pos = end + 1;
    }
    return BN_OK;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int bn_calib_read_file(bn_calib_docs *d, const char *path, bn_err *err)
{
    char *buf;
    size_t got;
    uint64_t size;
    int rc = bn_fs_read_head(path, BN_CALIB_MAX_BYTES, &buf, &got, &size, err); /* bounded read */
    if (rc) return rc;
    /* a bounded read may cut a UTF-8 sequence or a line: trim to the last newline */
    if (size > got) {
        while (got && buf[got - 1] != '\n') got--;
    }
    buf[got] = 0;
    rc = ends_with(path, ".jsonl") ? bn_calib_parse_jsonl(d, buf, got, path, err)
                                   : bn_calib_parse_text(d, buf, got, path, err);
    free(buf);
    return rc;
}

int bn_calib_synthetic(bn_calib_docs *d, int n, bn_err *err)
{
    /* Sample i: templates i, i+1, ... (mod 5), 1 + i % 3 of them, joined by a space. */
    char buf[1024];
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        int k = 1 + i % 3;
        for (int j = 0; j < k; j++) {
            const char *t = synthetic_templates[(i + j) % 5];
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", j ? " " : "", t);
        }
        int rc = bn_calib_docs_add(d, buf, len, "synthetic", err);
        if (rc) return rc;
    }
    return BN_OK;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Rounded share of n, at least 1 when the share is positive and room is left. */
static int share(int n, double fraction, int room)
{
    int k = (int)llround(fraction * n);
    if (fraction > 0 && k < 1) k = 1;
    if (k > room) k = room;
    return k < 0 ? 0 : k;
}

int bn_calib_split(int n, double eval_fraction, double select_fraction, uint64_t seed,
                   bn_calib_parts *out, bn_err *err)
{
    memset(out, 0, sizeof *out);
    if (n <= 0) return bn_err_set(err, BN_EINVAL, "calibration: no usable texts");
    if (!(eval_fraction >= 0.0 && eval_fraction < 1.0))
        return bn_err_set(err, BN_EINVAL, "config.calibration.eval_fraction: must be in [0, 1)");
    if (!(select_fraction >= 0.0 && select_fraction < 1.0 && eval_fraction + select_fraction < 1.0))
        return bn_err_set(err, BN_EINVAL, "config.calibration.selection_fraction: must be in [0, 1) "
                          "and leave room for training text beside eval_fraction");
    /* the report split first, then the selection split; training keeps at least one */
    int ne = share(n, eval_fraction, n - 1);
    int ns = share(n, select_fraction, n - 1 - ne);
    int nt = n - ne - ns;
    int *perm = malloc((size_t)n * sizeof *perm);
    int *tr = malloc((size_t)nt * sizeof *tr);
    int *sl = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *sl);
    int *ev = malloc((size_t)(ne > 0 ? ne : 1) * sizeof *ev);
    if (!perm || !tr || !sl || !ev) {
        free(perm); free(tr); free(sl); free(ev);
        return bn_err_set(err, BN_ENOMEM, "calibration split: out of memory");
    }
    for (int i = 0; i < n; i++) perm[i] = i;
    bn_rng_shuffle(perm, n, seed ^ 0x63616c6962ull);
    memcpy(ev, perm, (size_t)ne * sizeof *ev);
    memcpy(sl, perm + ne, (size_t)ns * sizeof *sl);
    memcpy(tr, perm + ne + ns, (size_t)nt * sizeof *tr);
    free(perm);
    qsort(ev, (size_t)ne, sizeof *ev, cmp_int);
    qsort(sl, (size_t)ns, sizeof *sl, cmp_int);
    qsort(tr, (size_t)nt, sizeof *tr, cmp_int);
    *out = (bn_calib_parts){ .train = tr, .n_train = nt, .select = sl, .n_select = ns,
                             .eval = ev, .n_eval = ne };
    return BN_OK;
}

static int cmp_doc(const void *a, const void *b, void *arg)
{
    char *const *t = arg;
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(t[x], t[y]);
    return c ? c : (x > y) - (x < y);
}

int bn_calib_docs_dedup(bn_calib_docs *d, bn_err *err)
{
    if (d->n < 2) return BN_OK;
    int *idx = malloc((size_t)d->n * sizeof *idx);
    bool *drop = calloc((size_t)d->n, sizeof *drop);
    if (!idx || !drop) {
        free(idx); free(drop);
        return bn_err_set(err, BN_ENOMEM, "calibration text: out of memory");
    }
    for (int i = 0; i < d->n; i++) idx[i] = i;
    qsort_r(idx, (size_t)d->n, sizeof *idx, cmp_doc, d->text);
    /* equal texts are adjacent, first occurrence (lowest index) first: drop the others */
    for (int i = 1; i < d->n; i++)
        if (!strcmp(d->text[idx[i]], d->text[idx[i - 1]])) drop[idx[i]] = true;
    int k = 0;
    for (int i = 0; i < d->n; i++) {
        if (drop[i]) {
            d->bytes -= strlen(d->text[i]);
            free(d->text[i]);
            d->duplicates++;
        } else {
            d->text[k++] = d->text[i];
        }
    }
    d->n = k;
    free(idx);
    free(drop);
    return BN_OK;
}

static void event(const bn_progress *pr, const char *level, const char *msg)
{
    if (pr && pr->event) pr->event(pr->ctx, BN_STAGE_CALIBRATE, level, msg);
}

static const char *dataset_name(bn_calib_dataset d)
{
    switch (d) {
    case BN_CALIB_OPENWEBTEXT: return "openwebtext";
    case BN_CALIB_C4: return "c4";
    case BN_CALIB_WIKITEXT: return "wikitext";
    case BN_CALIB_CUSTOM: return "custom";
    case BN_CALIB_SYNTHETIC: return "synthetic";
    default: return "none";
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads <data_dir>/datasets/<name>/ *.txt|*.jsonl in name order. *found = 0 when the
 * folder is missing or holds no such file. */
static int load_named(bn_calib_docs *d, const char *data_dir, const char *name, char *where,
                      size_t wlen, bool *found, bn_err *err)
{
    *found = false;
    if (!data_dir) return BN_OK;
    snprintf(where, wlen, "%s/datasets/%s", data_dir, name);
    DIR *dir = opendir(where);
    if (!dir) return BN_OK;
    char **files = NULL;
    int nf = 0, cap = 0, rc = BN_OK;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.' || !(ends_with(e->d_name, ".txt") || ends_with(e->d_name, ".jsonl")))
            continue;
        if (nf == cap) {
            cap = cap ? cap * 2 : 16;
            char **f = realloc(files, (size_t)cap * sizeof *f);
            if (!f) { rc = bn_err_set(err, BN_ENOMEM, "%s: out of memory", where); break; }
            files = f;
        }
        files[nf] = strdup(e->d_name);
        if (!files[nf]) { rc = bn_err_set(err, BN_ENOMEM, "%s: out of memory", where); break; }
        nf++;
    }
    closedir(dir);
    if (files) qsort(files, (size_t)nf, sizeof *files, cmp_str);
    for (int i = 0; rc == BN_OK && i < nf; i++) {
        char path[4096 + 512];
        snprintf(path, sizeof path, "%s/%s", where, files[i]);
        rc = bn_calib_read_file(d, path, err);
        if (d->n >= BN_CALIB_MAX_DOCS || d->bytes >= BN_CALIB_MAX_BYTES) break;
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    *found = rc == BN_OK && d->n > 0;
    return rc;
}

static int load_custom(const bn_options *opt, bn_calib_docs *d, char *src, size_t slen,
                       char *label, size_t llen, bn_err *err)
{
    const char *path = opt->calibration.path;
    if (path && *path) {
        snprintf(src, slen, "custom (%.400s)", path);
        snprintf(label, llen, "file:%.400s", path);
        int rc = bn_calib_read_file(d, path, err);
        if (rc) return bn_err_prefix(err, "config.calibration.path: ");
        if (d->n == 0)
            return bn_err_set(err, BN_EINVAL,
                              "config.calibration.path: %s holds no text of at least %d characters",
                              path, BN_CALIB_MIN_CHARS);
        return BN_OK;
    }
    if (opt->calibration.n_texts <= 0)
        return bn_err_set(err, BN_EINVAL,
                          "config.calibration.texts: empty custom list (dataset \"custom\" needs "
                          "texts or a path)");
    snprintf(src, slen, "custom (%d inline texts)", opt->calibration.n_texts);
    snprintf(label, llen, "inline:%d texts", opt->calibration.n_texts);
    for (int i = 0; i < opt->calibration.n_texts; i++) {
        char label[64];
        snprintf(label, sizeof label, "config.calibration.texts[%d]", i);
        const char *t = opt->calibration.texts[i] ? opt->calibration.texts[i] : "";
        int rc = bn_calib_docs_add(d, t, strlen(t), label, err);
        if (rc) return rc;
    }
    if (d->n == 0)
        return bn_err_set(err, BN_EINVAL,
                          "config.calibration.texts: every text is shorter than %d characters",
                          BN_CALIB_MIN_CHARS);
    return BN_OK;
}

int bn_calib_load(const bn_options *opt, const char *data_dir, const bn_progress *pr,
                  bn_calib_set *out, bn_err *err)
{
    memset(out, 0, sizeof *out);
    bn_calib_dataset ds = opt->calibration.dataset;
    int rc = BN_OK;
    char msg[1200], where[4096];
    if (ds == BN_CALIB_CUSTOM) {
        rc = load_custom(opt, &out->docs, out->source, sizeof out->source, out->label,
                         sizeof out->label, err);
    } else if (ds == BN_CALIB_OPENWEBTEXT || ds == BN_CALIB_C4 || ds == BN_CALIB_WIKITEXT) {
        static const bn_calib_dataset chain[3] = {BN_CALIB_OPENWEBTEXT, BN_CALIB_C4,
                                                  BN_CALIB_WIKITEXT};
        int k = ds == BN_CALIB_OPENWEBTEXT ? 0 : ds == BN_CALIB_C4 ? 1 : 2;
        bool found = false;
        for (; k < 3 && !found && rc == BN_OK; k++) {
            const char *name = dataset_name(chain[k]);
            rc = load_named(&out->docs, data_dir, name, where, sizeof where, &found, err);
            if (rc == BN_OK && found) {
                snprintf(out->source, sizeof out->source, "%s (%.400s)", name, where);
                snprintf(out->label, sizeof out->label, "dataset:%s", name);
            } else if (rc == BN_OK) {
                const char *next = k < 2 ? dataset_name(chain[k + 1]) : "synthetic";
                snprintf(msg, sizeof msg,
                         "calibration dataset %s: no usable .txt/.jsonl texts under %s/datasets/%s; "
                         "falling back to %s", name, data_dir ? data_dir : "(no data dir)", name,
                         next);
                event(pr, "warn", msg);
            }
        }
        if (rc == BN_OK && !found) ds = BN_CALIB_SYNTHETIC;
    } else if (ds != BN_CALIB_SYNTHETIC) {
        return bn_err_set(err, BN_EINVAL, "config.calibration.dataset: unknown dataset (%d)",
                          (int)ds);
    }
    if (rc == BN_OK && ds == BN_CALIB_SYNTHETIC) {
        int n = opt->calibration.samples > 0 ? opt->calibration.samples : 256;
        rc = bn_calib_synthetic(&out->docs, n, err);
        out->synthetic = true;
        snprintf(out->label, sizeof out->label, "synthetic");
        snprintf(out->source, sizeof out->source, "synthetic (5 fixed templates, %d samples)", n);
        event(pr, "warn",
              "calibration uses SYNTHETIC text (5 fixed templates): statistics and perplexities "
              "do not reflect real text");
    }
    if (rc == BN_OK) rc = bn_calib_docs_dedup(&out->docs, err);
    if (rc == BN_OK)
        rc = bn_calib_split(out->docs.n, opt->calibration.eval_fraction,
                            opt->calibration.selection_fraction, opt->seed, &out->parts, err);
    if (rc) {
        bn_calib_free(out);
        return rc;
    }
    snprintf(msg, sizeof msg,
             "calibration text: %s: %d distinct documents: %d train, %d selection (best "
             "checkpoint), %d report (every reported figure); %d duplicates and %d texts shorter "
             "than %d characters dropped", out->source, out->docs.n, out->parts.n_train,
             out->parts.n_select, out->parts.n_eval, out->docs.duplicates, out->docs.skipped,
             BN_CALIB_MIN_CHARS);
    event(pr, "info", msg);
    return BN_OK;
}

void bn_calib_free(bn_calib_set *s)
{
    bn_calib_docs_free(&s->docs);
    bn_calib_parts_free(&s->parts);
    memset(s, 0, sizeof *s);
}

void bn_calib_parts_free(bn_calib_parts *p)
{
    free(p->train);
    free(p->select);
    free(p->eval);
    memset(p, 0, sizeof *p);
}
