/* cmd_init_model.c - `bitnetctl init-model OUT_DIR`: a random-weight Llama HF folder
 * (engine/formats/initmodel.c) from a named shape, optionally overridden dimension by dimension. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/initmodel.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bitnetctl init-model OUT_DIR [--shape tiny|25m|tinyllama-1.1b] [--dim N] [--hidden N]\n"
               "       [--layers N] [--heads N] [--kv-heads N] [--vocab N] [--ctx N] [--tied]\n"
               "       [--dtype f32|f16|bf16] [--seed N] [--arch llama|mistral|qwen2|qwen3]\n"
               "Writes a Llama-family folder (qwen2: q/k/v biases; qwen3: q/k norms) with RANDOM weights (not a trained model) and a byte-level tokenizer.\n");
}

static int parse_int(const char *opt, const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < 1 || v > 1 << 24) {
        bn_cli_errorf("init-model: --%s needs a positive integer, got '%s'", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int bn_cli_init_model(int argc, char **argv)
{
    static const struct option opts[] = {
        { "shape", required_argument, 0, 's' }, { "dim", required_argument, 0, 'd' },
        { "hidden", required_argument, 0, 'f' }, { "layers", required_argument, 0, 'l' },
        { "heads", required_argument, 0, 'h' }, { "kv-heads", required_argument, 0, 'k' },
        { "vocab", required_argument, 0, 'v' }, { "ctx", required_argument, 0, 'c' },
        { "dtype", required_argument, 0, 't' }, { "seed", required_argument, 0, 'r' },
        { "tied", no_argument, 0, 'T' }, { "arch", required_argument, 0, 'a' }, { "help", no_argument, 0, '?' + 256 }, { 0, 0, 0, 0 },
    };
    bn_init_spec s;
    bn_initmodel_shape("tiny", &s);
    bool dtype_set = false;
    int c, bad = 0;
    optind = 1;
    /* two passes: the shape first, so the other flags override it in any order */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--shape") && i + 1 < argc && bn_initmodel_shape(argv[i + 1], &s) != 0) {
            bn_cli_errorf("init-model: unknown shape '%s' (tiny, 25m, tinyllama-1.1b)", argv[i + 1]);
            return 2;
        }
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': break;
        case 'd': bad |= parse_int("dim", optarg, &s.dim); break;
        case 'f': bad |= parse_int("hidden", optarg, &s.hidden); break;
        case 'l': bad |= parse_int("layers", optarg, &s.layers); break;
        case 'h': bad |= parse_int("heads", optarg, &s.heads); break;
        case 'k': bad |= parse_int("kv-heads", optarg, &s.kv_heads); break;
        case 'v': bad |= parse_int("vocab", optarg, &s.vocab); break;
        case 'c': bad |= parse_int("ctx", optarg, &s.ctx); break;
        case 'T': s.tied = true; break;
        case 'a':
            if (bn_initmodel_arch(optarg, &s.arch) != 0) {
                bn_cli_errorf("init-model: --arch must be llama, mistral, qwen2 or qwen3, got '%s'", optarg);
                bad = -1;
            }
            break;
        case 't':
            dtype_set = true;
            if (!strcmp(optarg, "f32")) s.dtype = BN_DTYPE_F32;
            else if (!strcmp(optarg, "f16")) s.dtype = BN_DTYPE_F16;
            else if (!strcmp(optarg, "bf16")) s.dtype = BN_DTYPE_BF16;
            else { bn_cli_errorf("init-model: --dtype must be f32, f16 or bf16"); bad = -1; }
            break;
        case 'r': {
            char *end;
            s.seed = strtoull(optarg, &end, 10);
            if (!*optarg || *end) { bn_cli_errorf("init-model: --seed needs an integer"); bad = -1; }
            break;
        }
        case '?' + 256: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    (void)dtype_set;
    if (bad) return 2;
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    bn_err err = { 0 };
    if (bn_initmodel_write(argv[optind], &s, &err)) {
        bn_cli_errorf("%s", err.msg);
        return 1;
    }
    printf("%s: %llu parameters (random weights), %s\n", argv[optind], (unsigned long long)bn_initmodel_params(&s),
           bn_dtype_name(s.dtype));
    return 0;
}
