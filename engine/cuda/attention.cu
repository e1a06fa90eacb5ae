/* attention.cu - fused causal attention with grouped-query heads (GQA), forward and backward.
 *
 * Flash-style: no T x T matrix ever reaches global memory. The forward pass gives each
 * query row one thread, streams key/value tiles of KT rows through shared memory and keeps
 * an online softmax (running max m, running sum l, output accumulator in registers); it
 * stores the output and lse = m + log(l) per row. The backward pass recomputes
 * p_ij = exp(s_ij - lse_i) and runs as three kernels without atomics:
 *   prep:  dsum_i = sum_d dy_id * y_id                                   [B, H, T]
 *   dq:    one thread per query row i:  dq_i = scale * sum_j ds_ij k_j
 *   dkdv:  one thread per key row j of a kv head, looping over the query heads of its
 *          group:  dv_j = sum_i p_ij dy_i,  dk_j = scale * sum_i ds_ij q_i
 * with ds_ij = p_ij (dy_i . v_j - dsum_i). Scores s_ij = scale * q_i . k_j, scale =
 * 1/sqrt(hd); query head h reads kv head h / (H / KV). Causal: j <= i.
 * Layouts: q, y, dq [B*T, H*hd]; k, v, dk, dv [B*T, KV*hd]; lse, dsum [B, H, T].
 */
#include "cuda/ops.cuh"

#include <math.h>

#define QB 64 /* query (or key) rows per block: one per thread */
#define KT 32 /* rows per shared-memory tile */

/* grid (ceil(T/QB), B*H), block QB */
template <int HD>
__global__ void attention_forward_kernel(float *y, float *lse, const float *q, const float *k,
                                         const float *v, int T, int H, int KV, float scale)
{
    __shared__ float ks[KT][HD], vs[KT][HD];
    int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / KV);
    int i = blockIdx.x * QB + threadIdx.x;
    size_t QD = (size_t)H * HD, KVD = (size_t)KV * HD;
    float qr[HD], acc[HD];
    bool live = i < T;
    if (live) {
        const float *qi = q + ((size_t)b * T + i) * QD + (size_t)h * HD;
        for (int d = 0; d < HD; d++) qr[d] = qi[d] * scale;
    }
    for (int d = 0; d < HD; d++) acc[d] = 0;
    float mx = -INFINITY, l = 0;
    int last = min(T - 1, (int)(blockIdx.x * QB + QB - 1)); /* highest key any row needs */
    for (int j0 = 0; j0 <= last; j0 += KT) {
        __syncthreads();
        for (int e = threadIdx.x; e < KT * HD; e += QB) {
            int r = e / HD, d = e % HD, j = j0 + r;
            size_t off = ((size_t)b * T + j) * KVD + (size_t)kvh * HD + d;
            ks[r][d] = j < T ? k[off] : 0.0f;
            vs[r][d] = j < T ? v[off] : 0.0f;
        }
        __syncthreads();
        if (!live) continue;
        int jn = min(KT, i - j0 + 1); /* causal: keys j0 .. i */
        for (int r = 0; r < jn; r++) {
            float s = 0;
            for (int d = 0; d < HD; d++) s += qr[d] * ks[r][d];
            if (s > mx) {
                float c = expf(mx - s);
                l *= c;
                for (int d = 0; d < HD; d++) acc[d] *= c;
                mx = s;
            }
            float p = expf(s - mx);
            l += p;
            for (int d = 0; d < HD; d++) acc[d] += p * vs[r][d];
        }
    }
    if (!live) return;
    float *yi = y + ((size_t)b * T + i) * QD + (size_t)h * HD;
    float inv = 1.0f / l;
    for (int d = 0; d < HD; d++) yi[d] = acc[d] * inv;
    lse[(size_t)bh * T + i] = mx + logf(l);
}

/* grid (ceil(T/QB), B*H), block QB */
template <int HD>
__global__ void attention_prep_kernel(float *dsum, const float *dy, const float *y, int T, int H)
{
    int bh = blockIdx.y, b = bh / H, h = bh % H;
    int i = blockIdx.x * QB + threadIdx.x;
    if (i >= T) return;
    size_t off = ((size_t)b * T + i) * (size_t)H * HD + (size_t)h * HD;
    float s = 0;
    for (int d = 0; d < HD; d++) s += dy[off + d] * y[off + d];
    dsum[(size_t)bh * T + i] = s;
}

