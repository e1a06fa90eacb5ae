/* ops.cu - CUDA kernels of the Llama layers other than attention and the matrix products:
 * embedding, RMSNorm, RoPE, SiLU gate, residual add, cross-entropy, AdamW, STE ternarize.
 * Each mirrors the CPU function of the same name in model/llama.c / model/optim.c. */
#include "cuda/ops.cuh"

#include <math.h>

#define BLOCK 256

static unsigned grid_for(size_t n) { return (unsigned)((n + BLOCK - 1) / BLOCK); }

/* Element stores for the kernels templated on storage (float, or bf16 rounded to nearest) */
__device__ __forceinline__ void put(float *p, float v) { *p = v; }
__device__ __forceinline__ void put(bn_bf16 *p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ float get(float v) { return v; }
__device__ __forceinline__ float get(bn_bf16 v) { return __bfloat162float(v); }

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

/* ---- RMSNorm, bf16 storage (the training path of bf16 mode) ----
 * The forward keeps xhat = x * rstd (bf16) for the backward and gives the products
 * n = xhat * w (bf16, computed from the rounded xhat so that the backward recomputes it
 * bit for bit); the residual stream x stays FP32. One block per row. */
__global__ void rmsnorm_forward_bf16_kernel(bn_bf16 *n, bn_bf16 *xhat, float *rstd, const float *x,
                                            const float *w, int D, float eps)
{
    size_t row = blockIdx.x;
    const float *xr = x + row * D;
    float ss = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    bn_bf16 *xh = xhat + row * D, *nr = n + row * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        bn_bf16 h = __float2bfloat16(xr[i] * r);
        xh[i] = h;
        nr[i] = __float2bfloat16(__bfloat162float(h) * w[i]);
    }
}

/* n[N, D] = xhat * w (the forward's products input, recomputed for the weight gradients) */
__global__ void rmsnorm_apply_bf16_kernel(bn_bf16 *n, const bn_bf16 *xhat, const float *w,
                                          size_t total, int D)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) n[i] = __float2bfloat16(__bfloat162float(xhat[i]) * w[i % D]);
}

/* dx: one block per row; g = dy * w, dx += rstd (g - xhat mean(g xhat)); dx_h = bf16(dx) */
__global__ void rmsnorm_backward_dx_bf16_kernel(float *dx, bn_bf16 *dx_h, const float *dout,
                                                const bn_bf16 *xhat, const float *w,
                                                const float *rstd, int D)
{
    size_t row = blockIdx.x;
    const float *dy = dout + row * D;
    const bn_bf16 *xh = xhat + row * D;
    float r = rstd[row], dot = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dot += dy[i] * w[i] * __bfloat162float(xh[i]);
    dot = block_sum(dot);
    float c = dot / (float)D;
    float *dxr = dx + row * D;
    bn_bf16 *dhr = dx_h + row * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = dxr[i] + r * (dy[i] * w[i] - __bfloat162float(xh[i]) * c);
        dxr[i] = v;
        dhr[i] = __float2bfloat16(v);
    }
}

/* dw[D] += sum over rows of dy * xhat; grid (ceil(D/256), DW_CHUNKS) as the FP32 kernel */
__global__ void rmsnorm_backward_dw_bf16_kernel(float *dw, const float *dout, const bn_bf16 *xhat,
                                                int N, int D)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= D) return;
    int per = (N + DW_CHUNKS - 1) / DW_CHUNKS, n0 = blockIdx.y * per, n1 = min(N, n0 + per);
    float acc = 0;
    for (int n = n0; n < n1; n++) acc += dout[(size_t)n * D + i] * __bfloat162float(xhat[(size_t)n * D + i]);
    atomicAdd(&dw[i], acc);
}

void bn_cu_rmsnorm_forward_bf16(bn_bf16 *n, bn_bf16 *xhat, float *rstd, const float *x,
                                const float *w, int N, int D, float eps, cudaStream_t s)
{
    rmsnorm_forward_bf16_kernel<<<N, BLOCK, 0, s>>>(n, xhat, rstd, x, w, D, eps);
}

