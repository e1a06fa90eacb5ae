/* bitnetctl.c - the command-line tool: a table of commands and the dispatcher.
 *
 * Add a command by writing `int bn_cli_<name>(int argc, char **argv)` in its own file
 * (declared in cli.h) and one row in the table below. Commands print results on stdout,
 * errors on stderr, and return the exit code (0 ok, 1 failure, 2 usage).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/blas.h"
#include "cli.h"

static const bn_cli_cmd commands[] = {
    { "compress", bn_cli_compress, "compress MODEL_DIR OUT_DIR: run the pipeline in-process" },
    { "inspect", bn_cli_inspect, "inspect FILE: summary of a safetensors file or model folder" },
    { "submit", bn_cli_submit, "submit MODEL [--output NAME] [--config FILE|JSON] [--wait]: queue a job on bitnetd" },
    { "status", bn_cli_status, "status ID: a job's status, stage, progress, ETA, error" },
    { "watch", bn_cli_watch, "watch ID: live progress bars per stage, then the metrics table" },
    { "list", bn_cli_list, "list [--status S] [--limit N]: jobs, newest first" },
    { "cancel", bn_cli_cancel, "cancel ID: cancel a queued or running job" },
    { "logs", bn_cli_logs, "logs ID [--follow]: a job's events" },
    { "artifacts", bn_cli_artifacts, "artifacts ID: files of a job's output folder" },
    { "fetch", bn_cli_fetch, "fetch ID PATH [-o FILE]: download one artifact" },
    { "token", bn_cli_token, "token new NAME --scope read|submit|admin: a bearer token + tokens-file line" },
    { "eval", bn_cli_eval, "eval MODEL_DIR --tokens FILE.u16|--text FILE: mean NLL and perplexity" },
    { "init-model", bn_cli_init_model, "init-model OUT_DIR --shape tiny|25m|tinyllama-1.1b: random Llama HF folder" },
    { "generate", bn_cli_generate, "generate DIR --prompt TEXT [-n N] [--greedy] [--ternary] [--json]: continue a prompt" },
    { "wandb-sync", bn_cli_wandb_sync, "wandb-sync OUTPUT_DIR|JOB_ID: upload an offline W&B run" },
};

void bn_cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bitnetctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

bool bn_cli_tty(void) { return isatty(STDERR_FILENO); }

static void usage(FILE *f)
{
    fprintf(f, "usage: bitnetctl COMMAND [ARGS]   (bitnetctl COMMAND --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
}

/* Client options given before the command ("bitnetctl --server URL --json status ID")
 * move behind the command's own arguments, where the client commands parse them. */
static int hoist_globals(int argc, char **argv)
{
    char *globals[8];
    int ng = 0, i = 1;
    while (i < argc && ng < 6) {
        bool with_value = !strcmp(argv[i], "--server") || !strcmp(argv[i], "--token-file");
        if (!with_value && strcmp(argv[i], "--json") != 0) break;
        if (with_value && i + 1 >= argc) break;
        globals[ng++] = argv[i++];
        if (with_value) globals[ng++] = argv[i++];
    }
    if (ng == 0) return argc;
    int k = 1;
    for (int j = i; j < argc; j++) argv[k++] = argv[j];
    for (int j = 0; j < ng; j++) argv[k++] = globals[j];
    return argc;
}

int main(int argc, char **argv)
{
    /* first: may re-exec so that OpenBLAS starts with the right kernels for this CPU */
    bn_blas_init(argc, argv, getenv("BN_VERBOSE") != NULL);
    argc = hoist_globals(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("bitnetctl %s\n", BN_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    bn_cli_errorf("unknown command '%s'", argv[1]);
    usage(stderr);
    return 2;
}
