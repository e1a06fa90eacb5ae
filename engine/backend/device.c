/* device.c - device names and the CUDA probe (device.h). The probe asks the CUDA runtime
 * for its device count; in a build without CUDA it answers no without asking. */
#include "backend/device.h"

#include <stdio.h>
#include <string.h>

#ifdef BN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

const char *bn_device_name(bn_device d)
{
    return d == BN_DEVICE_CPU ? "cpu" : d == BN_DEVICE_CUDA ? "cuda" : d == BN_DEVICE_AUTO ? "auto" : "?";
}

int bn_device_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "cpu")) return BN_DEVICE_CPU;
    if (!strcmp(s, "cuda")) return BN_DEVICE_CUDA;
    if (!strcmp(s, "auto")) return BN_DEVICE_AUTO;
    return -1;
}

bool bn_device_cuda_built(void)
{
#ifdef BN_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

int bn_device_cuda_count(void)
{
#ifdef BN_HAVE_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

bool bn_device_cuda_usable(char *why, size_t why_len)
{
#ifdef BN_HAVE_CUDA
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaSuccess && n > 0) return true;
    if (why) {
        if (e != cudaSuccess)
            snprintf(why, why_len, "device \"cuda\" needs a GPU, and this host has no usable one (%s); use \"cpu\" or \"auto\"",
                     cudaGetErrorString(e));
        else
            snprintf(why, why_len, "device \"cuda\" needs a GPU, and this host has none; use \"cpu\" or \"auto\"");
    }
    cudaGetLastError();
    return false;
#else
    if (why)
        snprintf(why, why_len, "device \"cuda\" needs a bitnetd built with CUDA (meson -Dcuda=enabled); this build has only the CPU backend; use \"cpu\" or \"auto\"");
    return false;
#endif
}

bn_device bn_device_resolve(bn_device d)
{
    if (d != BN_DEVICE_AUTO) return d;
    return bn_device_cuda_usable(NULL, 0) ? BN_DEVICE_CUDA : BN_DEVICE_CPU;
}