void bn_cu_rmsnorm_apply_bf16(bn_bf16 *n, const bn_bf16 *xhat, const float *w, int N, int D,
                              cudaStream_t s)
{
    size_t total = (size_t)N * D;
    rmsnorm_apply_bf16_kernel<<<grid_for(total), BLOCK, 0, s>>>(n, xhat, w, total, D);
}

void bn_cu_rmsnorm_backward_bf16(float *dx, bn_bf16 *dx_h, float *dw, const float *dout,
                                 const bn_bf16 *xhat, const float *w, const float *rstd, int N,
                                 int D, cudaStream_t s)
{
    rmsnorm_backward_dx_bf16_kernel<<<N, BLOCK, 0, s>>>(dx, dx_h, dout, xhat, w, rstd, D);
    dim3 g(grid_for((size_t)D), DW_CHUNKS);
    rmsnorm_backward_dw_bf16_kernel<<<g, BLOCK, 0, s>>>(dw, dout, xhat, N, D);
}

/* ---- conversion ---- out[n] = bf16(in[n]) */
__global__ void to_bf16_kernel(bn_bf16 *out, const float *in, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16(in[i]);
}

void bn_cu_to_bf16(bn_bf16 *out, const float *in, size_t n, cudaStream_t s)
{
    if (n) to_bf16_kernel<<<grid_for(n), BLOCK, 0, s>>>(out, in, n);
}

/* ---- RoPE ---- one thread per (row, head, pair i < hd/2) */
template <typename E>
__global__ void rope_kernel(E *x, const float *cosb, const float *sinb, int T, int nh,
                            int hd, float sign, size_t total)
{
    size_t id = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= total) return;
    int half = hd / 2;
    int i = (int)(id % half);
    size_t rh = id / half; /* row * nh + head */
    size_t row = rh / nh;
    int t = (int)(row % T);
    E *v = x + rh * hd;
    float c = cosb[(size_t)t * half + i], si = sign * sinb[(size_t)t * half + i];
    float x0 = get(v[i]), x1 = get(v[i + half]);
    put(&v[i], x0 * c - x1 * si);
    put(&v[i + half], x1 * c + x0 * si);
}

template <typename E>
static void rope(E *x, const float *cosb, const float *sinb, int B, int T, int nh, int hd,
                 float sign, cudaStream_t s)
{
    size_t total = (size_t)B * T * nh * (hd / 2);
    rope_kernel<E><<<grid_for(total), BLOCK, 0, s>>>(x, cosb, sinb, T, nh, hd, sign, total);
}

void bn_cu_rope(float *x, const float *cosb, const float *sinb, int B, int T, int nh, int hd,
                float sign, cudaStream_t s)
{
    rope(x, cosb, sinb, B, T, nh, hd, sign, s);
}

void bn_cu_rope_bf16(bn_bf16 *x, const float *cosb, const float *sinb, int B, int T, int nh, int hd,
                     float sign, cudaStream_t s)
{
    rope(x, cosb, sinb, B, T, nh, hd, sign, s);
}

/* ---- SiLU gate ---- */
template <typename E>
__global__ void swiglu_forward_kernel(E *out, const E *gate, const E *up, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = get(gate[i]);
    put(&out[i], g / (1.0f + expf(-g)) * get(up[i]));
}

