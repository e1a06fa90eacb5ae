/* hf.c - a Hugging Face Llama-family folder (see hf.h).
 *
 * config.json is parsed with cJSON into bn_model_config with the defaults each
 * model_type has in transformers (llama, mistral, qwen2, qwen3); every present field is type
 * checked and errors name the file and key. bn_hf_open then opens the weights (single
 * file or shards), maps each tensor name to a role and checks that every tensor the
 * config implies exists with the shape it implies.
 */
#include "formats/hf.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"

static const char *const role_names[BN_ROLE_COUNT] = {
    "embed", "attn_norm", "wq", "wk", "wv", "wo", "bq", "bk", "bv",
    "ffn_norm", "w_gate", "w_up", "w_down", "final_norm", "head", "q_norm", "k_norm", "other",
};

/* HF name suffix after "model.layers.N." for per-layer roles */
static const char *const layer_suffix[BN_ROLE_COUNT] = {
    [BN_ROLE_ATTN_NORM] = "input_layernorm.weight",
    [BN_ROLE_WQ] = "self_attn.q_proj.weight",
    [BN_ROLE_WK] = "self_attn.k_proj.weight",
    [BN_ROLE_WV] = "self_attn.v_proj.weight",
    [BN_ROLE_WO] = "self_attn.o_proj.weight",
    [BN_ROLE_BQ] = "self_attn.q_proj.bias",
    [BN_ROLE_BK] = "self_attn.k_proj.bias",
    [BN_ROLE_BV] = "self_attn.v_proj.bias",
    [BN_ROLE_FFN_NORM] = "post_attention_layernorm.weight",
    [BN_ROLE_W_GATE] = "mlp.gate_proj.weight",
    [BN_ROLE_W_UP] = "mlp.up_proj.weight",
    [BN_ROLE_W_DOWN] = "mlp.down_proj.weight",
    [BN_ROLE_Q_NORM] = "self_attn.q_norm.weight",
    [BN_ROLE_K_NORM] = "self_attn.k_norm.weight",
};

bool bn_role_is_linear(bn_role r)
{
    return r == BN_ROLE_WQ || r == BN_ROLE_WK || r == BN_ROLE_WV || r == BN_ROLE_WO ||
           r == BN_ROLE_W_GATE || r == BN_ROLE_W_UP || r == BN_ROLE_W_DOWN;
}

const char *bn_role_name(bn_role r)
{
    return (unsigned)r < BN_ROLE_COUNT ? role_names[r] : "?";
}

bn_role bn_hf_role_of(const char *name, int *layer)
{
    if (layer) *layer = -1;
    if (!strcmp(name, "model.embed_tokens.weight")) return BN_ROLE_EMBED;
    if (!strcmp(name, "model.norm.weight")) return BN_ROLE_FINAL_NORM;
    if (!strcmp(name, "lm_head.weight")) return BN_ROLE_HEAD;
    const char *pre = "model.layers.";
    size_t np = strlen(pre);
    if (strncmp(name, pre, np)) return BN_ROLE_OTHER;
    const char *p = name + np;
    if (*p < '0' || *p > '9') return BN_ROLE_OTHER;
    long l = 0;
    while (*p >= '0' && *p <= '9' && l < 1000000) l = l * 10 + (*p++ - '0');
    if (*p != '.') return BN_ROLE_OTHER;
    p++;
    for (int r = 0; r < BN_ROLE_COUNT; r++) {
        if (layer_suffix[r] && !strcmp(p, layer_suffix[r])) {
            if (layer) *layer = (int)l;
            return (bn_role)r;
        }
    }
    return BN_ROLE_OTHER;
}

const char *bn_hf_name(bn_role r, int layer, char *buf, size_t len)
{
    switch (r) {
    case BN_ROLE_EMBED: snprintf(buf, len, "model.embed_tokens.weight"); break;
    case BN_ROLE_FINAL_NORM: snprintf(buf, len, "model.norm.weight"); break;
    case BN_ROLE_HEAD: snprintf(buf, len, "lm_head.weight"); break;
    default:
        if ((unsigned)r >= BN_ROLE_COUNT || !layer_suffix[r]) { snprintf(buf, len, "?"); break; }
        snprintf(buf, len, "model.layers.%d.%s", layer, layer_suffix[r]);
    }
    return buf;
}

