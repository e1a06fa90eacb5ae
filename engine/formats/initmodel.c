/* initmodel.c - random-weight Llama HF folders (see initmodel.h).
 *
 * Weights come from a counter-based generator (splitmix64 of seed, tensor index and
 * element pair) through Box-Muller, so a tensor's values depend only on the seed and
 * its position: same seed, same bytes. Tensors are generated and converted a chunk at a
 * time and streamed into the safetensors writer; memory stays at one chunk.
 * The tokenizer is GPT-2 style byte-level BPE: each byte is a token spelled with the
 * usual printable-unicode byte alphabet, plus a few English merges.
 */
#include "formats/initmodel.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/fsutil.h"
#include "formats/hf.h"
#include "formats/safetensors.h"

int bn_initmodel_shape(const char *name, bn_init_spec *s)
{
    memset(s, 0, sizeof *s);
    s->dtype = BN_DTYPE_F32;
    s->seed = 42;
    if (!strcmp(name, "tiny")) {
        *s = (bn_init_spec){ 128, 384, 4, 4, 4, 512, 512, false, BN_DTYPE_F32, 42, BN_ARCH_LLAMA };
    } else if (!strcmp(name, "25m")) {
        *s = (bn_init_spec){ 512, 1536, 8, 8, 8, 8192, 1024, false, BN_DTYPE_F32, 42, BN_ARCH_LLAMA };
    } else if (!strcmp(name, "tinyllama-1.1b")) {
        *s = (bn_init_spec){ 2048, 5632, 22, 32, 4, 32000, 2048, false, BN_DTYPE_F16, 42, BN_ARCH_LLAMA };
    } else {
        return -1;
    }
    return 0;
}

uint64_t bn_initmodel_params(const bn_init_spec *s)
{
    uint64_t D = (uint64_t)s->dim, hd = D / (uint64_t)s->heads, F = (uint64_t)s->hidden, V = (uint64_t)s->vocab;
    uint64_t per_layer = 2 * D + D * hd * (uint64_t)s->heads * 2 + 2 * D * hd * (uint64_t)s->kv_heads + 3 * D * F;
    if (s->arch == BN_ARCH_QWEN2) per_layer += hd * ((uint64_t)s->heads + 2 * (uint64_t)s->kv_heads);
    if (s->arch == BN_ARCH_QWEN3) per_layer += 2 * hd;
    return V * D * (s->tied ? 1 : 2) + D + per_layer * (uint64_t)s->layers;
}

/* ---- tokenizer ------------------------------------------------------------------- */

static const char *const merges[][2] = {
    { "\xc4\xa0", "t" }, { "h", "e" }, { "\xc4\xa0", "a" }, { "i", "n" }, { "\xc4\xa0t", "he" },
    { "e", "r" }, { "o", "n" }, { "\xc4\xa0", "s" }, { "e", "d" }, { "\xc4\xa0", "w" },
    { "o", "u" }, { "a", "n" }, { "\xc4\xa0", "o" }, { "i", "s" }, { "\xc4\xa0", "b" },
    { "a", "t" }, { "\xc4\xa0", "c" }, { "i", "t" }, { "e", "n" }, { "\xc4\xa0", "h" },
};
#define N_MERGES (int)(sizeof merges / sizeof merges[0])
#define N_SPECIAL 3

int bn_initmodel_tokenizer_size(void) { return N_SPECIAL + 256 + N_MERGES; }

/* GPT-2 byte alphabet: printable bytes stand for themselves, the rest map to U+0100.. */
static void byte_token(int b, char out[4])
{
    int cp = b, n = 0;
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (!printable) {
        for (int i = 0; i < b; i++)
            if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xc0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3f)); out[2] = 0; }
}

static cJSON *byte_level(const char *type, bool prefix_space, bool trim)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddBoolToObject(o, "add_prefix_space", prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim);
    cJSON_AddBoolToObject(o, "use_regex", true);
    return o;
}

