/* str.h - string helpers shared by the engine and the service. Header-only. */
#ifndef BN_STR_H
#define BN_STR_H

#include <stdlib.h>
#include <string.h>

/* strdup that passes NULL through (NULL in, NULL out). The caller frees the copy. */
static inline char *bn_str_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

#endif
