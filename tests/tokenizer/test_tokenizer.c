/* test_tokenizer.c - unit tests of engine/tokenizer/tokenizer.c on small tokenizer.json documents
 * built here: merge order, byte fallback, unk fusing, added/special tokens with
 * lstrip/rstrip, BOS/EOS from the template and from tokenizer_config.json, decoding,
 * byte-level BPE with GPT-2's and Llama-3's pre-tokenizer regexes, NFC, the GGUF
 * facts (types, scores, merges), and precise errors for malformed input.
 * The expected ids follow from each document's own vocab and merge ranks. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_test.h"
#include "tokenizer/tokenizer.h"

/* ---------------------------------------------------------------- SentencePiece-style */

#define SP "\xe2\x96\x81" /* U+2581 */

/* vocab: <unk> <s> </s>, 256 byte pieces (3..258), then the pieces below. */
static const char *sp_pieces[] = { SP, "a", "b", "c", SP "a", "ab", SP "ab", "bc", "<", ">" };
enum { P_SP = 259, P_A, P_B, P_C, P_SPA, P_AB, P_SPAB, P_BC, P_LT, P_GT, P_M /* "<m>" */ };

static char *sp_json(const char *model_extra, const char *merges)
{
    static char buf[65536];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n,
        "{\"version\":\"1.0\",\"added_tokens\":["
        "{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
        "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false},"
        "{\"id\":%d,\"content\":\"<m>\",\"special\":false,\"normalized\":false,"
        "\"lstrip\":true,\"rstrip\":true}],"
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
        "{\"type\":\"Prepend\",\"prepend\":\"" SP "\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"" SP "\"}]},"
        "\"pre_tokenizer\":null,"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
        "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
        "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
        "\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\"" SP "\"},\"content\":\" \"},"
        "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
        "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",%s\"vocab\":{"
        "\"<unk>\":0,\"<s>\":1,\"</s>\":2", P_M, model_extra);
    for (int b = 0; b < 256; b++) n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"<0x%02X>\":%d", b, 3 + b);
    for (size_t i = 0; i < sizeof sp_pieces / sizeof sp_pieces[0]; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"%s\":%zu", sp_pieces[i], 259 + i);
    snprintf(buf + n, sizeof buf - n, "},\"merges\":%s}}", merges);
    return buf;
}

static const char *SP_MERGES = "[\"" SP " a\",\"a b\",\"" SP "a b\",\"b c\"]";
static const char *SP_MODEL = "\"byte_fallback\":true,\"fuse_unk\":true,";

static bn_tok *load(const char *json, const char *cfg)
{
    bn_tok *t = NULL;
    bn_err e = { 0 };
    int rc = bn_tok_load_mem(json, strlen(json), cfg, cfg ? strlen(cfg) : 0, "test.json", &t, &e);
    ck_assert_msg(rc == 0, "load failed: %s", e.msg);
    return t;
}

static void expect(const bn_tok *t, const char *text, unsigned flags, const int32_t *want, size_t nwant)
{
    bn_tok_ids ids = { 0 };
    bn_err e = { 0 };
    ck_assert_msg(bn_tok_encode(t, text, strlen(text), flags, &ids, &e) == 0, "encode: %s", e.msg);
    char got[512] = "", exp[512] = "";
    for (size_t i = 0; i < ids.n; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", ids.ids[i]);
    for (size_t i = 0; i < nwant; i++) snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ", want[i]);
    ck_assert_msg(strcmp(got, exp) == 0, "encode(\"%s\"): got [%s], want [%s]", text, got, exp);
    bn_tok_ids_free(&ids);
}
#define EXPECT(t, text, flags, ...) do { \
    const int32_t w_[] = { __VA_ARGS__ }; expect(t, text, flags, w_, sizeof w_ / sizeof w_[0]); } while (0)

static char *decode(const bn_tok *t, const int32_t *ids, size_t n, unsigned flags)
{
    char *s = NULL;
    size_t len;
    bn_err e = { 0 };
    ck_assert_msg(bn_tok_decode(t, ids, n, flags, &s, &len, &e) == 0, "decode: %s", e.msg);
    ck_assert_uint_eq(strlen(s), len);
    return s;
}

