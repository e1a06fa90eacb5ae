/* cmd_eval.c - `bitnetctl eval MODEL_DIR`: mean NLL and perplexity of a model on text.
 *
 * The input is pre-tokenized ids (--tokens FILE.u16: little-endian uint16) or plain text
 * (--text FILE, encoded with the folder's tokenizer.json when the tokenizer is built in).
 * The stream is cut into non-overlapping windows of --ctx tokens; window w feeds tokens
 * [w*ctx, w*ctx + ctx) from position 0 and is scored on its next ctx tokens, so the
 * result is comparable across tools (llama2.c / HF style, not llama-perplexity's).
 * --ternary scores the ternary model: every linear projection replaced by its absmean
 * ternarization (scale x code), as the compressor produces it.
 * --decoder scores it with the ternary token decoder instead (model/tk_llama.h: packed
 * ternary kernels, int8 activations, KV cache, int8 LM head), token by token: what
 * `generate --ternary` computes. --f16-head: the decoder with its LM head in F16 (as
 * llama.cpp's GGUF keeps it) instead of int8 blocks.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "base/blas.h"
#include "base/clock.h"
#include "base/fsutil.h"
#include "formats/hf.h"
#include "model/llama.h"
#include "model/tk_llama.h"
#include "base/parallel.h"
#include "tokenizer/tokenizer.h"

typedef struct eval_args {
    const char *model, *text, *tokens;
    int ctx, windows, threads, batch;
    bool ternary, json, act_quant, decoder, f16_head;
} eval_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bitnetctl eval MODEL_DIR (--text FILE | --tokens FILE.u16) [--ctx N]\n"
            "       [--windows N] [--ternary] [--act-quant] [--decoder [--f16-head]] [--threads N] [--batch N] [--json]\n"
            "Mean NLL (nats/token) and perplexity over N windows of ctx tokens (default: ctx\n"
            "512 or the model's context if smaller; every full window).\n");
}

static int parse_pos(const char *opt, const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < 1 || v > 1 << 24) {
        bn_cli_errorf("eval: --%s needs a positive integer, got '%s'", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, eval_args *a)
{
    static const struct option opts[] = {
        { "text", required_argument, 0, 'x' },    { "tokens", required_argument, 0, 'k' },
        { "ctx", required_argument, 0, 'c' },     { "windows", required_argument, 0, 'w' },
        { "threads", required_argument, 0, 't' }, { "batch", required_argument, 0, 'b' },
        { "ternary", no_argument, 0, 'q' },       { "act-quant", no_argument, 0, 'a' },
        { "decoder", no_argument, 0, 'd' },      { "f16-head", no_argument, 0, 'F' },      { "json", no_argument, 0, 'j' },          { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    int c, bad = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'x': a->text = optarg; break;
        case 'k': a->tokens = optarg; break;
        case 'c': bad |= parse_pos("ctx", optarg, &a->ctx); break;
        case 'w': bad |= parse_pos("windows", optarg, &a->windows); break;
        case 't': bad |= parse_pos("threads", optarg, &a->threads); break;
        case 'b': bad |= parse_pos("batch", optarg, &a->batch); break;
        case 'q': a->ternary = true; break;
        case 'a': a->act_quant = true; break;
        case 'd': a->decoder = true; break;
        case 'F': a->f16_head = true; break;
        case 'j': a->json = true; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
    }
    if (bad) return 2;
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    a->model = argv[optind];
    if (!a->text == !a->tokens) {
        bn_cli_errorf("eval: give exactly one of --text FILE and --tokens FILE.u16");
        return 2;
    }
    return 0;
}

/* Reads a .u16 token file; every id must be < vocab. */
static int read_tokens(const char *path, int vocab, int32_t **ids, size_t *n, bn_err *err)
{
    int64_t size = bn_fs_file_size(path);
    if (size < 0) return bn_err_set(err, BN_EIO, "%s: cannot read token file", path);
    if (size % 2)
        return bn_err_set(err, BN_EFORMAT, "%s: odd size %lld, not uint16 tokens", path,
                          (long long)size);
    char *buf;
    size_t len;
    int rc = bn_fs_read_file(path, (size_t)size + 1, &buf, &len, err);
    if (rc) return rc;
    *n = len / 2;
    *ids = malloc((*n ? *n : 1) * sizeof **ids);
    if (!*ids) {
        free(buf);
        return bn_err_set(err, BN_ENOMEM, "%s: out of memory", path);
    }
    const unsigned char *b = (const unsigned char *)buf;
    for (size_t i = 0; i < *n; i++) {
        int v = b[2 * i] | b[2 * i + 1] << 8;
        if (v >= vocab) {
            free(buf);
            free(*ids);
            *ids = NULL;
            return bn_err_set(err, BN_EFORMAT, "%s: token %d at index %zu outside vocab %d",
                              path, v, i, vocab);
        }
        (*ids)[i] = v;
    }
    free(buf);
    return 0;
}

/* Encodes a text file with the model folder's tokenizer: paragraphs at blank lines,
 * each with the tokenizer's BOS (the layout of the shared .u16 corpora). */
