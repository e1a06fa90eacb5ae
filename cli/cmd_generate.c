/* cmd_generate.c - `bitnetctl generate DIR --prompt TEXT`: continue a prompt with a model,
 * so a person can see whether a compressed model still talks.
 *
 * DIR is a Hugging Face folder: an original model or a bitnetd output folder (its
 * dequantized FP16 model). Default: the FP32 forward (engine/model/llama.h), recomputing the
 * whole sequence per token (fine for short continuations). --ternary: the W1.58A8
 * decoder (engine/model/tk_llama.h): int8 activations x packed ternary weights with a KV cache;
 * an output folder's weights are ternary already and are used exactly, other folders are
 * ternarized on load (the output says which). Greedy (--greedy) or temperature sampling.
 * --json prints ids, text and timing as one object; --logits adds every step's logits
 * (for comparisons with other engines).
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "base/clock.h"
#include "base/vecmath.h"
#include "formats/hf.h"
#include "model/llama.h"
#include "model/tk_llama.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bitnetctl generate MODEL_OR_OUTPUT_DIR --prompt TEXT [-n N] [--greedy] [--ternary]\n"
               "       [--json] [--logits] [--temperature T] [--seed N] [--threads N] [--ignore-eos] [--f16-head]\n"
               "Continues TEXT by N tokens (default 32). --ternary: int8 activations x ternary weights\n"
               "(bitnetd kernels); otherwise the FP32 forward. --logits (with --json): per-step logits.\n"
               "--f16-head (with --ternary): the LM head in F16, as llama.cpp's GGUF has it, not int8.\n");
}

typedef struct gen_opts {
    const char *dir, *prompt;
    int n, threads;
    bool greedy, ternary, json, logits, ignore_eos, f16_head;
    double temperature;
    unsigned long long seed;
} gen_opts;

static int sample(const float *x, int n, double temp, unsigned long long *state)
{
    float mx = x[bn_vargmax(x, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((x[i] - mx) / temp);
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    double r = (double)(*state >> 11) / 9007199254740992.0 * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += exp((x[i] - mx) / temp);
        if (acc >= r) return i;
    }
    return n - 1;
}

/* One forward engine behind two implementations. */
typedef struct engine {
    bn_llama *fp;
    bn_tk_llama *tk;
    int32_t *seq;
    int len, cap;
} engine;

/* Appends token and writes the logits for the next one. */
static int engine_push(engine *e, int32_t tok, float *logits, int V, bn_err *err)
{
    if (e->len >= e->cap) return bn_err_set(err, BN_EINVAL, "generate: sequence longer than %d", e->cap);
    e->seq[e->len++] = tok;
    if (e->tk) return bn_tk_llama_step(e->tk, tok, e->len - 1, logits, err);
    int rc = bn_llama_forward(e->fp, e->seq, 1, e->len, err);
    if (!rc) memcpy(logits, bn_llama_logits(e->fp) + (size_t)(e->len - 1) * V, sizeof(float) * V);
    return rc;
}

static int parse_args(int argc, char **argv, gen_opts *o)
{
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'}, {"greedy", no_argument, 0, 'g'},
        {"ternary", no_argument, 0, 't'},      {"json", no_argument, 0, 'j'},
        {"logits", no_argument, 0, 'L'},       {"temperature", required_argument, 0, 'T'},
        {"seed", required_argument, 0, 's'},   {"threads", required_argument, 0, 'j' + 256},
        {"ignore-eos", no_argument, 0, 'E'},   {"help", no_argument, 0, 'h'},
        {"f16-head", no_argument, 0, 'F'},
        {0, 0, 0, 0},
    };
    *o = (gen_opts){.n = 32, .threads = 1, .temperature = 0.8, .seed = 42};
    optind = 1;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        switch (c) {
        case 'p': o->prompt = optarg; break;
        case 'n':
            o->n = (int)strtol(optarg, &end, 10);
            if (!*optarg || *end || o->n < 1 || o->n > 1 << 20) {
                bn_cli_errorf("generate: -n needs a positive integer, got '%s'", optarg);
                return 2;
            }
            break;
        case 'g': o->greedy = true; break;
        case 't': o->ternary = true; break;
        case 'j': o->json = true; break;
        case 'L': o->logits = true; break;
        case 'E': o->ignore_eos = true; break;
        case 'F': o->f16_head = true; break;
        case 'T':
            o->temperature = strtod(optarg, &end);
            if (!*optarg || *end || !(o->temperature > 0)) {
                bn_cli_errorf("generate: --temperature must be > 0");
                return 2;
            }
            break;
        case 's': o->seed = strtoull(optarg, &end, 10); break;
        case 'j' + 256:
            o->threads = (int)strtol(optarg, &end, 10);
            if (!*optarg || *end || o->threads < 1 || o->threads > 256) {
                bn_cli_errorf("generate: --threads needs 1..256");
                return 2;
            }
            break;
        case 'h': usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !o->prompt) {
        usage(stderr);
        return 2;
    }
    if (o->f16_head && !o->ternary) {
        bn_cli_errorf("generate: --f16-head is an option of --ternary (the FP32 forward's head is FP32)");
        return 2;
    }
    o->dir = argv[optind];
    return 0;
}

