/* cli.h - bitnetctl's commands. Each command is one function `int bn_cli_<name>(int
 * argc, char **argv)` (argv[0] is the command name) returning the process exit code;
 * it is listed in the command table of bitnetctl.c (one row per command). Commands
 * that talk to the daemon live in their own files. */
#ifndef BN_CLI_H
#define BN_CLI_H

#include <stdbool.h>
#include <stddef.h>

typedef struct bn_cli_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help; /* one line */
} bn_cli_cmd;

int bn_cli_compress(int argc, char **argv);
int bn_cli_inspect(int argc, char **argv);
int bn_cli_init_model(int argc, char **argv);
int bn_cli_generate(int argc, char **argv);
int bn_cli_eval(int argc, char **argv);

int bn_cli_wandb_sync(int argc, char **argv);

/* daemon client commands (client.c) */
int bn_cli_submit(int argc, char **argv);
int bn_cli_status(int argc, char **argv);
int bn_cli_watch(int argc, char **argv);
int bn_cli_list(int argc, char **argv);
int bn_cli_cancel(int argc, char **argv);
int bn_cli_logs(int argc, char **argv);
int bn_cli_artifacts(int argc, char **argv);
int bn_cli_fetch(int argc, char **argv);
int bn_cli_token(int argc, char **argv);

/* Prints "bitnetctl: <msg>" to stderr. */
void bn_cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* true when stderr is a terminal (progress bars) */
bool bn_cli_tty(void);
/* The local folder of a model argument: itself, or for hf://ORG/NAME[@REV] its snapshot
 * in the Hub cache after fetching it (errors printed as "CMD: ..."). Returns 0 or a BN_E*. */
int bn_cli_model_dir(const char *cmd, const char *model, char *dir, size_t len);

#endif