START_TEST(sp_merge_order)
{
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), NULL);
    EXPECT(t, "ab", 0, P_SPAB);                       /* ▁ a (rank 0) then ▁a b (rank 2) */
    EXPECT(t, "bc", 0, P_SP, P_BC);                   /* no merge for (▁, b) */
    EXPECT(t, "a bc", 0, P_SPA, P_SP, P_BC);
    EXPECT(t, "ab", BN_TOK_ADD_SPECIAL, 1, P_SPAB);   /* BOS from the template */
    bn_tok_free(t);
    /* with "a b" ranked first the same text splits differently */
    t = load(sp_json(SP_MODEL, "[\"a b\",\"" SP " a\",\"" SP "a b\"]"), NULL);
    EXPECT(t, "ab", 0, P_SP, P_AB);
    bn_tok_free(t);
}
END_TEST

START_TEST(sp_byte_fallback_and_unk)
{
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), NULL);
    EXPECT(t, "\xc3\xa9", 0, P_SP, 3 + 0xC3, 3 + 0xA9); /* é: not a piece -> its bytes */
    EXPECT(t, "", 0);
    EXPECT(t, "", BN_TOK_ADD_SPECIAL, 1);
    bn_tok_free(t);
    /* without byte fallback: unknown characters become <unk>, fused when adjacent */
    t = load(sp_json("\"byte_fallback\":false,\"fuse_unk\":true,", SP_MERGES), NULL);
    EXPECT(t, "x\xc3\xa9y a", 0, P_SP, 0, P_SPA);
    bn_tok_free(t);
    t = load(sp_json("\"byte_fallback\":false,\"fuse_unk\":false,", SP_MERGES), NULL);
    EXPECT(t, "xy", 0, P_SP, 0, 0);
    bn_tok_free(t);
}
END_TEST

START_TEST(sp_added_tokens)
{
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), NULL);
    /* special tokens are matched in the raw text; each text section is normalized
     * on its own (so gets its own ▁) */
    EXPECT(t, "<s>ab</s>", 0, 1, P_SPAB, 2);
    /* split_special: "<s>" is text: ▁ < then s (byte fallback) then > */
    EXPECT(t, "<s>", BN_TOK_SPLIT_SPECIAL, P_SP, P_LT, 3 + 's', P_GT);
    /* <m> has lstrip and rstrip: the spaces around it disappear */
    EXPECT(t, "ab  <m>  c", 0, P_SPAB, P_M, P_SP, P_C);
    /* <m> is not special: BN_TOK_SPLIT_SPECIAL still matches it */
    EXPECT(t, "a<m>a", BN_TOK_SPLIT_SPECIAL, P_SPA, P_M, P_SPA);
    bn_tok_free(t);
}
END_TEST

START_TEST(sp_config_bos_eos)
{
    const char *cfg = "{\"add_bos_token\":false,\"add_eos_token\":true,"
                      "\"bos_token\":\"<s>\",\"eos_token\":{\"content\":\"</s>\"}}";
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), cfg);
    EXPECT(t, "ab", BN_TOK_ADD_SPECIAL, P_SPAB, 2);
    ck_assert_int_eq(bn_tok_bos_id(t), 1);
    ck_assert_int_eq(bn_tok_eos_id(t), 2);
    ck_assert_int_eq(bn_tok_add_bos(t), 0);
    ck_assert_int_eq(bn_tok_add_eos(t), 1);
    bn_tok_free(t);
}
END_TEST