static char *tokenizer_json(void)
{
    static const char *const special[N_SPECIAL] = { "<unk>", "<s>", "</s>" };
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < N_SPECIAL; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", i);
        cJSON_AddStringToObject(t, "content", special[i]);
        cJSON_AddBoolToObject(t, "single_word", false);
        cJSON_AddBoolToObject(t, "lstrip", false);
        cJSON_AddBoolToObject(t, "rstrip", false);
        cJSON_AddBoolToObject(t, "normalized", false);
        cJSON_AddBoolToObject(t, "special", true);
        cJSON_AddItemToArray(added, t);
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddItemToObject(root, "pre_tokenizer", byte_level("ByteLevel", false, true));
    cJSON_AddItemToObject(root, "post_processor", byte_level("ByteLevel", true, false));
    cJSON_AddItemToObject(root, "decoder", byte_level("ByteLevel", true, true));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", false);
    cJSON_AddBoolToObject(model, "byte_fallback", false);
    cJSON_AddBoolToObject(model, "ignore_merges", false);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    int id = 0;
    for (int i = 0; i < N_SPECIAL; i++) cJSON_AddNumberToObject(vocab, special[i], id++);
    for (int b = 0; b < 256; b++) {
        char tok[4];
        byte_token(b, tok);
        cJSON_AddNumberToObject(vocab, tok, id++);
    }
    cJSON *ml = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < N_MERGES; i++) {
        char m[32], joined[32];
        snprintf(m, sizeof m, "%s %s", merges[i][0], merges[i][1]);
        snprintf(joined, sizeof joined, "%s%s", merges[i][0], merges[i][1]);
        cJSON_AddItemToArray(ml, cJSON_CreateString(m));
        cJSON_AddNumberToObject(vocab, joined, id++);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

/* ---- config ---------------------------------------------------------------------- */

static const char *const arch_names[][2] = {
    [BN_ARCH_LLAMA] = { "llama", "LlamaForCausalLM" }, [BN_ARCH_MISTRAL] = { "mistral", "MistralForCausalLM" },
    [BN_ARCH_QWEN2] = { "qwen2", "Qwen2ForCausalLM" }, [BN_ARCH_QWEN3] = { "qwen3", "Qwen3ForCausalLM" },
};

int bn_initmodel_arch(const char *name, bn_arch *out)
{
    for (size_t i = 0; i < sizeof arch_names / sizeof arch_names[0]; i++)
        if (!strcmp(name, arch_names[i][0])) {
            *out = (bn_arch)i;
            return 0;
        }
    return -1;
}

static char *config_json(const bn_init_spec *s)
{
    cJSON *c = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(arch_names[s->arch][1]));
    cJSON_AddStringToObject(c, "model_type", arch_names[s->arch][0]);
    cJSON_AddNumberToObject(c, "hidden_size", s->dim);
    cJSON_AddNumberToObject(c, "intermediate_size", s->hidden);
    cJSON_AddNumberToObject(c, "num_hidden_layers", s->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", s->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", s->kv_heads);
    cJSON_AddNumberToObject(c, "head_dim", s->dim / s->heads);
    cJSON_AddNumberToObject(c, "vocab_size", s->vocab);
    cJSON_AddNumberToObject(c, "max_position_embeddings", s->ctx);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-5);
    cJSON_AddNumberToObject(c, "rope_theta", 10000.0);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", s->tied);
    cJSON_AddBoolToObject(c, "attention_bias", s->arch == BN_ARCH_QWEN2);
    cJSON_AddBoolToObject(c, "mlp_bias", false);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "bos_token_id", 1);
    cJSON_AddNumberToObject(c, "eos_token_id", 2);
    cJSON_AddStringToObject(c, "torch_dtype", s->dtype == BN_DTYPE_F32 ? "float32" : s->dtype == BN_DTYPE_F16 ? "float16" : "bfloat16");
    cJSON_AddStringToObject(c, "bitnetd_note", "RANDOM WEIGHTS (bitnetctl init-model): not a trained model");
    cJSON_AddNumberToObject(c, "bitnetd_seed", (double)s->seed);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    return text;
}

/* ---- weights --------------------------------------------------------------------- */

/* values [start, start+n) of tensor `ti` into dst (F32) */
static void gen_normal(uint64_t seed, uint64_t ti, uint64_t start, size_t n, float std, float *dst)
{
    uint64_t base = bn_rng_hash(seed ^ (ti * 0x632be59bd9b4e019ull));
    for (size_t i = 0; i < n; i++) {
        uint64_t k = start + i;
        uint64_t r = bn_rng_hash(base + (k >> 1));
        double u1 = ((double)(r >> 11) + 1.0) * 0x1.0p-53;   /* (0, 1] */
        double u2 = (double)(bn_rng_hash(r) >> 11) * 0x1.0p-53;
        double m = sqrt(-2.0 * log(u1));
        double z = (k & 1) ? m * sin(2 * M_PI * u2) : m * cos(2 * M_PI * u2);
        dst[i] = (float)(z * std);
    }
}

/* A tensor's values: mean + N(0, std^2) (std 0: all mean). */
typedef struct { char name[128]; int nd; int64_t shape[2]; float mean, std; } tdesc;