template <typename E>
__global__ void swiglu_backward_kernel(E *dgate, E *dup, const E *dout, const E *gate,
                                       const E *up, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = get(gate[i]), sg = 1.0f / (1.0f + expf(-g)), d = get(dout[i]);
    put(&dup[i], d * g * sg);
    put(&dgate[i], d * get(up[i]) * sg * (1.0f + g * (1.0f - sg)));
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

void bn_cu_swiglu_forward_bf16(bn_bf16 *out, const bn_bf16 *gate, const bn_bf16 *up, size_t n,
                               cudaStream_t s)
{
    swiglu_forward_kernel<<<grid_for(n), BLOCK, 0, s>>>(out, gate, up, n);
}

void bn_cu_swiglu_backward_bf16(bn_bf16 *dgate, bn_bf16 *dup, const bn_bf16 *dout,
                                const bn_bf16 *gate, const bn_bf16 *up, size_t n, cudaStream_t s)
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
template <typename E>
__global__ void ternarize_kernel(E *out, const float *w, int cols, float tau)
{
    size_t r = blockIdx.x;
    const float *wr = w + r * cols;
    double a = 0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) a += fabs((double)wr[i]);
    a = block_sum(a);
    float sc = (float)(a / cols);
    if (sc < 1e-8f) sc = 1e-8f;
    float th = tau * sc;
    E *o = out + r * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float x = wr[i];
        put(&o[i], fabsf(x) >= th ? (x > 0 ? sc : -sc) : 0.0f);
    }
}

void bn_cu_ternarize(float *out, const float *w, int rows, int cols, float tau, cudaStream_t s)
{
    ternarize_kernel<<<rows, BLOCK, 0, s>>>(out, w, cols, tau);
}

void bn_cu_ternarize_bf16(bn_bf16 *out, const float *w, int rows, int cols, float tau, cudaStream_t s)
{
    ternarize_kernel<<<rows, BLOCK, 0, s>>>(out, w, cols, tau);
}

/* ---- fine-tune trainer: quantizer, MuGrokfast, distillation ---- */

/* One block per row (per tensor: one block over rows*cols with xsq[j % cols]); mirrors
 * quant/quant.c bn_quant_refine (with xsq) and bn_quant_tensor (without). */
__global__ void quant_materialize_kernel(float *out, const float *w, const float *xsq, size_t len,
                                         int cols, bn_cu_taus taus, int n_taus, float lam)
{
    const float *wr = w + (size_t)blockIdx.x * len;
    float *o = out + (size_t)blockIdx.x * len;
    double a = 0;
    for (size_t i = threadIdx.x; i < len; i += blockDim.x) a += fabs((double)wr[i]);
    a = block_sum(a);
    float s0 = (float)(a / (double)len);
    if (!(s0 >= 1e-8f)) s0 = 1e-8f;
    float tau = taus.v[0], alpha = s0;
    if (xsq) {
        double A = 0, Bk[8], Ck[8];
        float thr[8];
        for (int k = 0; k < 8; k++) { Bk[k] = 0; Ck[k] = 0; thr[k] = taus.v[k] * s0; }
        for (size_t i = threadIdx.x; i < len; i += blockDim.x) {
            double x = xsq[i % (size_t)cols], wv = wr[i], aw = fabs(wv);
            A += x * wv * wv;
            for (int k = 0; k < n_taus; k++)
                if ((float)aw >= thr[k] && aw > 0) { Bk[k] += x * aw; Ck[k] += x; }
        }
        A = block_sum(A);
        int best = 0;
        double best_err = INFINITY, bB = 0, bC = 0;
        for (int k = 0; k < n_taus; k++) {
            double B = block_sum(Bk[k]), C = block_sum(Ck[k]);
            double e = C > 0 ? A - B * B / C : A;
            if (e < best_err) { best_err = e; best = k; bB = B; bC = C; }
        }
        tau = taus.v[best];
        if (bC > 0 && bB > 0) {
            alpha = (float)(bB / bC);
            if (!(alpha >= 1e-8f)) alpha = 1e-8f;
        }
    }
    float thr = tau * s0;
    for (size_t i = threadIdx.x; i < len; i += blockDim.x) {
        float x = wr[i];
        int c = fabsf(x) >= thr ? (x > 0) - (x < 0) : 0;
        float q = alpha * (float)c;
        o[i] = lam >= 1.0f ? q : x + lam * (q - x);
    }
}