START_TEST(sp_decode)
{
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), NULL);
    const int32_t a[] = { 1, P_SPAB, P_SP, P_BC, 3 + 0xC3, 3 + 0xA9, 2 };
    char *s = decode(t, a, 7, 0);
    ck_assert_str_eq(s, "<s> ab bc\xc3\xa9</s>");
    free(s);
    s = decode(t, a, 7, BN_TOK_SKIP_SPECIAL);
    ck_assert_str_eq(s, "ab bc\xc3\xa9"); /* the leading space of ▁ab is stripped */
    free(s);
    const char *texts[] = { "ab bc", "a  b\n\xc3\xa9x", " leading", "x" };
    for (size_t i = 0; i < 4; i++) {
        bn_tok_ids ids = { 0 };
        bn_err e = { 0 };
        ck_assert_int_eq(bn_tok_encode(t, texts[i], strlen(texts[i]), BN_TOK_ADD_SPECIAL, &ids, &e), 0);
        s = decode(t, ids.ids, ids.n, BN_TOK_SKIP_SPECIAL);
        ck_assert_str_eq(s, texts[i]);
        free(s);
        bn_tok_ids_free(&ids);
    }
    bn_err e = { 0 };
    const int32_t bad[] = { 5, 9999 };
    size_t len;
    ck_assert_int_eq(bn_tok_decode(t, bad, 2, 0, &s, &len, &e), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "9999"));
    bn_tok_free(t);
}
END_TEST

START_TEST(sp_gguf_facts)
{
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), NULL);
    ck_assert_str_eq(bn_tok_model_name(t), "llama");
    ck_assert_str_eq(bn_tok_pre_name(t), "default");
    ck_assert_uint_eq(bn_tok_vocab_size(t), P_M + 1);
    ck_assert_int_eq(bn_tok_get_type(t, 0), BN_TOK_TYPE_CONTROL); /* <unk> is a special added token */
    ck_assert_int_eq(bn_tok_get_type(t, 1), BN_TOK_TYPE_CONTROL);
    ck_assert_int_eq(bn_tok_get_type(t, 3 + 0x41), BN_TOK_TYPE_BYTE);
    ck_assert_int_eq(bn_tok_get_type(t, P_SPA), BN_TOK_TYPE_NORMAL);
    ck_assert_int_eq(bn_tok_get_type(t, P_M), BN_TOK_TYPE_USER_DEFINED);
    /* merge-derived scores keep the merge order: ▁a (rank 0) > ab (1) > ▁ab (2) > a */
    ck_assert(bn_tok_score(t, P_SPA) > bn_tok_score(t, P_AB));
    ck_assert(bn_tok_score(t, P_AB) > bn_tok_score(t, P_SPAB));
    ck_assert(bn_tok_score(t, P_BC) > bn_tok_score(t, P_A));
    ck_assert_uint_eq(bn_tok_n_merges(t), 4);
    ck_assert_str_eq(bn_tok_merge(t, 2), SP "a b");
    ck_assert_ptr_null(bn_tok_merge(t, 4));
    ck_assert_str_eq(bn_tok_token(t, P_SPAB), SP "ab");
    ck_assert_int_eq(bn_tok_token_id(t, "<m>"), P_M);
    ck_assert_int_eq(bn_tok_token_id(t, "zz"), -1);
    ck_assert_ptr_null(bn_tok_token(t, P_M + 1));
    bn_tok_free(t);
}
END_TEST

/* ---------------------------------------------------------------- byte-level */

/* GPT-2's byte -> character table, written out independently of the engine. */
static unsigned bl_char(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (unsigned)b;
    int n = 0;
    for (int k = 0; k < b; k++)
        if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) n++;
    return 256u + (unsigned)n;
}