static int stream_tensor(bn_st_writer *w, const bn_init_spec *s, uint64_t ti, uint64_t numel, const tdesc *t,
                         float *fbuf, uint16_t *hbuf, size_t chunk, bn_err *err)
{
    for (uint64_t off = 0; off < numel; off += chunk) {
        size_t n = numel - off < chunk ? (size_t)(numel - off) : chunk;
        if (t->std == 0) for (size_t i = 0; i < n; i++) fbuf[i] = t->mean;
        else {
            gen_normal(s->seed, ti, off, n, t->std, fbuf);
            for (size_t i = 0; i < n; i++) fbuf[i] += t->mean;
        }
        int rc;
        if (s->dtype == BN_DTYPE_F32) {
            rc = bn_st_writer_write(w, fbuf, n * 4, err);
        } else {
            if (s->dtype == BN_DTYPE_F16) bn_f32_to_f16_array(fbuf, hbuf, n);
            else for (size_t i = 0; i < n; i++) hbuf[i] = bn_f32_to_bf16(fbuf[i]);
            rc = bn_st_writer_write(w, hbuf, n * 2, err);
        }
        if (rc) return rc;
    }
    return 0;
}

static int list_tensors(const bn_init_spec *s, tdesc **out, size_t *n)
{
    bn_model_config c = { 0 };
    c.dim = s->dim; c.hidden_dim = s->hidden; c.n_heads = s->heads; c.n_kv_heads = s->kv_heads;
    c.head_dim = s->dim / s->heads; c.vocab_size = s->vocab;
    size_t cap = 3 + (size_t)s->layers * 12, k = 0;
    tdesc *t = calloc(cap, sizeof *t);
    if (!t) return BN_ENOMEM;
    bn_role globals[3] = { BN_ROLE_EMBED, BN_ROLE_FINAL_NORM, BN_ROLE_HEAD };
    static const bn_role per_layer[] = { BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                         BN_ROLE_FFN_NORM, BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN };
    for (int g = 0; g < 3; g++) {
        if (globals[g] == BN_ROLE_HEAD && s->tied) continue;
        bn_hf_name(globals[g], -1, t[k].name, sizeof t[k].name);
        t[k].nd = bn_hf_expected_shape(&c, globals[g], t[k].shape);
        t[k].mean = globals[g] == BN_ROLE_FINAL_NORM ? 1.0f : 0.0f;
        t[k].std = globals[g] == BN_ROLE_FINAL_NORM ? 0.0f : 0.02f;
        k++;
    }
    /* qwen2: q/k/v biases; qwen3: q/k norms (not all 1, so that their weights matter) */
    static const bn_role qwen2_extra[] = { BN_ROLE_BQ, BN_ROLE_BK, BN_ROLE_BV };
    static const bn_role qwen3_extra[] = { BN_ROLE_Q_NORM, BN_ROLE_K_NORM };
    const bn_role *extra = s->arch == BN_ARCH_QWEN2 ? qwen2_extra : s->arch == BN_ARCH_QWEN3 ? qwen3_extra : NULL;
    size_t n_extra = s->arch == BN_ARCH_QWEN2 ? 3 : s->arch == BN_ARCH_QWEN3 ? 2 : 0;
    for (int l = 0; l < s->layers; l++) {
        for (size_t r = 0; r < sizeof per_layer / sizeof per_layer[0]; r++) {
            bn_hf_name(per_layer[r], l, t[k].name, sizeof t[k].name);
            t[k].nd = bn_hf_expected_shape(&c, per_layer[r], t[k].shape);
            bool norm = per_layer[r] == BN_ROLE_ATTN_NORM || per_layer[r] == BN_ROLE_FFN_NORM;
            t[k].mean = norm ? 1.0f : 0.0f;
            t[k].std = norm ? 0.0f : 0.02f;
            k++;
        }
        for (size_t r = 0; r < n_extra; r++) {
            bn_hf_name(extra[r], l, t[k].name, sizeof t[k].name);
            t[k].nd = bn_hf_expected_shape(&c, extra[r], t[k].shape);
            t[k].mean = s->arch == BN_ARCH_QWEN3 ? 1.0f : 0.0f;
            t[k].std = s->arch == BN_ARCH_QWEN3 ? 0.1f : 0.5f;
            k++;
        }
    }
    *out = t;
    *n = k;
    return 0;
}

static int write_weights(const char *path, const bn_init_spec *s, bn_err *err)
{
    tdesc *t;
    size_t n;
    if (list_tensors(s, &t, &n)) return bn_err_set(err, BN_ENOMEM, "out of memory");
    bn_st_writer *w;
    int rc = bn_st_writer_new(path, &w, err);
    if (rc) { free(t); return rc; }
    bn_st_writer_metadata(w, "format", "pt");
    for (size_t i = 0; !rc && i < n; i++) rc = bn_st_writer_declare(w, t[i].name, s->dtype, t[i].nd, t[i].shape, err);
    enum { CHUNK = 1 << 16 };
    float *fbuf = malloc(CHUNK * sizeof *fbuf);
    uint16_t *hbuf = malloc(CHUNK * sizeof *hbuf);
    if (!rc && (!fbuf || !hbuf)) rc = bn_err_set(err, BN_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        uint64_t numel = (uint64_t)t[i].shape[0] * (uint64_t)(t[i].nd == 2 ? t[i].shape[1] : 1);
        rc = stream_tensor(w, s, i, numel, &t[i], fbuf, hbuf, CHUNK, err);
    }
    free(fbuf);
    free(hbuf);
    free(t);
    if (rc) { bn_st_writer_abort(w); return rc; }
    return bn_st_writer_finish(w, err);
}

