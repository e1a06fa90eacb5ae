/* ops.cu - CUDA kernels of the Llama layers other than attention and the matrix products:
 * embedding, RMSNorm, RoPE, SiLU gate, residual add, cross-entropy, AdamW, STE ternarize.
 * Each mirrors the CPU function of the same name in model/llama.c / model/optim.c. */
#include "cuda/ops.cuh"

#include <math.h>

#define BLOCK 256

static unsigned grid_for(size_t n) { return (unsigned)((n + BLOCK - 1) / BLOCK); }

/* Block-wide sum (blockDim.x a multiple of 32, <= 1024); every thread gets the result. */
template <typename F>
__device__ F block_sum(F v)
{
    __shared__ F part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    F r = 0;
    int nw = blockDim.x >> 5;
    for (int i = 0; i < nw; i++) r += part[i];
    return r;
}

__device__ float block_max(float v)
{
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float r = -INFINITY;
    int nw = blockDim.x >> 5;
    for (int i = 0; i < nw; i++) r = fmaxf(r, part[i]);
    return r;
}

/* ---- embedding ---- grid: N*D threads */
__global__ void embedding_forward_kernel(float *out, const int32_t *tok, const float *emb, int N,
                                         int D)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * D) return;
    size_t n = i / D, d = i % D;
    out[i] = emb[(size_t)tok[n] * D + d];
}

__global__ void embedding_backward_kernel(float *demb, const float *dout, const int32_t *tok,
                                          int N, int D)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * D) return;
    size_t n = i / D, d = i % D;
    atomicAdd(&demb[(size_t)tok[n] * D + d], dout[i]);
}

void bn_cu_embedding_forward(float *out, const int32_t *tok, const float *emb, int N, int D,
                             cudaStream_t s)
{
    embedding_forward_kernel<<<grid_for((size_t)N * D), BLOCK, 0, s>>>(out, tok, emb, N, D);
}

void bn_cu_embedding_backward(float *demb, const float *dout, const int32_t *tok, int N, int D,
                              cudaStream_t s)
{
    embedding_backward_kernel<<<grid_for((size_t)N * D), BLOCK, 0, s>>>(demb, dout, tok, N, D);
}

/* ---- RMSNorm ---- forward: one block per row */
__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *x, const float *w,
                                       int D, float eps)
{
    size_t n = blockIdx.x;
    const float *xr = x + n * D;
    float ss = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    float *o = out + n * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = xr[i] * r * w[i];
}

/* backward dx: one block per row; dx += dy*w*r - x * (sum dy*w*x) * r^3 / D */
__global__ void rmsnorm_backward_dx_kernel(float *dx, const float *dout, const float *x,
                                           const float *w, const float *rstd, int D)
{
    size_t n = blockIdx.x;
    const float *xr = x + n * D, *dy = dout + n * D;
    float r = rstd[n], dot = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dot += dy[i] * w[i] * xr[i];
    dot = block_sum(dot);
    float c = dot * r * r * r / (float)D;
    float *dxr = dx + n * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dxr[i] += dy[i] * w[i] * r - xr[i] * c;
}

/* backward dw: grid (ceil(D/256), DW_CHUNKS); one thread per column sums its chunk of rows
 * (coalesced across the warp), then one atomic add per column and chunk */
#define DW_CHUNKS 64
__global__ void rmsnorm_backward_dw_kernel(float *dw, const float *dout, const float *x,
                                           const float *rstd, int N, int D)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= D) return;
    int per = (N + DW_CHUNKS - 1) / DW_CHUNKS, n0 = blockIdx.y * per, n1 = min(N, n0 + per);
    float acc = 0;
    for (int n = n0; n < n1; n++) acc += dout[(size_t)n * D + i] * x[(size_t)n * D + i] * rstd[n];
    atomicAdd(&dw[i], acc);
}

void bn_cu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                           float eps, cudaStream_t s)
{
    rmsnorm_forward_kernel<<<N, BLOCK, 0, s>>>(out, rstd, x, w, D, eps);
}

void bn_cu_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x,
                            const float *w, const float *rstd, int N, int D, cudaStream_t s)
{
    rmsnorm_backward_dx_kernel<<<N, BLOCK, 0, s>>>(dx, dout, x, w, rstd, D);
    dim3 g(grid_for((size_t)D), DW_CHUNKS);
    rmsnorm_backward_dw_kernel<<<g, BLOCK, 0, s>>>(dw, dout, x, rstd, N, D);
}

/* ---- RoPE ---- one thread per (row, head, pair i < hd/2) */
__global__ void rope_kernel(float *x, const float *cosb, const float *sinb, int T, int nh,
                            int hd, float sign, size_t total)
{
    size_t id = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= total) return;
    int half = hd / 2;
    int i = (int)(id % half);
    size_t rh = id / half; /* row * nh + head */
    size_t row = rh / nh;
    int t = (int)(row % T);
    float *v = x + rh * hd;
    float c = cosb[(size_t)t * half + i], si = sign * sinb[(size_t)t * half + i];
    float x0 = v[i], x1 = v[i + half];
    v[i] = x0 * c - x1 * si;
    v[i + half] = x1 * c + x0 * si;
}