static size_t put_utf8(unsigned c, char *o)
{
    if (c < 0x80) { o[0] = (char)c; return 1; }
    o[0] = (char)(0xC0 | (c >> 6));
    o[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

/* vocab: the 256 byte characters (id = byte), then "Ġt" 256, "he" 257, "Ġthe" 258,
 * "ĠĠ" 259, "<|eot|>" 260 (special). pre: a pre-tokenizer JSON. */
static char *bl_json(const char *pre, const char *normalizer)
{
    static char buf[65536];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n,
        "{\"added_tokens\":[{\"id\":260,\"content\":\"<|eot|>\",\"special\":true}],"
        "\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":null,"
        "\"decoder\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{", normalizer, pre);
    for (int b = 0; b < 256; b++) {
        char c[4];
        size_t k = put_utf8(bl_char(b), c);
        if (b == '"' || b == '\\') n += (size_t)snprintf(buf + n, sizeof buf - n, "\"\\%c\":%d,", b, b);
        else n += (size_t)snprintf(buf + n, sizeof buf - n, "\"%.*s\":%d,", (int)k, c, b);
    }
    snprintf(buf + n, sizeof buf - n,
        "\"\xc4\xa0t\":256,\"he\":257,\"\xc4\xa0the\":258,\"\xc4\xa0\xc4\xa0\":259},"
        "\"merges\":[[\"\xc4\xa0\",\"t\"],[\"h\",\"e\"],[\"\xc4\xa0t\",\"he\"],[\"\xc4\xa0\",\"\xc4\xa0\"]]}}");
    return buf;
}

static const char *GPT2_PRE = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}";
static const char *LLAMA3_PRE =
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}";

START_TEST(bl_gpt2)
{
    bn_tok *t = load(bl_json(GPT2_PRE, "null"), NULL);
    ck_assert_str_eq(bn_tok_model_name(t), "gpt2");
    ck_assert_str_eq(bn_tok_pre_name(t), "gpt-2");
    /* "the" has no "t he" merge; " the" merges fully */
    EXPECT(t, "the the", 0, 't', 257, 258);
    /* "  x": \s+(?!\S) leaves the last space to " x"... which has no merge */
    EXPECT(t, "a  x", 0, 'a', ' ', ' ', 'x');
    EXPECT(t, "a   ", 0, 'a', 259, ' ');
    EXPECT(t, "x<|eot|> the", 0, 'x', 260, 258);
    /* raw bytes of a multi-byte character are symbols of their own */
    EXPECT(t, "\xc3\xa9", 0, 0xC3, 0xA9);
    const int32_t ids[] = { 't', 257, 258, 260, 0xC3, 0xA9 };
    char *s = decode(t, ids, 6, 0);
    ck_assert_str_eq(s, "the the<|eot|>\xc3\xa9");
    free(s);
    s = decode(t, ids, 6, BN_TOK_SKIP_SPECIAL);
    ck_assert_str_eq(s, "the the\xc3\xa9");
    free(s);
    ck_assert_str_eq(bn_tok_token(t, 258), "\xc4\xa0the");
    ck_assert_str_eq(bn_tok_merge(t, 0), "\xc4\xa0 t");
    ck_assert_int_eq(bn_tok_get_type(t, 260), BN_TOK_TYPE_CONTROL);
    ck_assert_int_eq(bn_tok_get_type(t, 'a'), BN_TOK_TYPE_NORMAL);
    bn_tok_free(t);
}
END_TEST

START_TEST(bl_llama3_regex)
{
    bn_tok *t = load(bl_json(LLAMA3_PRE, "null"), NULL);
    ck_assert_str_eq(bn_tok_pre_name(t), "llama-bpe");
    /* a run of spaces before a word: all but the last form one piece */
    EXPECT(t, "a   the", 0, 'a', 259, 258);
    /* spaces before a newline go with it: "  \n" is one piece; ĠĠ merges inside it */
    EXPECT(t, "a  \nb", 0, 'a', 259, '\n', 'b');
    /* digits in groups of up to three */
    EXPECT(t, "12345", 0, '1', '2', '3', '4', '5');
    /* the case-insensitive contraction group */
    EXPECT(t, "'T the", 0, '\'', 'T', 258);
    bn_tok_free(t);
}
END_TEST

START_TEST(bl_nfc)
{
    bn_tok *t = load(bl_json(GPT2_PRE, "{\"type\":\"NFC\"}"), NULL);
    /* e + combining acute composes to U+00E9 before byte-level BPE */
    EXPECT(t, "e\xcc\x81", 0, 0xC3, 0xA9);
    bn_tok_free(t);
}
END_TEST