/* ---- config.json ----------------------------------------------------------------- */

typedef struct { const char *file; bn_err *err; int rc; } cfgctx;

static int get_int(cfgctx *c, const cJSON *root, const char *key, int def, bool required, int *out)
{
    if (c->rc) return c->rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return c->rc = bn_err_set(c->err, BN_EFORMAT, "%s: missing '%s'", c->file, key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= 1 && d <= (double)INT_MAX && floor(d) == d))
        return c->rc = bn_err_set(c->err, BN_EFORMAT, "%s: '%s' must be a positive integer", c->file, key);
    *out = (int)d;
    return 0;
}

static int get_float(cfgctx *c, const cJSON *root, const char *key, float def, float *out)
{
    if (c->rc) return c->rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite(v->valuedouble))
        return c->rc = bn_err_set(c->err, BN_EFORMAT, "%s: '%s' must be a positive number", c->file, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int get_bool(cfgctx *c, const cJSON *root, const char *key, bool def, bool *out)
{
    if (c->rc) return c->rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
    if (!cJSON_IsBool(v))
        return c->rc = bn_err_set(c->err, BN_EFORMAT, "%s: '%s' must be true or false", c->file, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* bos/eos: an integer, a list (first element is used) or null/absent (-1). */
static int get_token_id(cfgctx *c, const cJSON *root, const char *key, int *out)
{
    *out = -1;
    if (c->rc) return c->rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (cJSON_IsArray(v)) v = v->child;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > INT_MAX || floor(v->valuedouble) != v->valuedouble)
        return c->rc = bn_err_set(c->err, BN_EFORMAT, "%s: '%s' must be a token id", c->file, key);
    *out = (int)v->valuedouble;
    return 0;
}

/* ---- keys that change the math ------------------------------------------------------------ */

/* A config key whose value would change the model's math in a way the engine does not
 * compute: refused by name and value, never ignored. */
static int refuse(cfgctx *c, const char *key, const char *value, const char *why)
{
    return c->rc = bn_err_set_at(c->err, BN_EUNSUPPORTED, key, "%s is not supported (%s): %s", value, why,
                                 c->file);
}

static const char *value_text(const cJSON *v, char *buf, size_t len)
{
    char *p = cJSON_PrintUnformatted(v);
    snprintf(buf, len, "%s", p ? p : "?");
    free(p);
    return buf;
}

/* hidden_act, mlp_bias, partial_rotary_factor and friends: only their neutral values. */
static int refuse_math_keys(cfgctx *c, const cJSON *root)
{
    char buf[96];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !strcmp(v->valuestring, "silu")))
        return refuse(c, "hidden_act", value_text(v, buf, sizeof buf), "the MLP computes SiLU only");
    v = cJSON_GetObjectItemCaseSensitive(root, "mlp_bias");
    if (cJSON_IsTrue(v)) return refuse(c, "mlp_bias", "true", "MLP biases are not implemented");
    v = cJSON_GetObjectItemCaseSensitive(root, "partial_rotary_factor");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 1.0))
        return refuse(c, "partial_rotary_factor", value_text(v, buf, sizeof buf), "rotary on every dimension only");
    static const char *const softcaps[] = { "attn_logit_softcapping", "final_logit_softcapping" };
    for (size_t i = 0; i < sizeof softcaps / sizeof softcaps[0]; i++) {
        v = cJSON_GetObjectItemCaseSensitive(root, softcaps[i]);
        if (v && !cJSON_IsNull(v)) return refuse(c, softcaps[i], value_text(v, buf, sizeof buf), "no soft-capping");
    }
    return 0;
}

/* Number field of a rope block, with a default; refuses a non-number. */
static int rope_num(cfgctx *c, const cJSON *o, const char *block, const char *key, double def, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite(v->valuedouble)) {
        char at[64];
        snprintf(at, sizeof at, "%s%s%s", block, block[0] ? "." : "", key);
        return c->rc = bn_err_set_at(c->err, BN_EFORMAT, at, "must be a positive number: %s", c->file);
    }
    *out = v->valuedouble;
    return 0;
}

