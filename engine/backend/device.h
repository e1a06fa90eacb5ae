/* device.h - which device a job runs on: the names, and whether this build and host can
 * run the CUDA backend. A library of its own (bndevice) so that the API can refuse a
 * "cuda" job at submission without linking the engine.
 *
 * bn_device_resolve turns "auto" into cuda when a GPU is usable and cpu otherwise; a
 * "cuda" request on a build without CUDA or a host without a GPU is refused with the
 * sentence bn_device_cuda_usable writes (it says which of the two).
 */
#ifndef BN_DEVICE_H
#define BN_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { BN_DEVICE_CPU = 0, BN_DEVICE_CUDA = 1, BN_DEVICE_AUTO = 2 } bn_device;

const char *bn_device_name(bn_device d); /* "cpu" | "cuda" | "auto" */
int bn_device_parse(const char *s);      /* -1 when unknown */

/* True when this build has the CUDA backend. */
bool bn_device_cuda_built(void);
/* True when a CUDA job can run here: built with CUDA and at least one GPU visible. Else
 * false with a sentence for a person in why. */
bool bn_device_cuda_usable(char *why, size_t why_len);
/* Visible CUDA devices (0 when not built or no GPU). */
int bn_device_cuda_count(void);
/* auto -> cuda when usable, else cpu; cpu and cuda unchanged. */
bn_device bn_device_resolve(bn_device d);

#endif