/* ---------------------------------------------------------------- Split behaviours */

/* vocab: a b c ' ' ab "ab " 1 2 12 <unk>; merges: a b, ab ' ', 1 2 */
static char *split_json(const char *pre)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"pre_tokenizer\":%s,\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":"
             "{\"a\":0,\"b\":1,\"c\":2,\" \":3,\"ab\":4,\"ab \":5,\"1\":6,\"2\":7,\"12\":8,\"<unk>\":9},"
             "\"merges\":[\"a b\",[\"ab\",\" \"],\"1 2\"]}}", pre);
    return buf;
}

static void split_case(const char *pre, const char *text, const int32_t *want, size_t n)
{
    bn_tok *t = load(split_json(pre), NULL);
    expect(t, text, 0, want, n);
    bn_tok_free(t);
}
#define SPLIT(pre, text, ...) do { \
    const int32_t w_[] = { __VA_ARGS__ }; split_case(pre, text, w_, sizeof w_ / sizeof w_[0]); } while (0)
#define SPLIT_PRE(behavior, pattern, invert) \
    "{\"type\":\"Split\",\"pattern\":" pattern ",\"behavior\":\"" behavior "\",\"invert\":" invert "}"

START_TEST(split_behaviours)
{
    SPLIT("null", "ab ab", 5, 4);           /* no pre-tokenizer: one word, "ab " forms */
    SPLIT(SPLIT_PRE("Isolated", "{\"String\":\" \"}", "false"), "ab ab", 4, 3, 4);
    SPLIT(SPLIT_PRE("Removed", "{\"String\":\" \"}", "false"), "ab ab", 4, 4);
    SPLIT(SPLIT_PRE("MergedWithPrevious", "{\"String\":\" \"}", "false"), "ab ab", 5, 4);
    SPLIT(SPLIT_PRE("MergedWithNext", "{\"Regex\":\" \"}", "false"), "ab ab", 4, 3, 4);
    SPLIT(SPLIT_PRE("Isolated", "{\"Regex\":\"b\"}", "true"), "ab ab", 1, 1);
    SPLIT("{\"type\":\"Digits\",\"individual_digits\":true}", "a12", 0, 6, 7);
    SPLIT("{\"type\":\"Digits\",\"individual_digits\":false}", "a12", 0, 8);
    SPLIT("{\"type\":\"Digits\"}", "c", 2);
    SPLIT("null", "x", 9);                  /* no byte fallback: <unk> */
    /* Oniguruma (Ruby syntax), as HF tokenizers: lookbehind, possessive repeats, anchors */
    SPLIT(SPLIT_PRE("Isolated", "{\"Regex\":\"(?<=a)b\"}", "false"), "abab", 0, 1, 0, 1);
    SPLIT(SPLIT_PRE("Removed", "{\"Regex\":\"a++a|b\"}", "false"), "aab", 0, 0);
    SPLIT(SPLIT_PRE("Removed", "{\"Regex\":\"^a\"}", "false"), "aba", 1, 0);
    SPLIT(SPLIT_PRE("Isolated", "{\"Regex\":\"(?i:A)\"}", "false"), "ab", 0, 1);
    /* an exponential pattern is stopped by the retry limit with an error, quickly */
    bn_tok *t = load(split_json(SPLIT_PRE("Isolated", "{\"Regex\":\"(a|a)*\\\\d\"}", "false")), NULL);
    bn_tok_ids ids = { 0 };
    bn_err e = { 0 };
    const char *aaa = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab";
    ck_assert_int_eq(bn_tok_encode(t, aaa, strlen(aaa), 0, &ids, &e), BN_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(e.msg, "retry limit"));
    ck_assert_uint_eq(ids.n, 0);
    bn_tok_free(t);
}
END_TEST

/* ---------------------------------------------------------------- errors */