void bn_cu_quant_materialize(float *out, const float *w, const float *xsq, int rows, int cols,
                             int per_tensor, bn_cu_taus taus, int n_taus, float lam, cudaStream_t s)
{
    size_t len = per_tensor ? (size_t)rows * cols : (size_t)cols;
    quant_materialize_kernel<<<per_tensor ? 1 : rows, per_tensor ? 1024 : BLOCK, 0, s>>>(
        out, w, xsq, len, cols, taus, n_taus, lam);
}

/* g <- g * k; Grokfast (on): if first ema <- g; ema <- alpha ema + (1 - alpha) g; g += lambda ema */
__global__ void grokfast_kernel(float *g, float *ema, size_t n, float k, float alpha, float lambda,
                                int on, int first)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float gj = g[j];
    if (k != 1.0f) gj *= k;
    if (on) {
        float e = first ? gj : ema[j];
        e = alpha * e + (1.0f - alpha) * gj;
        ema[j] = e;
        gj += lambda * e;
    }
    g[j] = gj;
}

void bn_cu_grokfast(float *g, float *ema, size_t n, float k, float alpha, float lambda, int on,
                    int first, cudaStream_t s)
{
    grokfast_kernel<<<grid_for(n), BLOCK, 0, s>>>(g, ema, n, k, alpha, lambda, on, first);
}

/* buf <- mu buf + g; g <- g + mu buf (Nesterov) */
__global__ void muon_momentum_kernel(float *g, float *buf, size_t n, float mu)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float b = mu * buf[j] + g[j];
    buf[j] = b;
    g[j] = g[j] + mu * b;
}

void bn_cu_muon_momentum(float *g, float *buf, size_t n, float mu, cudaStream_t s)
{
    muon_momentum_kernel<<<grid_for(n), BLOCK, 0, s>>>(g, buf, n, mu);
}

/* w <- w decay - step u */
__global__ void muon_apply_kernel(float *w, const float *u, size_t n, float decay, float step)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    w[j] = w[j] * decay - step * u[j];
}

void bn_cu_muon_apply(float *w, const float *u, size_t n, float decay, float step, cudaStream_t s)
{
    muon_apply_kernel<<<grid_for(n), BLOCK, 0, s>>>(w, u, n, decay, step);
}

__global__ void scale_kernel(float *x, size_t n, float a)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) x[j] *= a;
}

void bn_cu_scale(float *x, size_t n, float a, cudaStream_t s)
{
    scale_kernel<<<grid_for(n), BLOCK, 0, s>>>(x, n, a);
}

/* b <- c b + bb a (Newton-Schulz polynomial) */
__global__ void ns_poly_kernel(float *b, const float *a, size_t n, float c, float bb)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) b[j] = c * b[j] + bb * a[j];
}

void bn_cu_ns_poly(float *b, const float *a, size_t n, float c, float bb, cudaStream_t s)
{
    ns_poly_kernel<<<grid_for(n), BLOCK, 0, s>>>(b, a, n, c, bb);
}

/* One block per row: kl[n] = KL(p_t || p_s) of row n; t row <- w (p_s - p_t) (w = distill / N) */
__global__ void distill_kernel(float *t, float *kl, const float *s, int V, float w)
{
    size_t n = blockIdx.x;
    const float *sr = s + n * V;
    float *tr = t + n * V;
    float ms = -INFINITY, mt = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) { ms = fmaxf(ms, sr[i]); mt = fmaxf(mt, tr[i]); }
    ms = block_max(ms);
    mt = block_max(mt);
    double zs = 0, zt = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) { zs += exp((double)(sr[i] - ms)); zt += exp((double)(tr[i] - mt)); }
    zs = block_sum(zs);
    zt = block_sum(zt);
    double lzs = log(zs), lzt = log(zt), k = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        double lps = sr[i] - ms - lzs, lpt = tr[i] - mt - lzt, pt = exp(lpt);
        k += pt * (lpt - lps);
        tr[i] = (float)(w * (exp(lps) - pt));
    }
    k = block_sum(k);
    if (threadIdx.x == 0) kl[n] = (float)k;
}