/* yarn's parameters; attention_factor defaults to get_mscale(factor) [/ with mscale and
 * mscale_all_dim, their ratio], get_mscale(s, m) = s <= 1 ? 1 : 0.1 m ln(s) + 1. */
static double yarn_mscale(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * log(s) + 1.0; }

static int parse_yarn(cfgctx *c, const cJSON *o, const char *block, bn_model_config *cfg)
{
    double orig, factor, fast, slow, attn, ms, ms_all;
    if (rope_num(c, o, block, "original_max_position_embeddings", cfg->max_seq_len, &orig) ||
        rope_num(c, o, block, "factor", cfg->max_seq_len / orig, &factor) ||
        rope_num(c, o, block, "beta_fast", 32.0, &fast) || rope_num(c, o, block, "beta_slow", 1.0, &slow) ||
        rope_num(c, o, block, "mscale", 0, &ms) || rope_num(c, o, block, "mscale_all_dim", 0, &ms_all))
        return c->rc;
    double def_attn = ms > 0 && ms_all > 0 ? yarn_mscale(factor, ms) / yarn_mscale(factor, ms_all)
                                           : yarn_mscale(factor, 1.0);
    if (rope_num(c, o, block, "attention_factor", def_attn, &attn)) return c->rc;
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(o, "truncate");
    if (tr && !cJSON_IsNull(tr) && !cJSON_IsBool(tr)) {
        char at[64];
        snprintf(at, sizeof at, "%s.truncate", block);
        return c->rc = bn_err_set_at(c->err, BN_EFORMAT, at, "must be true or false: %s", c->file);
    }
    cfg->rope_type = BN_ROPE_YARN;
    cfg->rope_factor = (float)factor;
    cfg->rope_orig_ctx = (int)orig;
    cfg->rope_beta_fast = (float)fast;
    cfg->rope_beta_slow = (float)slow;
    cfg->rope_attn_factor = (float)attn;
    cfg->rope_truncate = !cJSON_IsFalse(tr);
    return 0;
}

/* rope_theta and the rope type, from either layout transformers writes:
 *   4.x: top-level "rope_theta", "rope_scaling": {"type" | "rope_type", "factor", ...} or null
 *   5.x: "rope_parameters": {"rope_theta", "rope_type", "factor", ...}
 * default, linear, llama3 and yarn are computed (yarn as transformers 5.x: the explicit
 * factor wins over max_position_embeddings / original_max_position_embeddings); every
 * other type is refused by name. */