static int write_text(const char *dir, const char *name, const char *text, bn_err *err)
{
    char p[PATH_MAX];
    if (!bn_fs_join(p, sizeof p, dir, name)) return bn_err_set(err, BN_EINVAL, "%s: path too long", dir);
    if (!text) return bn_err_set(err, BN_ENOMEM, "out of memory");
    return bn_fs_write_atomic(p, text, strlen(text), err);
}

static int check_spec(const bn_init_spec *s, bn_err *err)
{
    if (s->dim < 2 || s->hidden < 1 || s->layers < 1 || s->heads < 1 || s->kv_heads < 1 || s->ctx < 1)
        return bn_err_set(err, BN_EINVAL, "init-model: every size must be positive");
    if (s->dim % s->heads || (s->dim / s->heads) % 2)
        return bn_err_set(err, BN_EINVAL, "init-model: dim %d must be a multiple of heads %d with an even head size",
                          s->dim, s->heads);
    if (s->heads % s->kv_heads)
        return bn_err_set(err, BN_EINVAL, "init-model: heads %d must be a multiple of kv-heads %d", s->heads, s->kv_heads);
    if (s->vocab < bn_initmodel_tokenizer_size())
        return bn_err_set(err, BN_EINVAL, "init-model: vocab %d is smaller than the tokenizer's %d tokens", s->vocab,
                          bn_initmodel_tokenizer_size());
    if (s->dtype != BN_DTYPE_F32 && s->dtype != BN_DTYPE_F16 && s->dtype != BN_DTYPE_BF16)
        return bn_err_set(err, BN_EINVAL, "init-model: dtype must be f32, f16 or bf16");
    return 0;
}

int bn_initmodel_write(const char *out_dir, const bn_init_spec *s, bn_err *err)
{
    int rc = check_spec(s, err);
    if (rc) return rc;
    if (bn_fs_exists(out_dir)) return bn_err_set(err, BN_EINVAL, "%s: already exists", out_dir);
    char tmp[PATH_MAX], p[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.partial", out_dir) >= (int)sizeof tmp)
        return bn_err_set(err, BN_EINVAL, "%s: path too long", out_dir);
    if ((rc = bn_fs_rm_rf(tmp, err)) || (rc = bn_fs_mkdir_p(tmp, err))) return rc;
    char *cfg = config_json(s), *tok = tokenizer_json();
    rc = write_text(tmp, "config.json", cfg, err);
    if (!rc) rc = write_text(tmp, "tokenizer.json", tok, err);
    free(cfg);
    free(tok);
    char small[1024];
    snprintf(small, sizeof small,
             "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\",\n"
             "  \"model_max_length\": %d,\n  \"add_bos_token\": true,\n  \"add_eos_token\": false,\n"
             "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n", s->ctx);
    if (!rc) rc = write_text(tmp, "tokenizer_config.json", small, err);
    if (!rc) rc = write_text(tmp, "special_tokens_map.json",
                             "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\"\n}\n", err);
    snprintf(small, sizeof small,
             "# RANDOM WEIGHTS\n\nMade by `bitnetctl init-model` (seed %llu): a Llama-architecture folder with "
             "random N(0, 0.02) weights and a byte-level BPE tokenizer, for demos, tests and benchmarks. It is not "
             "a trained model and generates noise.\n\n%llu parameters, dim %d, intermediate %d, %d layers, %d heads, "
             "%d kv heads, vocab %d.\n", (unsigned long long)s->seed, (unsigned long long)bn_initmodel_params(s),
             s->dim, s->hidden, s->layers, s->heads, s->kv_heads, s->vocab);
    if (!rc) rc = write_text(tmp, "README.md", small, err);
    if (!rc && !bn_fs_join(p, sizeof p, tmp, "model.safetensors")) rc = bn_err_set(err, BN_EINVAL, "path too long");
    if (!rc) rc = write_weights(p, s, err);
    if (!rc) rc = bn_fs_fsync_dir(tmp, err);
    if (!rc) rc = bn_fs_rename(tmp, out_dir, err);
    if (rc) bn_fs_rm_rf(tmp, NULL);
    return rc;
}
