/* err.h - the engine's error value.
 *
 * Every fallible engine call takes a `bn_err *` (may be NULL) and returns 0 on success or
 * one of the BN_E* codes. The message names the file, tensor or field at fault, so that
 * a caller (CLI, worker, API) can show it to a person unchanged. When the fault is in a
 * JSON input, `field` holds its JSON Pointer ("/config/fine_tune/lr"), so that the API
 * can name it in problem+json without reading the message.
 */
#ifndef BN_ERR_H
#define BN_ERR_H

enum {
    BN_OK = 0,
    BN_EINVAL,       /* bad argument or option value */
    BN_EIO,          /* read/write/open failed (errno text in the message) */
    BN_EFORMAT,      /* malformed file: safetensors, JSON, tokenizer, GGUF */
    BN_ENOMEM,
    BN_EUNSUPPORTED, /* architecture, dtype or feature we do not handle */
    BN_ENUMERIC,     /* NaN/Inf weights, diverged training */
    BN_ECANCELLED,   /* the progress callback asked to stop */
    BN_ENOSPC,       /* disk full */
};

typedef struct bn_err {
    int code;
    char msg[1024];
    char field[256];  /* JSON Pointer of the input at fault, or "" */
} bn_err;

/* Records code and message (printf-style) in e (if not NULL), no field; returns code. */
int bn_err_set(bn_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same for a fault in a JSON input at the dotted path `at` ("config.export.gguf[1]"):
 * the message reads "<at>: <text>" and field becomes "/config/export/gguf/1". */
int bn_err_set_at(bn_err *e, int code, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prefixes an existing message ("loading x: " + old); returns e->code. */
int bn_err_prefix(bn_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Maps an errno value to BN_EIO or BN_ENOSPC / BN_ENOMEM. */
int bn_err_from_errno(int errnum);
const char *bn_err_code_name(int code);

#endif