static cJSON *ids_json(const int32_t *ids, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* Text of ids that continue the prompt's ids (decoded in its context, so the first
 * piece keeps its leading space); ids the tokenizer does not know (a model vocabulary
 * larger than the tokenizer's) appear as "[id N]" instead of failing the whole decode. */
static char *decode_lenient(const bn_tok *tok, const bn_tok_ids *prompt, const int32_t *ids, int n)
{
    size_t cap = 64, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = 0;
    int32_t tv = (int32_t)bn_tok_vocab_size(tok);
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && ids[j] >= 0 && ids[j] < tv) j++;
        char *piece = NULL, tmp[32];
        const char *add = tmp;
        size_t plen = 0;
        bn_err err;
        if (j > i) {
            /* the first run continues the prompt; a run after an unknown id stands alone */
            size_t npre = i == 0 ? prompt->n : 0;
            if (bn_tok_decode_continuation(tok, prompt->ids, npre, ids + i, (size_t)(j - i), BN_TOK_SKIP_SPECIAL,
                                           &piece, &plen, &err) != 0)
                piece = NULL, plen = 0;
            add = piece ? piece : "";
            i = j;
        } else {
            plen = (size_t)snprintf(tmp, sizeof tmp, "[id %d]", ids[i++]);
        }
        if (len + plen + 1 > cap) {
            while (len + plen + 1 > cap) cap *= 2;
            char *t = realloc(s, cap);
            if (!t) {
                free(piece);
                return s;
            }
            s = t;
        }
        memcpy(s + len, add, plen);
        s[len += plen] = 0;
        free(piece);
    }
    return s;
}

/* JSON needs valid UTF-8: a continuation cut mid-character (random or early models do
 * that) becomes U+FFFD. Returns a new string. */
static char *utf8_valid(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = (p[i + k] & 0xC0) == 0x80;
        if (ok && len == 2) ok = c >= 0xC2;
        if (ok && len == 3) ok = !(c == 0xE0 && p[i + 1] < 0xA0) && !(c == 0xED && p[i + 1] >= 0xA0);
        if (ok && len == 4) ok = !(c == 0xF0 && p[i + 1] < 0x90) && !(c == 0xF4 && p[i + 1] >= 0x90) && c <= 0xF4;
        if (ok) {
            memcpy(out + o, p + i, len);
            o += len, i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3, i++;
        }
    }
    out[o] = 0;
    return out;
}

static void print_result(const gen_opts *o, const bn_tok *tok, const bn_tok_ids *prompt, const int32_t *out,
                         int n_out, const char *weights, double secs, cJSON *logits)
{
    char *text = decode_lenient(tok, prompt, out, n_out);
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o->dir);
        cJSON_AddStringToObject(j, "engine", o->ternary ? "ternary" : "fp32");
        cJSON_AddStringToObject(j, "weights", weights);
        cJSON_AddStringToObject(j, "prompt", o->prompt);
        cJSON_AddItemToObject(j, "prompt_ids", ids_json(prompt->ids, prompt->n));
        cJSON_AddItemToObject(j, "ids", ids_json(out, (size_t)n_out));
        char *valid = utf8_valid(text ? text : "");
        cJSON_AddStringToObject(j, "text", valid ? valid : "");
        free(valid);
        cJSON_AddBoolToObject(j, "greedy", o->greedy);
        cJSON_AddNumberToObject(j, "seconds", secs);
        cJSON_AddNumberToObject(j, "tokens_per_second", secs > 0 ? n_out / secs : 0);
        if (logits) cJSON_AddItemToObject(j, "logits", logits);
        char *s = cJSON_PrintUnformatted(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("%s%s\n", o->prompt, text ? text : "");
        printf("prompt ids:");
        for (size_t i = 0; i < prompt->n; i++) printf(" %d", prompt->ids[i]);
        printf("\ngenerated ids:");
        for (int i = 0; i < n_out; i++) printf(" %d", out[i]);
        printf("\n(%s engine, %s; %d tokens in %.2f s, %.1f tok/s)\n", o->ternary ? "ternary" : "fp32", weights,
               n_out, secs, secs > 0 ? n_out / secs : 0);
        cJSON_Delete(logits);
    }
    free(text);
}

