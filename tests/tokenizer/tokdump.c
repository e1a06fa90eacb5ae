/* tokdump.c - command-line driver of the tokenizer for the cross-checks in
 * tests/tokenizer (compare_js.mjs runs it beside transformers.js).
 *
 *   tokdump encode TOKENIZER [--special] [--split-special]
 *       stdin: one JSON string per line; stdout: one JSON object per line,
 *       {"ids": [...], "text": decode(ids), "text_skip": decode(ids, skip special)}
 *       or {"error": "..."}.
 *   tokdump file TOKENIZER TEXTFILE
 *       encodes TEXTFILE with bn_tok_encode_file (BOS per paragraph as configured) and
 *       prints one line of space-separated ids per paragraph.
 *   tokdump continue TOKENIZER
 *       stdin: one JSON object per line, {"prompt": TEXT, "ids": [continuation ids]};
 *       stdout: {"prompt_ids": encode(prompt, special), "text": the continuation as
 *       bitnetctl generate prints it (bn_tok_decode_continuation, skip special)}.
 *   tokdump info TOKENIZER
 *       prints the vocabulary facts (kind, pre, sizes, special ids) as JSON.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static int cmd_encode(const bn_tok *tok, unsigned flags)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        cJSON *in = cJSON_ParseWithLength(line, (size_t)n);
        cJSON *o = cJSON_CreateObject();
        bn_err err = { 0 };
        bn_tok_ids ids = { 0 };
        if (!cJSON_IsString(in)) {
            cJSON_AddStringToObject(o, "error", "input line is not a JSON string");
        } else if (bn_tok_encode(tok, in->valuestring, strlen(in->valuestring), flags, &ids, &err)) {
            cJSON_AddStringToObject(o, "error", err.msg);
        } else {
            cJSON *arr = cJSON_AddArrayToObject(o, "ids");
            for (size_t i = 0; i < ids.n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids.ids[i]));
            char *txt;
            size_t tl;
            if (bn_tok_decode(tok, ids.ids, ids.n, 0, &txt, &tl, &err) == 0) {
                cJSON_AddStringToObject(o, "text", txt);
                free(txt);
            }
            if (bn_tok_decode(tok, ids.ids, ids.n, BN_TOK_SKIP_SPECIAL, &txt, &tl, &err) == 0) {
                cJSON_AddStringToObject(o, "text_skip", txt);
                free(txt);
            }
        }
        char *s = cJSON_PrintUnformatted(o);
        puts(s);
        free(s);
        cJSON_Delete(o);
        cJSON_Delete(in);
        bn_tok_ids_free(&ids);
    }
    free(line);
    return 0;
}

static int cmd_file(const bn_tok *tok, const char *path)
{
    bn_tok_ids ids = { 0 }, starts = { 0 };
    bn_err err = { 0 };
    if (bn_tok_encode_file(tok, path, BN_TOK_ADD_SPECIAL, &ids, &starts, &err)) {
        fprintf(stderr, "tokdump: %s\n", err.msg);
        return 1;
    }
    for (size_t d = 0; d < starts.n; d++) {
        size_t a = (size_t)starts.ids[d], b = d + 1 < starts.n ? (size_t)starts.ids[d + 1] : ids.n;
        for (size_t i = a; i < b; i++) printf(i > a ? " %d" : "%d", ids.ids[i]);
        putchar('\n');
    }
    bn_tok_ids_free(&ids);
    bn_tok_ids_free(&starts);
    return 0;
}

static int cmd_continue(const bn_tok *tok)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        cJSON *in = cJSON_ParseWithLength(line, (size_t)n);
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(in, "prompt");
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(in, "ids");
        cJSON *o = cJSON_CreateObject();
        bn_err err = { 0 };
        bn_tok_ids p = { 0 };
        int nc = cJSON_GetArraySize(arr);
        int32_t *c = malloc(sizeof(int32_t) * (size_t)(nc + 1));
        for (int i = 0; i < nc; i++) c[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
        char *txt = NULL;
        size_t tl;
        if (!cJSON_IsString(pr) || !cJSON_IsArray(arr)) {
            cJSON_AddStringToObject(o, "error", "input line is not {\"prompt\": text, \"ids\": [...]}");
        } else if (bn_tok_encode(tok, pr->valuestring, strlen(pr->valuestring), BN_TOK_ADD_SPECIAL, &p, &err) ||
                   bn_tok_decode_continuation(tok, p.ids, p.n, c, (size_t)nc, BN_TOK_SKIP_SPECIAL, &txt, &tl, &err)) {
            cJSON_AddStringToObject(o, "error", err.msg);
        } else {
            cJSON *pa = cJSON_AddArrayToObject(o, "prompt_ids");
            for (size_t i = 0; i < p.n; i++) cJSON_AddItemToArray(pa, cJSON_CreateNumber(p.ids[i]));
            cJSON_AddStringToObject(o, "text", txt);
        }
        char *s = cJSON_PrintUnformatted(o);
        puts(s);
        free(s);
        free(txt);
        free(c);
        cJSON_Delete(o);
        cJSON_Delete(in);
        bn_tok_ids_free(&p);
    }
    free(line);
    return 0;
}

static int cmd_info(const bn_tok *tok)
{
    printf("{\"model\":\"%s\",\"pre\":\"%s\",\"vocab_size\":%zu,\"merges\":%zu,"
           "\"bos\":%d,\"eos\":%d,\"unk\":%d,\"pad\":%d,\"add_bos\":%d,\"add_eos\":%d}\n",
           bn_tok_model_name(tok), bn_tok_pre_name(tok), bn_tok_vocab_size(tok),
           bn_tok_n_merges(tok), bn_tok_bos_id(tok), bn_tok_eos_id(tok), bn_tok_unk_id(tok),
           bn_tok_pad_id(tok), bn_tok_add_bos(tok), bn_tok_add_eos(tok));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tokdump encode|file|continue|info TOKENIZER [args]\n");
        return 2;
    }
    bn_tok *tok;
    bn_err err = { 0 };
    if (bn_tok_load(argv[2], &tok, &err)) {
        fprintf(stderr, "tokdump: %s\n", err.msg);
        return 1;
    }
    int rc = 2;
    if (strcmp(argv[1], "encode") == 0) {
        unsigned flags = 0;
        for (int i = 3; i < argc; i++) {
            if (strcmp(argv[i], "--special") == 0) flags |= BN_TOK_ADD_SPECIAL;
            else if (strcmp(argv[i], "--split-special") == 0) flags |= BN_TOK_SPLIT_SPECIAL;
        }
        rc = cmd_encode(tok, flags);
    } else if (strcmp(argv[1], "file") == 0 && argc == 4) {
        rc = cmd_file(tok, argv[3]);
    } else if (strcmp(argv[1], "continue") == 0) {
        rc = cmd_continue(tok);
    } else if (strcmp(argv[1], "info") == 0) {
        rc = cmd_info(tok);
    } else {
        fprintf(stderr, "tokdump: unknown command %s\n", argv[1]);
    }
    bn_tok_free(tok);
    return rc;
}