/* grid (ceil(T/QB), B*H), block QB: one query row per thread */
template <int HD>
__global__ void attention_dq_kernel(float *dq, const float *dy, const float *lse,
                                    const float *dsum, const float *q, const float *k,
                                    const float *v, int T, int H, int KV, float scale)
{
    __shared__ float ks[KT][HD], vs[KT][HD];
    int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / KV);
    int i = blockIdx.x * QB + threadIdx.x;
    size_t QD = (size_t)H * HD, KVD = (size_t)KV * HD;
    bool live = i < T;
    float qr[HD], dyr[HD], acc[HD];
    float li = 0, di = 0;
    if (live) {
        size_t off = ((size_t)b * T + i) * QD + (size_t)h * HD;
        for (int d = 0; d < HD; d++) {
            qr[d] = q[off + d] * scale;
            dyr[d] = dy[off + d];
        }
        li = lse[(size_t)bh * T + i];
        di = dsum[(size_t)bh * T + i];
    }
    for (int d = 0; d < HD; d++) acc[d] = 0;
    int last = min(T - 1, (int)(blockIdx.x * QB + QB - 1));
    for (int j0 = 0; j0 <= last; j0 += KT) {
        __syncthreads();
        for (int e = threadIdx.x; e < KT * HD; e += QB) {
            int r = e / HD, d = e % HD, j = j0 + r;
            size_t off = ((size_t)b * T + j) * KVD + (size_t)kvh * HD + d;
            ks[r][d] = j < T ? k[off] : 0.0f;
            vs[r][d] = j < T ? v[off] : 0.0f;
        }
        __syncthreads();
        if (!live) continue;
        int jn = min(KT, i - j0 + 1);
        for (int r = 0; r < jn; r++) {
            float s = 0, dp = 0;
            for (int d = 0; d < HD; d++) {
                s += qr[d] * ks[r][d];
                dp += dyr[d] * vs[r][d];
            }
            float p = expf(s - li), ds = p * (dp - di);
            for (int d = 0; d < HD; d++) acc[d] += ds * ks[r][d];
        }
    }
    if (!live) return;
    float *o = dq + ((size_t)b * T + i) * QD + (size_t)h * HD;
    for (int d = 0; d < HD; d++) o[d] = acc[d] * scale;
}

/* grid (ceil(T/QB), B*KV), block QB: one key row per thread. dv pass (DV = true) keeps k
 * and dv in registers; dk pass keeps k, v and dk. */
template <int HD, bool DV>
__global__ void attention_dkdv_kernel(float *out, const float *dy, const float *lse,
                                      const float *dsum, const float *q, const float *k,
                                      const float *v, int T, int H, int KV, float scale)
{
    __shared__ float qs[KT][HD], dys[KT][HD], ls[KT], dss[KT];
    int bkv = blockIdx.y, b = bkv / KV, kvh = bkv % KV, G = H / KV;
    int j = blockIdx.x * QB + threadIdx.x;
    size_t QD = (size_t)H * HD, KVD = (size_t)KV * HD;
    bool live = j < T;
    float kr[HD], vr[DV ? 1 : HD], acc[HD];
    if (live) {
        size_t off = ((size_t)b * T + j) * KVD + (size_t)kvh * HD;
        for (int d = 0; d < HD; d++) kr[d] = k[off + d] * scale;
        if (!DV)
            for (int d = 0; d < HD; d++) vr[d] = v[off + d];
    }
    for (int d = 0; d < HD; d++) acc[d] = 0;
    int first = blockIdx.x * QB; /* lowest query any key of this block sees */
    for (int g = 0; g < G; g++) {
        int h = kvh * G + g;
        size_t bh = (size_t)b * H + h;
        for (int i0 = first - first % KT; i0 < T; i0 += KT) {
            __syncthreads();
            for (int e = threadIdx.x; e < KT * HD; e += QB) {
                int r = e / HD, d = e % HD, i = i0 + r;
                size_t off = ((size_t)b * T + i) * QD + (size_t)h * HD + d;
                qs[r][d] = i < T ? q[off] : 0.0f;
                dys[r][d] = i < T ? dy[off] : 0.0f;
            }
            for (int r = threadIdx.x; r < KT; r += QB) {
                int i = i0 + r;
                ls[r] = i < T ? lse[bh * T + i] : 0.0f;
                dss[r] = i < T ? dsum[bh * T + i] : 0.0f;
            }
            __syncthreads();
            if (!live) continue;
            for (int r = 0; r < KT; r++) {
                int i = i0 + r;
                if (i < j || i >= T) continue;
                float s = 0;
                for (int d = 0; d < HD; d++) s += kr[d] * qs[r][d];
                float p = expf(s - ls[r]);
                if (DV) {
                    for (int d = 0; d < HD; d++) acc[d] += p * dys[r][d];
                } else {
                    float dp = 0;
                    for (int d = 0; d < HD; d++) dp += dys[r][d] * vr[d];
                    float ds = p * (dp - dss[r]);
                    for (int d = 0; d < HD; d++) acc[d] += ds * qs[r][d];
                }
            }
        }
    }
    if (!live) return;
    float *o = out + ((size_t)b * T + j) * KVD + (size_t)kvh * HD;
    for (int d = 0; d < HD; d++) o[d] = DV ? acc[d] : acc[d] * scale;
}