static int parse_rope(cfgctx *c, const cJSON *root, bn_model_config *cfg)
{
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const char *block = "rope_parameters";
    const cJSON *o = params;
    if (!o || cJSON_IsNull(o)) { o = scaling; block = "rope_scaling"; }
    if (o && !cJSON_IsNull(o) && !cJSON_IsObject(o))
        return c->rc = bn_err_set_at(c->err, BN_EFORMAT, block, "must be an object or null: %s", c->file);
    if (o && cJSON_IsNull(o)) o = NULL;
    double theta;
    if (rope_num(c, root, "", "rope_theta", 10000.0, &theta)) return c->rc;
    if (o && rope_num(c, o, block, "rope_theta", theta, &theta)) return c->rc;
    cfg->rope_theta = (float)theta;
    cfg->rope_type = BN_ROPE_DEFAULT;
    cfg->rope_factor = 1.0f;
    cfg->rope_attn_factor = 1.0f;
    if (!o) return 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_type");
    if (!t || cJSON_IsNull(t)) t = cJSON_GetObjectItemCaseSensitive(o, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    char at[64];
    snprintf(at, sizeof at, "%s.rope_type", block);
    double factor = 1, lo = 1, hi = 4, orig = 8192;
    if (!strcmp(type, "default")) return 0;
    if (!strcmp(type, "linear")) {
        if (rope_num(c, o, block, "factor", 1.0, &factor)) return c->rc;
        cfg->rope_type = BN_ROPE_LINEAR;
        cfg->rope_factor = (float)factor;
        return 0;
    }
    if (!strcmp(type, "llama3")) {
        if (rope_num(c, o, block, "factor", 8.0, &factor) || rope_num(c, o, block, "low_freq_factor", 1.0, &lo) ||
            rope_num(c, o, block, "high_freq_factor", 4.0, &hi) ||
            rope_num(c, o, block, "original_max_position_embeddings", 8192, &orig))
            return c->rc;
        if (!(hi > lo))
            return c->rc = bn_err_set_at(c->err, BN_EFORMAT, block,
                                         "high_freq_factor must exceed low_freq_factor: %s", c->file);
        cfg->rope_type = BN_ROPE_LLAMA3;
        cfg->rope_factor = (float)factor;
        cfg->rope_low_freq_factor = (float)lo;
        cfg->rope_high_freq_factor = (float)hi;
        cfg->rope_orig_ctx = (int)orig;
        return 0;
    }
    if (!strcmp(type, "yarn")) return parse_yarn(c, o, block, cfg);
    return refuse(c, at, type, "rope types default, linear, llama3 and yarn are computed");
}

/* Sliding-window attention (mistral "sliding_window"; qwen2 with "use_sliding_window"):
 * exact as long as no sequence is longer than the window, so the context is capped there. */
static int parse_window(cfgctx *c, const cJSON *root, bn_model_config *cfg)
{
    const cJSON *use = cJSON_GetObjectItemCaseSensitive(root, "use_sliding_window");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    bool active = cfg->arch == BN_ARCH_QWEN2 || cfg->arch == BN_ARCH_QWEN3 ? cJSON_IsTrue(use) : (w && !cJSON_IsNull(w));
    cfg->sliding_window = 0;
    if (!active || !w || cJSON_IsNull(w)) return 0;
    if (!cJSON_IsNumber(w) || w->valuedouble < 1 || w->valuedouble > INT_MAX || floor(w->valuedouble) != w->valuedouble)
        return c->rc = bn_err_set_at(c->err, BN_EFORMAT, "sliding_window", "must be a positive integer: %s", c->file);
    cfg->sliding_window = (int)w->valuedouble;
    if (cfg->max_seq_len > cfg->sliding_window) cfg->max_seq_len = cfg->sliding_window;
    return 0;
}

const char *bn_hf_rope_type_name(bn_rope_type t)
{
    switch (t) {
    case BN_ROPE_LINEAR: return "linear";
    case BN_ROPE_LLAMA3: return "llama3";
    case BN_ROPE_YARN: return "yarn";
    default: return "default";
    }
}


static int parse_root(cfgctx *c, const cJSON *root, bn_model_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) return bn_err_set(c->err, BN_EFORMAT, "%s: missing 'model_type'", c->file);
    const char *t = mt->valuestring;
    if (!strcmp(t, "llama")) cfg->arch = BN_ARCH_LLAMA;
    else if (!strcmp(t, "mistral")) cfg->arch = BN_ARCH_MISTRAL;
    else if (!strcmp(t, "qwen2")) cfg->arch = BN_ARCH_QWEN2;
    else if (!strcmp(t, "qwen3")) cfg->arch = BN_ARCH_QWEN3;
    else return bn_err_set_at(c->err, BN_EUNSUPPORTED, "model_type",
                              "\"%s\" is not supported (llama, mistral, qwen2, qwen3): %s", t, c->file);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", t);
    bool qwen = cfg->arch == BN_ARCH_QWEN2;
    int ctx_default = cfg->arch == BN_ARCH_LLAMA ? 2048 : 32768;
    get_int(c, root, "hidden_size", 0, true, &cfg->dim);
    get_int(c, root, "intermediate_size", 0, true, &cfg->hidden_dim);
    get_int(c, root, "num_hidden_layers", 0, true, &cfg->n_layers);
    get_int(c, root, "num_attention_heads", 0, true, &cfg->n_heads);
    get_int(c, root, "vocab_size", 0, true, &cfg->vocab_size);
    if (c->rc) return c->rc;
    get_int(c, root, "num_key_value_heads", cfg->n_heads, false, &cfg->n_kv_heads);
    bool qwen3 = cfg->arch == BN_ARCH_QWEN3;
    get_int(c, root, "head_dim", qwen3 ? 128 : cfg->dim / cfg->n_heads, false, &cfg->head_dim);
    get_int(c, root, "max_position_embeddings", ctx_default, false, &cfg->max_seq_len);
    get_float(c, root, "rms_norm_eps", 1e-6f, &cfg->rms_norm_eps);
    get_bool(c, root, "tie_word_embeddings", false, &cfg->tied_embeddings);
    get_bool(c, root, "attention_bias", false, &cfg->attention_bias);
    if (!c->rc && cfg->attention_bias && !qwen) /* llama/mistral/qwen3: o_proj gets a bias too */
        return c->rc = refuse(c, "attention_bias", "true", "an o_proj bias is not implemented");
    if (qwen) cfg->attention_bias = true; /* Qwen2 always has q/k/v biases (and no o_proj bias) */
    cfg->qk_norm = qwen3;
    get_token_id(c, root, "bos_token_id", &cfg->bos_id);
    get_token_id(c, root, "eos_token_id", &cfg->eos_id);
    if (c->rc) return c->rc;
    if (parse_rope(c, root, cfg) || refuse_math_keys(c, root) || parse_window(c, root, cfg)) return c->rc;
    if (cfg->head_dim < 1)
        return bn_err_set(c->err, BN_EFORMAT, "%s: hidden_size %d smaller than num_attention_heads %d", c->file,
                          cfg->dim, cfg->n_heads);
    if (cfg->n_heads % cfg->n_kv_heads)
        return bn_err_set(c->err, BN_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                          c->file, cfg->n_heads, cfg->n_kv_heads);
    if (cfg->head_dim % 2)
        return bn_err_set(c->err, BN_EFORMAT, "%s: head_dim %d must be even (rotary embedding)", c->file,
                          cfg->head_dim);
    return 0;
}