static void expect_load_error(const char *json, const char *cfg, int code, const char *needle)
{
    bn_tok *t = NULL;
    bn_err e = { 0 };
    int rc = bn_tok_load_mem(json, strlen(json), cfg, cfg ? strlen(cfg) : 0, "bad.json", &t, &e);
    ck_assert_msg(rc == code, "want code %d, got %d (%s)", code, rc, e.msg);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "message \"%s\" lacks \"%s\"", e.msg, needle);
}

START_TEST(errors)
{
    expect_load_error("{\"model\": ", NULL, BN_EFORMAT, "invalid JSON");
    expect_load_error("[]", NULL, BN_EFORMAT, "expected a JSON object");
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", NULL, BN_EUNSUPPORTED, "model.type");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", NULL, BN_EFORMAT, "model.vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", NULL,
                      BN_EFORMAT, "model.vocab[\"a\"]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
                      NULL, BN_EFORMAT, "model.merges[0] \"a b\": the merged token");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a  a\"]}}",
                      NULL, BN_EFORMAT, "model.merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}",
                      NULL, BN_EFORMAT, "model.merges[0]");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"}},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      NULL, BN_EFORMAT, "pre_tokenizer.pattern.Regex");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{Foo}\"}},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      NULL, BN_EFORMAT, "invalid character property name {Foo}");
    /* hostile patterns fail cleanly instead of exhausting the stack or memory: Oniguruma's
     * parse depth limit; counted repeats are not unrolled, so a huge one is cheap */
    enum { DEEP = 5000 };
    char *doc = malloc(2 * DEEP + 512) /* k < 256, then 256 more */;
    ck_assert_ptr_nonnull(doc);
    int k = snprintf(doc, 256, "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"");
    memset(doc + k, '(', DEEP);
    memset(doc + k + DEEP, ')', DEEP);
    snprintf(doc + k + 2 * DEEP, 256, "\"}},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}");
    expect_load_error(doc, NULL, BN_EFORMAT, "parse depth limit over");
    free(doc);
    static const char *big[] = { "((a{1000}){1000}){1000}", "(a*)*" };
    for (size_t b = 0; b < 2; b++) {
        char js[512];
        snprintf(js, sizeof js, "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"%s\"}},"
                 "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", big[b]);
        bn_tok *t = load(js, NULL);
        const int32_t want[] = { 0, 0, 0 };
        expect(t, "aaa", 0, want, 3);
        bn_tok_free(t);
    }
    expect_load_error("{\"normalizer\":{\"type\":\"BertNormalizer\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      NULL, BN_EUNSUPPORTED, "normalizer.type");
    expect_load_error("{\"added_tokens\":[{\"id\":1}],"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      NULL, BN_EFORMAT, "added_tokens[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<u>\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                      NULL, BN_EFORMAT, "model.unk_token");
    expect_load_error(sp_json(SP_MODEL, SP_MERGES), "{\"add_bos_token\":\"yes\"}", BN_EFORMAT,
                      "add_bos_token");
    expect_load_error(sp_json(SP_MODEL, SP_MERGES), "{\"bos_token\":\"<nope>\"}", BN_EFORMAT,
                      "tokenizer_config.json: bos_token");

    /* a normalized added token the normalizer erases completely (fuzzer find): loads,
     * and its empty content never matches */
    bn_tok *z = load("{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\"x\"},\"content\":\"\"},"
                     "\"added_tokens\":[{\"id\":1,\"content\":\"x\",\"normalized\":true}],"
                     "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"x\":1},\"merges\":[]}}", NULL);
    EXPECT(z, "axa", 0, 0, 0);
    bn_tok_free(z);

    /* invalid UTF-8 text */
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), NULL);
    bn_tok_ids ids = { 0 };
    bn_err e = { 0 };
    ck_assert_int_eq(bn_tok_encode(t, "ab\xff", 3, 0, &ids, &e), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "byte offset 2"));
    ck_assert_uint_eq(ids.n, 0);
    bn_tok_free(t);
}
END_TEST