void bn_cu_rope(float *x, const float *cosb, const float *sinb, int B, int T, int nh, int hd,
                float sign, cudaStream_t s)
{
    size_t total = (size_t)B * T * nh * (hd / 2);
    rope_kernel<<<grid_for(total), BLOCK, 0, s>>>(x, cosb, sinb, T, nh, hd, sign, total);
}

/* ---- SiLU gate ---- */
__global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}

__global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout,
                                       const float *gate, const float *up, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
    dup[i] = dout[i] * g * sg;
    dgate[i] = dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
}

void bn_cu_swiglu_forward(float *out, const float *gate, const float *up, size_t n, cudaStream_t s)
{
    swiglu_forward_kernel<<<grid_for(n), BLOCK, 0, s>>>(out, gate, up, n);
}

void bn_cu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, size_t n, cudaStream_t s)
{
    swiglu_backward_kernel<<<grid_for(n), BLOCK, 0, s>>>(dgate, dup, dout, gate, up, n);
}

/* ---- residual ---- */
__global__ void add_kernel(float *out, const float *a, const float *b, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

void bn_cu_add(float *out, const float *a, const float *b, size_t n, cudaStream_t s)
{
    add_kernel<<<grid_for(n), BLOCK, 0, s>>>(out, a, b, n);
}

/* ---- cross-entropy ---- one block per row of logits [N, V] */
__global__ void crossentropy_kernel(float *logits, float *losses, const int32_t *targets,
                                    const uint8_t *mask, int V, float inv_count, int grad)
{
    size_t n = blockIdx.x;
    float *lg = logits + n * V;
    int t = targets[n];
    bool counts = t >= 0 && t < V && (!mask || mask[n]);
    if (!counts) {
        if (threadIdx.x == 0) losses[n] = 0;
        if (grad)
            for (int i = threadIdx.x; i < V; i += blockDim.x) lg[i] = 0;
        return;
    }
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, lg[i]);
    mx = block_max(mx);
    float sum = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) sum += expf(lg[i] - mx);
    sum = block_sum(sum);
    float lt = lg[t];
    __syncthreads(); /* every thread has read lg[t] before it is overwritten */
    if (threadIdx.x == 0) losses[n] = logf(sum) + mx - lt;
    if (grad) {
        float sc = inv_count / sum;
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            lg[i] = expf(lg[i] - mx) * sc - (i == t ? inv_count : 0.0f);
    }
}

void bn_cu_crossentropy(float *logits, float *losses, const int32_t *targets, const uint8_t *mask,
                        int N, int V, float inv_count, int grad, cudaStream_t s)
{
    crossentropy_kernel<<<N, 1024, 0, s>>>(logits, losses, targets, mask, V, inv_count, grad);
}

/* ---- optimizer ---- */
__global__ void sumsq_kernel(double *acc, const float *x, size_t n)
{
    double v = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        v += (double)x[i] * x[i];
    v = block_sum(v);
    if (threadIdx.x == 0) atomicAdd(acc, v);
}

void bn_cu_sumsq(double *acc, const float *x, size_t n, cudaStream_t s)
{
    unsigned g = grid_for(n);
    if (g > 1024) g = 1024;
    if (g == 0) return;
    sumsq_kernel<<<g, BLOCK, 0, s>>>(acc, x, n);
}

__global__ void adamw_kernel(float *w, const float *g, float *m, float *v, size_t n, float lr,
                             float b1, float b2, float bc1, float bc2, float eps, float decay,
                             float gscale)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float gj = g[j] * gscale;
    float mj = b1 * m[j] + (1.0f - b1) * gj;
    float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
    m[j] = mj;
    v[j] = vj;
    float mh = mj / bc1, vh = vj / bc2;
    w[j] = w[j] * decay - lr * mh / (sqrtf(vh) + eps);
}

void bn_cu_adamw_update(float *w, const float *g, float *m, float *v, size_t n, float lr,
                        float b1, float b2, float bc1, float bc2, float eps, float decay,
                        float gscale, cudaStream_t s)
{
    adamw_kernel<<<grid_for(n), BLOCK, 0, s>>>(w, g, m, v, n, lr, b1, b2, bc1, bc2, eps, decay,
                                               gscale);
}

/* ---- STE ternarize ---- one block per row */
__global__ void ternarize_kernel(float *out, const float *w, int cols, float tau)
{
    size_t r = blockIdx.x;
    const float *wr = w + r * cols;
    double a = 0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) a += fabs((double)wr[i]);
    a = block_sum(a);
    float sc = (float)(a / cols);
    if (sc < 1e-8f) sc = 1e-8f;
    float th = tau * sc;
    float *o = out + r * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float x = wr[i];
        o[i] = fabsf(x) >= th ? (x > 0 ? sc : -sc) : 0.0f;
    }
}

void bn_cu_ternarize(float *out, const float *w, int rows, int cols, float tau, cudaStream_t s)
{
    ternarize_kernel<<<rows, BLOCK, 0, s>>>(out, w, cols, tau);
}