int bn_hf_config_parse(const char *json, size_t len, bn_model_config *cfg, bn_err *err)
{
    return bn_hf_config_parse_named(json, len, "config.json", cfg, err);
}

int bn_hf_config_parse_named(const char *json, size_t len, const char *file, bn_model_config *cfg, bn_err *err)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return bn_err_set(err, BN_EFORMAT, "%s: not valid JSON", file);
    cfgctx c = { file, err, 0 };
    int rc = cJSON_IsObject(root) ? parse_root(&c, root, cfg)
                                  : bn_err_set(err, BN_EFORMAT, "%s: not a JSON object", file);
    cJSON_Delete(root);
    return rc;
}

int bn_hf_config_load(const char *path, bn_model_config *cfg, bn_err *err)
{
    char *text;
    size_t len;
    int rc = bn_fs_read_file(path, 16u << 20, &text, &len, err);
    if (rc) return rc;
    rc = bn_hf_config_parse_named(text, len, path, cfg, err);
    free(text);
    return rc;
}

/* ---- the model folder ------------------------------------------------------------- */

/* Expected shape of role r for cfg; returns ndim (0 for roles without a fixed shape). */
int bn_hf_expected_shape(const bn_model_config *c, bn_role r, int64_t shape[2])
{
    int64_t D = c->dim, F = c->hidden_dim, V = c->vocab_size;
    int64_t Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    switch (r) {
    case BN_ROLE_EMBED: case BN_ROLE_HEAD: shape[0] = V; shape[1] = D; return 2;
    case BN_ROLE_ATTN_NORM: case BN_ROLE_FFN_NORM: case BN_ROLE_FINAL_NORM: shape[0] = D; return 1;
    case BN_ROLE_WQ: shape[0] = Q; shape[1] = D; return 2;
    case BN_ROLE_WK: case BN_ROLE_WV: shape[0] = KV; shape[1] = D; return 2;
    case BN_ROLE_WO: shape[0] = D; shape[1] = Q; return 2;
    case BN_ROLE_BQ: shape[0] = Q; return 1;
    case BN_ROLE_BK: case BN_ROLE_BV: shape[0] = KV; return 1;
    case BN_ROLE_Q_NORM: case BN_ROLE_K_NORM: shape[0] = c->head_dim; return 1;
    case BN_ROLE_W_GATE: case BN_ROLE_W_UP: shape[0] = F; shape[1] = D; return 2;
    case BN_ROLE_W_DOWN: shape[0] = D; shape[1] = F; return 2;
    default: return 0;
    }
}

static void shape_str(char *buf, size_t len, int nd, const int64_t *s)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < nd && o < len; i++) o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