START_TEST(encode_file)
{
    bn_tok *t = load(sp_json(SP_MODEL, SP_MERGES), NULL);
    char *dir = bn_test_tmpdir("tok");
    ck_assert_ptr_nonnull(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/t.txt", dir);
    FILE *f = fopen(path, "w");
    fputs("ab \n\n\n  bc\nab\n\n   \n\na", f);
    fclose(f);
    bn_tok_ids ids = { 0 }, starts = { 0 };
    bn_err e = { 0 };
    ck_assert_int_eq(bn_tok_encode_file(t, path, BN_TOK_ADD_SPECIAL, &ids, &starts, &e), 0);
    /* paragraphs "ab", "bc\nab" (stripped), "a"; the blank one is skipped */
    ck_assert_uint_eq(starts.n, 3);
    const int32_t want[] = { 1, P_SPAB, 1, P_SP, P_BC, 3 + '\n', P_AB, 1, P_SPA };
    ck_assert_uint_eq(ids.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < ids.n; i++) ck_assert_int_eq(ids.ids[i], want[i]);
    ck_assert_int_eq(starts.ids[1], 2);
    ck_assert_int_eq(starts.ids[2], 7);
    f = fopen(path, "w");
    fputs("fine\nline two \xc3\x28 bad\n", f);
    fclose(f);
    ck_assert_int_eq(bn_tok_encode_file(t, path, BN_TOK_ADD_SPECIAL, &ids, &starts, &e), BN_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "line 2"));
    ck_assert_ptr_nonnull(strstr(e.msg, path));
    ck_assert_uint_eq(ids.n, sizeof want / sizeof want[0]); /* nothing appended on error */
    bn_tok_ids_free(&ids);
    bn_tok_ids_free(&starts);
    bn_test_rmtree(dir);
    free(dir);
    bn_tok_free(t);
}
END_TEST

/* One bn_tok shared by several threads: results equal the single-threaded ones. */
typedef struct job { const bn_tok *t; int32_t got[64]; size_t n; int rc; } job;
static const char *THREAD_TEXT = "the the  a\n\xc3\xa9 it's 12345 <|eot|> the";

static void *encode_many(void *arg)
{
    job *j = arg;
    for (int rep = 0; rep < 200 && !j->rc; rep++) {
        bn_tok_ids ids = { 0 };
        j->rc = bn_tok_encode(j->t, THREAD_TEXT, strlen(THREAD_TEXT), 0, &ids, NULL);
        j->n = ids.n < 64 ? ids.n : 64;
        memcpy(j->got, ids.ids, j->n * sizeof *ids.ids);
        char *s = NULL;
        size_t len;
        if (!j->rc) j->rc = bn_tok_decode(j->t, ids.ids, ids.n, 0, &s, &len, NULL);
        if (!j->rc && strcmp(s, THREAD_TEXT) != 0) j->rc = -1;
        free(s);
        bn_tok_ids_free(&ids);
    }
    return NULL;
}

START_TEST(threads)
{
    bn_tok *t = load(bl_json(LLAMA3_PRE, "{\"type\":\"NFC\"}"), NULL);
    job one = { t, { 0 }, 0, 0 };
    encode_many(&one);
    ck_assert_int_eq(one.rc, 0);
    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){ t, { 0 }, 0, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, encode_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(jobs[i].rc, 0);
        ck_assert_uint_eq(jobs[i].n, one.n);
        ck_assert_mem_eq(jobs[i].got, one.got, one.n * sizeof one.got[0]);
    }
    bn_tok_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, sp_merge_order);
    tcase_add_test(tc, sp_byte_fallback_and_unk);
    tcase_add_test(tc, sp_added_tokens);
    tcase_add_test(tc, sp_config_bos_eos);
    tcase_add_test(tc, sp_decode);
    tcase_add_test(tc, sp_gguf_facts);
    tcase_add_test(tc, bl_gpt2);
    tcase_add_test(tc, bl_llama3_regex);
    tcase_add_test(tc, bl_nfc);
    tcase_add_test(tc, split_behaviours);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, encode_file);
    tcase_add_test(tc, threads);
    suite_add_tcase(s, tc);
    return bn_test_run(s);
}
