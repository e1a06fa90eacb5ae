/* bench_tokenizer.c - encode/decode throughput of engine/tokenizer/tokenizer.c.
 *
 *   bench_tokenizer TEXTFILE TOKENIZER [TOKENIZER...] [--json FILE]
 *
 * For each tokenizer (a model folder or tokenizer.json): load time, then the whole text
 * encoded as one string and decoded back (best of 3), in MB/s and tokens/s, plus a
 * check that decode(encode(text)) == text. Single-threaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer/tokenizer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *json_out = NULL;
    int n = 0;
    const char *paths[32];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) json_out = argv[++i];
        else if (n < 32) paths[n++] = argv[i];
    }
    if (n < 2) {
        fprintf(stderr, "usage: bench_tokenizer TEXTFILE TOKENIZER... [--json FILE]\n");
        return 2;
    }
    FILE *f = fopen(paths[0], "rb");
    if (!f) { perror(paths[0]); return 1; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    if (!text || fread(text, 1, (size_t)len, f) != (size_t)len) { fprintf(stderr, "read failed\n"); return 1; }
    fclose(f);
    text[len] = 0;
    FILE *js = json_out ? fopen(json_out, "w") : NULL;
    if (js) fprintf(js, "[");
    printf("%-48s %8s %10s %10s %12s %10s %s\n", "tokenizer", "load s", "tokens", "enc MB/s",
           "enc tok/s", "dec MB/s", "round-trip");
    for (int k = 1; k < n; k++) {
        bn_tok *tok;
        bn_err err = { 0 };
        double t0 = now();
        if (bn_tok_load(paths[k], &tok, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        double tload = now() - t0, tenc = 1e9, tdec = 1e9;
        bn_tok_ids ids = { 0 };
        char *back = NULL;
        size_t blen = 0;
        for (int rep = 0; rep < 3; rep++) {
            ids.n = 0;
            t0 = now();
            if (bn_tok_encode(tok, text, (size_t)len, 0, &ids, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
            double te = now() - t0;
            if (te < tenc) tenc = te;
            free(back);
            t0 = now();
            if (bn_tok_decode(tok, ids.ids, ids.n, 0, &back, &blen, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
            double td = now() - t0;
            if (td < tdec) tdec = td;
        }
        int ok = blen == (size_t)len && memcmp(back, text, blen) == 0;
        double mb = (double)len / 1e6;
        printf("%-48.48s %8.3f %10zu %10.2f %12.0f %10.2f %s\n", paths[k], tload, ids.n, mb / tenc,
               (double)ids.n / tenc, mb / tdec, ok ? "ok" : "DIFFERS");
        if (js)
            fprintf(js, "%s{\"tokenizer\":\"%s\",\"load_s\":%.4f,\"tokens\":%zu,\"encode_mb_s\":%.3f,"
                        "\"encode_tokens_s\":%.0f,\"decode_mb_s\":%.3f,\"round_trip\":%s}",
                    k > 1 ? "," : "", paths[k], tload, ids.n, mb / tenc, (double)ids.n / tenc, mb / tdec,
                    ok ? "true" : "false");
        free(back);
        bn_tok_ids_free(&ids);
        bn_tok_free(tok);
    }
    if (js) { fprintf(js, "]\n"); fclose(js); }
    free(text);
    return 0;
}