void bn_cu_distill(float *teacher_logits, float *kl, const float *student_logits, int N, int V,
                   float w, cudaStream_t s)
{
    distill_kernel<<<N, 1024, 0, s>>>(teacher_logits, kl, student_logits, V, w);
}

/* ---- Newton-Schulz on a batch of `count` matrices of n_each floats each (scalars per
 * matrix on the device, no host round trip; model/optim.c ns_core's arithmetic) ---- */

/* acc[2 i + k] += sum x_i^2 for matrix i (grid y = matrix) */
__global__ void sumsq_batched_kernel(double *acc, const float *x, size_t n_each, int k)
{
    const float *xi = x + (size_t)blockIdx.y * n_each;
    double v = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_each;
         i += (size_t)gridDim.x * blockDim.x)
        v += (double)xi[i] * xi[i];
    v = block_sum(v);
    if (threadIdx.x == 0) atomicAdd(&acc[2 * blockIdx.y + k], v);
}

void bn_cu_sumsq_batched(double *acc, int k, const float *x, size_t n_each, int count, cudaStream_t s)
{
    unsigned g = grid_for(n_each);
    if (g > 128) g = 128;
    if (g == 0 || count == 0) return;
    sumsq_batched_kernel<<<dim3(g, (unsigned)count), BLOCK, 0, s>>>(acc, x, n_each, k);
}

/* per matrix i: acc[2i] = sum y^2, acc[2i+1] = ||A^4||_F^2; f[8i + ...]: 0 (float)(1/fro),
 * 1 sc, 2 sc^2, 3 sc^2 sc^2 (sc = (float)(1 / ||A^4||_F^(1/8))), 4 fro valid, 5 sig valid.
 * stage 0 sets 0 and 4, stage 1 the rest. */
__global__ void ns_scalars_kernel(const double *acc, float *f, int count, int stage)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float *fi = f + 8 * i;
    if (stage == 0) {
        double fro = sqrt(acc[2 * i]);
        bool ok = fro > 1e-30 && isfinite(fro);
        fi[0] = ok ? (float)(1.0 / fro) : 1.0f;
        fi[4] = ok ? 1.0f : 0.0f;
    } else {
        double sig = pow(acc[2 * i + 1], 1.0 / 16.0);
        bool ok = sig > 1e-30;
        float sc = ok ? (float)(1.0 / sig) : 1.0f, sc2 = sc * sc;
        fi[1] = sc;
        fi[2] = sc2;
        fi[3] = sc2 * sc2;
        fi[5] = ok ? 1.0f : 0.0f;
    }
}

void bn_cu_ns_scalars(const double *acc, float *f, int count, int stage, cudaStream_t s)
{
    ns_scalars_kernel<<<(count + 63) / 64, 64, 0, s>>>(acc, f, count, stage);
}

/* out[j] = in[j] * f[8 (j / n_each) + k] */
__global__ void scale_dev_kernel(float *out, const float *in, size_t n_each, size_t n, const float *f, int k)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) out[j] = in[j] * f[8 * (j / n_each) + k];
}

void bn_cu_scale_dev(float *out, const float *in, size_t n_each, int count, const float *f, int k,
                     cudaStream_t s)
{
    size_t n = n_each * (size_t)count;
    scale_dev_kernel<<<grid_for(n), BLOCK, 0, s>>>(out, in, n_each, n, f, k);
}

/* per matrix: x unchanged when fro was invalid, x / fro when the spectral bound was, else y */
__global__ void ns_finish_kernel(float *x, const float *y, size_t n_each, size_t n, const float *f)
{
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    const float *fi = f + 8 * (j / n_each);
    if (fi[4] == 0.0f) return;
    x[j] = fi[5] == 0.0f ? x[j] * fi[0] : y[j];
}

void bn_cu_ns_finish(float *x, const float *y, size_t n_each, int count, const float *f, cudaStream_t s)
{
    size_t n = n_each * (size_t)count;
    ns_finish_kernel<<<grid_for(n), BLOCK, 0, s>>>(x, y, n_each, n, f);
}