static int check_tensor(const bn_hf_model *m, bn_role r, int layer, bn_err *err)
{
    char name[256];
    bn_hf_name(r, layer, name, sizeof name);
    const bn_st_tensor *t = bn_st_set_find(m->weights, name);
    if (!t) return bn_err_set(err, BN_EFORMAT, "%s: missing tensor '%s' (required by config.json)", m->dir, name);
    int64_t want[2];
    int nd = bn_hf_expected_shape(&m->cfg, r, want);
    bool ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[128], exp[128];
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(exp, sizeof exp, nd, want);
        return bn_err_set(err, BN_EFORMAT, "%s: tensor '%s' has shape %s, config.json implies %s", t->file, name,
                          got, exp);
    }
    if (t->dtype != BN_DTYPE_F32 && t->dtype != BN_DTYPE_F16 && t->dtype != BN_DTYPE_BF16)
        return bn_err_set(err, BN_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)", t->file,
                          name, bn_dtype_name(t->dtype));
    return 0;
}

static int check_model(bn_hf_model *m, bn_err *err)
{
    const bn_model_config *c = &m->cfg;
    int rc = check_tensor(m, BN_ROLE_EMBED, -1, err);
    if (!rc) rc = check_tensor(m, BN_ROLE_FINAL_NORM, -1, err);
    if (!rc && (!c->tied_embeddings || bn_st_set_find(m->weights, "lm_head.weight")))
        rc = check_tensor(m, BN_ROLE_HEAD, -1, err);
    static const bn_role per_layer[] = { BN_ROLE_ATTN_NORM, BN_ROLE_WQ, BN_ROLE_WK, BN_ROLE_WV, BN_ROLE_WO,
                                         BN_ROLE_FFN_NORM, BN_ROLE_W_GATE, BN_ROLE_W_UP, BN_ROLE_W_DOWN };
    for (int l = 0; !rc && l < c->n_layers; l++) {
        for (size_t i = 0; !rc && i < sizeof per_layer / sizeof per_layer[0]; i++) rc = check_tensor(m, per_layer[i], l, err);
        if (c->attention_bias)
            for (int r = BN_ROLE_BQ; !rc && r <= BN_ROLE_BV; r++) rc = check_tensor(m, (bn_role)r, l, err);
        if (c->qk_norm) {
            if (!rc) rc = check_tensor(m, BN_ROLE_Q_NORM, l, err);
            if (!rc) rc = check_tensor(m, BN_ROLE_K_NORM, l, err);
        }
    }
    /* tensors of layers beyond num_hidden_layers mean the config and weights disagree */
    for (size_t i = 0; !rc && i < bn_st_set_count(m->weights); i++) {
        const bn_st_tensor *t = bn_st_set_at(m->weights, i);
        int layer;
        bn_hf_role_of(t->name, &layer);
        if (layer >= c->n_layers)
            rc = bn_err_set(err, BN_EFORMAT, "%s: tensor '%s' is beyond num_hidden_layers %d in config.json", t->file,
                            t->name, c->n_layers);
        m->n_params += t->numel;
        m->weight_bytes += t->nbytes;
    }
    return rc;
}

int bn_hf_open(const char *dir, bn_hf_model **out, bn_err *err)
{
    *out = NULL;
    bn_hf_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        return bn_err_set(err, BN_ENOMEM, "out of memory");
    }
    char path[PATH_MAX];
    int rc = bn_fs_join(path, sizeof path, dir, "config.json") ? 0 : bn_err_set(err, BN_EINVAL, "%s: path too long", dir);
    if (!rc) rc = bn_hf_config_load(path, &m->cfg, err);
    if (!rc) rc = bn_st_set_open(dir, &m->weights, err);
    if (!rc) rc = check_model(m, err);
    if (rc) {
        bn_hf_close(m);
        return rc;
    }
    *out = m;
    return 0;
}

void bn_hf_close(bn_hf_model *m)
{
    if (!m) return;
    bn_st_set_close(m->weights);
    free(m->dir);
    free(m);
}

const bn_st_tensor *bn_hf_tensor(const bn_hf_model *m, bn_role r, int layer)
{
    char name[256];
    bn_hf_name(r, layer, name, sizeof name);
    return bn_st_set_find(m->weights, name);
}