static int text_tokens(const char *path, const bn_hf_model *hf, int32_t **ids, size_t *n,
                       bn_err *err)
{
    bn_tok *tok;
    int rc = bn_tok_load(hf->dir, &tok, err);
    if (rc) return rc;
    bn_tok_ids v = { 0 };
    rc = bn_tok_encode_file(tok, path, BN_TOK_ADD_SPECIAL, &v, NULL, err);
    bn_tok_free(tok);
    if (rc) {
        bn_tok_ids_free(&v);
        return rc;
    }
    for (size_t i = 0; i < v.n; i++)
        if (v.ids[i] < 0 || v.ids[i] >= hf->cfg.vocab_size) {
            rc = bn_err_set(err, BN_EFORMAT, "%s: token id %d outside the model's vocab %d",
                            path, v.ids[i], hf->cfg.vocab_size);
            bn_tok_ids_free(&v);
            return rc;
        }
    *ids = v.ids; /* ownership moves to the caller (free) */
    *n = v.n;
    return 0;
}

static void print_result(const eval_args *a, const bn_llama_eval_result *r, int ctx,
                         double secs)
{
    if (a->json) {
        printf("{\"mean_nll\": %.6f, \"perplexity\": %.6f, \"tokens\": %llu, \"windows\": %d, "
               "\"ctx\": %d, \"ternary\": %s, \"seconds\": %.3f}\n",
               r->mean_nll, r->perplexity, (unsigned long long)r->tokens, r->windows, ctx,
               a->ternary ? "true" : "false", secs);
        return;
    }
    printf("mean_nll   %.6f nats/token\nperplexity %.4f\ntokens     %llu (%d windows x %d)\n"
           "time       %.2f s (%.0f tokens/s)\n",
           r->mean_nll, r->perplexity, (unsigned long long)r->tokens, r->windows, ctx, secs,
           secs > 0 ? (double)r->tokens / secs : 0.0);
}

int bn_cli_eval(int argc, char **argv)
{
    eval_args a = { 0 };
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    bn_err err = { 0 };
    bn_hf_model *hf = NULL;
    bn_llama *m = NULL;
    bn_tk_llama *tk = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int status = 1;
    char dir[4096];
    if (bn_cli_model_dir("eval", a.model, dir, sizeof dir)) return 1;
    a.model = dir;
    if (bn_hf_open(a.model, &hf, &err)) goto done;
    int ctx = a.ctx ? a.ctx : (hf->cfg.max_seq_len > 0 && hf->cfg.max_seq_len < 512
                                   ? hf->cfg.max_seq_len : 512);
    if (hf->cfg.max_seq_len > 0 && ctx > hf->cfg.max_seq_len) {
        bn_err_set(&err, BN_EINVAL, "eval: --ctx %d exceeds the model's context %d", ctx,
                   hf->cfg.max_seq_len);
        goto done;
    }
    if (a.tokens ? read_tokens(a.tokens, hf->cfg.vocab_size, &ids, &n, &err)
                 : text_tokens(a.text, hf, &ids, &n, &err))
        goto done;
    if (a.f16_head && !a.decoder) {
        bn_err_set(&err, BN_EINVAL, "eval: --f16-head is an option of --decoder");
        goto done;
    }
    if (a.decoder) {
        if (a.act_quant || a.batch) {
            bn_err_set(&err, BN_EINVAL, "eval: --decoder takes neither --act-quant (its activations are int8 "
                       "already) nor --batch");
            goto done;
        }
        if (bn_tk_llama_load(hf, ctx, a.threads ? a.threads : bn_cpu_count(), &tk, &err)) goto done;
        if (a.f16_head && bn_tk_llama_use_f16_head(tk, &err)) goto done;
        if (!a.json)
            printf("decoder    ternary kernels, %s\n", bn_tk_llama_exact(tk) ? "exact codes and scales from the folder"
                                                                            : "quantized now (absmean, per channel, tau 0.5)");
        a.ternary = true;
        double t0 = bn_clock_mono_s();
        bn_llama_eval_result r;
        if (bn_tk_llama_eval_windows(tk, ids, n, ctx, a.windows, &r, &err)) goto done;
        print_result(&a, &r, ctx, bn_clock_mono_s() - t0);
        status = 0;
        goto done;
    }
    if (bn_llama_load(hf, &m, &err)) goto done;
    bn_llama_set_threads(m, a.threads ? a.threads : bn_cpu_count());
    bool packed = false;
    if (a.ternary && bn_llama_ternarize(m, a.model, &packed, &err)) goto done;
    if (a.ternary && !a.json)
        printf("ternary    %s\n", packed ? "codes and scales from quantized/model.safetensors"
                                         : "quantized now (absmean, per channel, tau 0.5)");
    m->act_quant = a.act_quant;
    double t0 = bn_clock_mono_s();
    bn_llama_eval_result r;
    if (bn_llama_eval_windows(m, ids, n, ctx, a.windows, a.batch, &r, &err)) goto done;
    print_result(&a, &r, ctx, bn_clock_mono_s() - t0);
    status = 0;
done:
    if (status) bn_cli_errorf("%s", err.msg);
    free(ids);
    bn_tk_llama_free(tk);
    bn_llama_free(m);
    bn_hf_close(hf);
    return status;
}