template <int HD>
static void forward_hd(float *y, float *lse, const float *q, const float *k, const float *v, int B,
                       int T, int H, int KV, cudaStream_t s)
{
    dim3 grid((T + QB - 1) / QB, B * H);
    attention_forward_kernel<HD><<<grid, QB, 0, s>>>(y, lse, q, k, v, T, H, KV,
                                                     1.0f / sqrtf((float)HD));
}

template <int HD>
static void backward_hd(float *dq, float *dk, float *dv, float *dsum, const float *dy,
                        const float *y, const float *lse, const float *q, const float *k,
                        const float *v, int B, int T, int H, int KV, cudaStream_t s)
{
    float scale = 1.0f / sqrtf((float)HD);
    dim3 gq((T + QB - 1) / QB, B * H), gk((T + QB - 1) / QB, B * KV);
    attention_prep_kernel<HD><<<gq, QB, 0, s>>>(dsum, dy, y, T, H);
    attention_dq_kernel<HD><<<gq, QB, 0, s>>>(dq, dy, lse, dsum, q, k, v, T, H, KV, scale);
    attention_dkdv_kernel<HD, true><<<gk, QB, 0, s>>>(dv, dy, lse, dsum, q, k, v, T, H, KV, scale);
    attention_dkdv_kernel<HD, false><<<gk, QB, 0, s>>>(dk, dy, lse, dsum, q, k, v, T, H, KV, scale);
}

int bn_cu_attention_forward(float *y, float *lse, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KV, int hd, cudaStream_t s)
{
    switch (hd) {
    case 8: forward_hd<8>(y, lse, q, k, v, B, T, H, KV, s); return 0;
    case 16: forward_hd<16>(y, lse, q, k, v, B, T, H, KV, s); return 0;
    case 32: forward_hd<32>(y, lse, q, k, v, B, T, H, KV, s); return 0;
    case 64: forward_hd<64>(y, lse, q, k, v, B, T, H, KV, s); return 0;
    case 128: forward_hd<128>(y, lse, q, k, v, B, T, H, KV, s); return 0;
    default: return -1;
    }
}

int bn_cu_attention_backward(float *dq, float *dk, float *dv, float *dsum, const float *dy,
                             const float *y, const float *lse, const float *q, const float *k,
                             const float *v, int B, int T, int H, int KV, int hd, cudaStream_t s)
{
#define BW(HD) backward_hd<HD>(dq, dk, dv, dsum, dy, y, lse, q, k, v, B, T, H, KV, s); return 0
    switch (hd) {
    case 8: BW(8);
    case 16: BW(16);
    case 32: BW(32);
    case 64: BW(64);
    case 128: BW(128);
    default: return -1;
    }
#undef BW
}