static int run(const gen_opts *o, bn_hf_model *hf, bn_tok *tok)
{
    bn_err err = {0};
    bn_tok_ids prompt = {0};
    int V = hf->cfg.vocab_size, rc = 1;
    if (bn_tok_encode(tok, o->prompt, strlen(o->prompt), BN_TOK_ADD_SPECIAL, &prompt, &err) != 0) {
        bn_cli_errorf("generate: prompt: %s", err.msg);
        return 1;
    }
    if (prompt.n == 0) {
        bn_cli_errorf("generate: the prompt encodes to no tokens");
        bn_tok_ids_free(&prompt);
        return 1;
    }
    engine e = {.cap = (int)prompt.n + o->n};
    e.seq = malloc(sizeof(int32_t) * (size_t)e.cap);
    float *logits = malloc(sizeof(float) * (size_t)V);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)o->n);
    cJSON *jl = o->logits && o->json ? cJSON_CreateArray() : NULL;
    const char *weights = "fp32";
    int n_out = 0;
    double t0 = bn_clock_mono_s();
    int lrc = !e.seq || !logits || !out ? bn_err_set(&err, BN_ENOMEM, "out of memory") : 0;
    if (!lrc && o->ternary) {
        lrc = bn_tk_llama_load(hf, e.cap, o->threads, &e.tk, &err);
        if (!lrc && o->f16_head) lrc = bn_tk_llama_use_f16_head(e.tk, &err);
        if (!lrc) weights = bn_tk_llama_exact(e.tk) ? "ternary (exact codes and scales from the folder)"
                                                     : "ternarized on load (absmean per channel, tau 0.5)";
    } else if (!lrc) {
        lrc = bn_llama_load(hf, &e.fp, &err);
        if (!lrc) bn_llama_set_threads(e.fp, o->threads);
    }
    if (lrc) {
        bn_cli_errorf("generate: %s: %s", o->dir, err.msg);
        goto done;
    }
    t0 = bn_clock_mono_s();
    if (e.tk) { /* the prompt as one batched pass (GEMM), same logits as token by token */
        memcpy(e.seq, prompt.ids, sizeof(int32_t) * prompt.n);
        e.len = (int)prompt.n;
        lrc = bn_tk_llama_prefill(e.tk, e.seq, e.len, 0, logits, &err);
    }
    for (size_t i = 0; !e.tk && i < prompt.n && !lrc; i++) lrc = engine_push(&e, prompt.ids[i], logits, V, &err);
    unsigned long long st = o->seed;
    int32_t eos = bn_tok_eos_id(tok);
    while (!lrc && n_out < o->n) {
        if (jl) {
            cJSON *row = cJSON_CreateArray();
            for (int i = 0; i < V; i++) cJSON_AddItemToArray(row, cJSON_CreateNumber(logits[i]));
            cJSON_AddItemToArray(jl, row);
        }
        int32_t next = o->greedy ? bn_vargmax(logits, V) : sample(logits, V, o->temperature, &st);
        out[n_out++] = next;
        if (next == eos && !o->ignore_eos) break;
        if (n_out < o->n) lrc = engine_push(&e, next, logits, V, &err);
    }
    if (lrc) {
        bn_cli_errorf("generate: %s", err.msg);
        goto done;
    }
    print_result(o, tok, &prompt, out, n_out, weights, bn_clock_mono_s() - t0, jl);
    jl = NULL;
    rc = 0;
done:
    cJSON_Delete(jl);
    bn_tk_llama_free(e.tk);
    bn_llama_free(e.fp);
    free(e.seq), free(logits), free(out);
    bn_tok_ids_free(&prompt);
    return rc;
}

int bn_cli_generate(int argc, char **argv)
{
    gen_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc) return prc < 0 ? 0 : prc;
    bn_err err = {0};
    bn_hf_model *hf = NULL;
    bn_tok *tok = NULL;
    char dir[4096];
    if (bn_cli_model_dir("generate", o.dir, dir, sizeof dir)) return 1;
    o.dir = dir;
    if (bn_hf_open(o.dir, &hf, &err) != 0 || bn_tok_load(o.dir, &tok, &err) != 0) {
        bn_cli_errorf("generate: %s", err.msg);
        bn_hf_close(hf);
        return 1;
    }
    int rc = run(&o, hf, tok);
    bn_tok_free(tok);
    bn_hf_close(hf);
    return rc;
}
