/* attention.cu - fused causal attention with grouped-query heads (GQA), forward and backward,
 * in two versions: FP32 on CUDA cores (the reference / parity path) and bf16 on tensor cores.
 *
 * Flash-style: no T x T matrix ever reaches global memory. Scores s_ij = scale * q_i . k_j,
 * scale = 1/sqrt(hd); query head h reads kv head h / (H / KV). Causal: j <= i. The forward
 * pass keeps an online softmax (running max m, running sum l, output accumulator) and
 * stores the output and lse = m + log(l) per row (natural log of the scaled scores). The
 * backward pass recomputes p_ij = exp(s_ij - lse_i) and runs as three kernels without
 * atomics:
 *   prep:  dsum_i = sum_d dy_id * y_id                                   [B, H, T]
 *   dq:    per query row i:  dq_i = scale * sum_j ds_ij k_j
 *   dkdv:  per key row j of a kv head, looping over the query heads of its group:
 *          dv_j = sum_i p_ij dy_i,  dk_j = scale * sum_i ds_ij q_i
 * with ds_ij = p_ij (dy_i . v_j - dsum_i).
 * Layouts: q, y, dq [B*T, H*hd]; k, v, dk, dv [B*T, KV*hd]; lse, dsum [B, H, T].
 *
 * FP32 (attention_*_kernel): one thread per query (or key) row, KT-row tiles of K/V (Q/dY)
 * through shared memory, everything in registers.
 *
 * bf16 tensor cores (attention_*_bf16_kernel): nvcuda::wmma 16x16x16 bf16 products with
 * FP32 accumulators. A block is 4 warps over a 64-row tile (query rows, or key rows for
 * dkdv); each warp owns 16 rows. 64-row tiles of the other operand stream through shared
 * memory (rows padded to hd + 8 bf16: conflict-free fragment loads). Each warp stores its
 * 16 x 64 score block to shared memory as FP32; the softmax / gradient arithmetic is FP32,
 * two lanes per row; probabilities and ds go back to shared memory as bf16 for the next
 * product. The forward keeps its 16 x hd output accumulator in shared memory (FP32,
 * rescaled per row each tile); dq, dk, dv accumulate in fragments. Tiles above the
 * diagonal are never visited, and inside the diagonal tile a warp skips the 16-column
 * blocks that are fully masked. Global rows must start 16-byte aligned (hd >= 16 and
 * cudaMalloc'd bases give that).
 */
#include "cuda/ops.cuh"
#include "cuda/cuda.h"

#include <math.h>
#include <mma.h>

#include <algorithm>
#include <vector>

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

/* ======================= bf16 tensor cores (nvcuda::wmma) ======================= */

namespace {

using namespace nvcuda;

constexpr int TR = 64;      /* rows per tile: a block's own rows and each streamed tile */
constexpr int NW = 4;       /* warps per block, 16 own rows each */
constexpr int NT = NW * 32; /* threads per block */
constexpr int SLD = TR + 4; /* row stride (floats) of a warp's 16 x 64 FP32 score block */
constexpr int PLD = TR + 8; /* row stride (bf16) of a warp's 16 x 64 bf16 block (P, dS) */
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bn_bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bn_bf16, wmma::row_major> frag_b;   /* B    */
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bn_bf16, wmma::col_major> frag_bt;  /* B^T  */
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

/* Row geometry of one head dimension: LD bf16 per shared row of a 64-row tile, OLD floats
 * per row of a warp's 16 x HD FP32 block, SCR floats of a warp's scratch (two 16 x 64
 * score blocks, or the 16 x HD result at the end). Every region is a multiple of 32 bytes,
 * as wmma loads and stores need. */
template <int HD> struct Geo {
    static constexpr int LD = HD + 8, OLD = HD + 4, NC = HD / 16, VPR = HD / 8;
    static constexpr int SCR = 2 * 16 * SLD > 16 * OLD ? 2 * 16 * SLD : 16 * OLD;
    static constexpr size_t TILE = (size_t)2 * TR * LD; /* bytes of a 64 x HD bf16 tile */
};

/* Lane pair (2r, 2r+1) owns row r of the warp's 16 rows; lane half hf takes the 32 columns
 * hf*32 .. hf*32+31 of a 64-column block, visited in a rotated order so that the 32 lanes
 * hit 32 different banks of an SLD-strided FP32 block. */
__device__ __forceinline__ int rot_col(int t, int r, int hf)
{
    return hf * 32 + ((t + r + 16 * hf) & 31);
}

/* dst [64][HD + 8] (shared) <- rows r0 .. r0+63 of src (row stride rs elements); rows >= T
 * are zeros. 16-byte vectors, the whole block cooperates. */
template <int HD>
__device__ __forceinline__ void load_tile(bn_bf16 *dst, const bn_bf16 *src, size_t rs, int r0,
                                          int T)
{
    constexpr int VPR = Geo<HD>::VPR, LD = Geo<HD>::LD;
    for (int e = threadIdx.x; e < TR * VPR; e += NT) {
        int r = e / VPR, c = (e % VPR) * 8;
        uint4 x = make_uint4(0, 0, 0, 0);
        if (r0 + r < T) x = *(const uint4 *)(src + (size_t)(r0 + r) * rs + c);
        *(uint4 *)(dst + r * LD + c) = x;
    }
}

/* The warp's 16 x HD FP32 block o (row stride OLD) times mul -> bf16 rows row0 .. row0+15
 * of dst (row stride rs elements); rows >= T are not written. */
template <int HD>
__device__ __forceinline__ void store_rows(bn_bf16 *dst, size_t rs, const float *o, float mul,
                                           int row0, int T, int lane)
{
    constexpr int VPR = Geo<HD>::VPR, OLD = Geo<HD>::OLD;
    for (int e = lane; e < 16 * VPR; e += 32) {
        int r = e / VPR, c = (e % VPR) * 8;
        if (row0 + r >= T) continue;
        __align__(16) bn_bf16 o8[8];
        for (int u = 0; u < 8; u++) o8[u] = __float2bfloat16(o[r * OLD + c + u] * mul);
        *(uint4 *)(dst + (size_t)(row0 + r) * rs + c) = *(const uint4 *)o8;
    }
}

/* ---- forward ---- */

template <int HD> struct FwdSmem {
    typedef Geo<HD> G;
    static constexpr size_t q = 0, k = q + G::TILE, v = k + G::TILE, /* 64 x HD bf16 each */
        s = v + G::TILE,                       /* per warp: S [16][SLD] FP32 */
        o = s + (size_t)4 * NW * 16 * SLD,     /* per warp: O [16][OLD] FP32 */
        p = o + (size_t)4 * NW * 16 * G::OLD,  /* per warp: P [16][PLD] bf16 */
        r = p + (size_t)2 * NW * 16 * PLD,     /* per warp: 16 row factors */
        bytes = r + (size_t)4 * NW * 16;
};

/* grid (ceil(T/64), B*H), block 128. Warp w: query rows q0 + 16w .. +15.
 * Per 64-key tile j0: S = Q K^T [16, 64] (FP32); per row, x = S * scale * log2(e), masked
 * (j > i or j >= T) to -inf; m' = max(m, max x); P = 2^(x - m') (bf16); l = l 2^(m - m') +
 * sum P; O = O 2^(m - m') + P V [16, HD]. At the end y = O / l, lse = (m + log2 l) ln 2.
 * sl2 = scale * log2(e). */
template <int HD>
__global__ void __launch_bounds__(NT)
    attention_forward_bf16_kernel(bn_bf16 *y, float *lse, const bn_bf16 *q, const bn_bf16 *k,
                                  const bn_bf16 *v, int T, int H, int KV, float sl2)
{
    typedef Geo<HD> G;
    typedef FwdSmem<HD> SM;
    constexpr int LD = G::LD, OLD = G::OLD, NC = G::NC;
    extern __shared__ __align__(128) unsigned char smem[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    bn_bf16 *Qs = (bn_bf16 *)(smem + SM::q), *Ks = (bn_bf16 *)(smem + SM::k),
            *Vs = (bn_bf16 *)(smem + SM::v);
    float *Ss = (float *)(smem + SM::s) + warp * 16 * SLD;
    float *Os = (float *)(smem + SM::o) + warp * 16 * OLD;
    bn_bf16 *Ps = (bn_bf16 *)(smem + SM::p) + warp * 16 * PLD;
    float *Rs = (float *)(smem + SM::r) + warp * 16;

    int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / KV);
    int q0 = blockIdx.x * TR;
    size_t QD = (size_t)H * HD, KVD = (size_t)KV * HD;
    const bn_bf16 *qb = q + (size_t)b * T * QD + (size_t)h * HD;
    const bn_bf16 *kb = k + (size_t)b * T * KVD + (size_t)kvh * HD;
    const bn_bf16 *vb = v + (size_t)b * T * KVD + (size_t)kvh * HD;

    load_tile<HD>(Qs, qb, QD, q0, T);
    for (int e = lane; e < 16 * OLD; e += 32) Os[e] = 0.0f;
    __syncthreads();
    frag_a qf[NC]; /* this warp's 16 query rows */
    for (int c = 0; c < NC; c++) wmma::load_matrix_sync(qf[c], Qs + warp * 16 * LD + c * 16, LD);

    int r = lane >> 1, hf = lane & 1, i = q0 + warp * 16 + r;
    float m = -INFINITY, l = 0.0f; /* row r's running max (log2 units) and sum */
    int last = min(T - 1, q0 + TR - 1); /* highest key any row of the block needs */
    for (int j0 = 0; j0 <= last; j0 += TR) {
        __syncthreads(); /* every warp is done with the previous K/V tile */
        load_tile<HD>(Ks, kb, KVD, j0, T);
        load_tile<HD>(Vs, vb, KVD, j0, T);
        __syncthreads();
        /* key blocks of 16 this warp needs: all, or up to its own rows in the diagonal tile
         * (the columns skipped there are masked below without being read) */
        int nkb = j0 == q0 ? warp + 1 : TR / 16;

        /* S [16, 64] = Q [16, HD] K^T [HD, 64] */
        for (int n = 0; n < nkb; n++) {
            frag_c sf;
            wmma::fill_fragment(sf, 0.0f);
            for (int c = 0; c < NC; c++) {
                frag_bt kf;
                wmma::load_matrix_sync(kf, Ks + n * 16 * LD + c * 16, LD);
                wmma::mma_sync(sf, qf[c], kf, sf);
            }
            wmma::store_matrix_sync(Ss + n * 16, sf, SLD, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax of row r (two lanes, 32 columns each) */
        float x[32], mt = -INFINITY;
#pragma unroll
        for (int t = 0; t < 32; t++) {
            int c = rot_col(t, r, hf), j = j0 + c;
            x[t] = (j <= i && j < T) ? Ss[r * SLD + c] * sl2 : -INFINITY;
            mt = fmaxf(mt, x[t]);
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        float mn = fmaxf(m, mt), mb = mn == -INFINITY ? 0.0f : mn;
        float alpha = exp2f(m - mb), ls = 0.0f;
#pragma unroll
        for (int t = 0; t < 32; t++) {
            float p = exp2f(x[t] - mb);
            Ps[r * PLD + rot_col(t, r, hf)] = __float2bfloat16(p);
            ls += p;
        }
        ls += __shfl_xor_sync(0xffffffffu, ls, 1);
        l = l * alpha + ls;
        m = mn;
        if (hf == 0) Rs[r] = alpha;
        __syncwarp();
        for (int e = lane; e < 16 * HD; e += 32) Os[(e / HD) * OLD + e % HD] *= Rs[e / HD];
        __syncwarp();

        /* O [16, HD] += P [16, 64] V [64, HD] */
        for (int dn = 0; dn < NC; dn++) {
            frag_c of;
            wmma::load_matrix_sync(of, Os + dn * 16, OLD, wmma::mem_row_major);
            for (int kk = 0; kk < nkb; kk++) {
                frag_a pf;
                frag_b vf;
                wmma::load_matrix_sync(pf, Ps + kk * 16, PLD);
                wmma::load_matrix_sync(vf, Vs + kk * 16 * LD + dn * 16, LD);
                wmma::mma_sync(of, pf, vf, of);
            }
            wmma::store_matrix_sync(Os + dn * 16, of, OLD, wmma::mem_row_major);
        }
    }
    __syncwarp();
    if (hf == 0) {
        Rs[r] = 1.0f / l;
        if (i < T) lse[(size_t)bh * T + i] = (m + log2f(l)) * LN2;
    }
    __syncwarp();
    /* y rows [16, HD] = O / l */
    constexpr int VPR = G::VPR;
    bn_bf16 *yb = y + (size_t)b * T * QD + (size_t)h * HD;
    for (int e = lane; e < 16 * VPR; e += 32) {
        int rr = e / VPR, c = (e % VPR) * 8, ii = q0 + warp * 16 + rr;
        if (ii >= T) continue;
        __align__(16) bn_bf16 o8[8];
        for (int u = 0; u < 8; u++) o8[u] = __float2bfloat16(Os[rr * OLD + c + u] * Rs[rr]);
        *(uint4 *)(yb + (size_t)ii * QD + c) = *(const uint4 *)o8;
    }
}

/* ---- backward ---- */

/* grid (ceil(T/128), B*H), block 128: dsum [B, H, T] = sum_d dy * y (FP32) per row */
template <int HD>
__global__ void attention_prep_bf16_kernel(float *dsum, const bn_bf16 *dy, const bn_bf16 *y, int T,
                                           int H)
{
    int bh = blockIdx.y, b = bh / H, h = bh % H;
    int i = blockIdx.x * NT + threadIdx.x;
    if (i >= T) return;
    size_t off = ((size_t)b * T + i) * (size_t)H * HD + (size_t)h * HD;
    const __nv_bfloat162 *a = (const __nv_bfloat162 *)(dy + off), *c = (const __nv_bfloat162 *)(y + off);
    float s = 0.0f;
    for (int d = 0; d < HD / 2; d++) {
        float2 x = __bfloat1622float2(a[d]), z = __bfloat1622float2(c[d]);
        s += x.x * z.x + x.y * z.y;
    }
    dsum[(size_t)bh * T + i] = s;
}

template <int HD> struct DqSmem {
    typedef Geo<HD> G;
    static constexpr size_t q = 0, o = q + G::TILE, k = o + G::TILE, v = k + G::TILE,
        s = v + G::TILE,                      /* per warp: S, dP [16][SLD] FP32; dq at the end */
        p = s + (size_t)4 * NW * G::SCR,      /* per warp: dS [16][PLD] bf16 */
        bytes = p + (size_t)2 * NW * 16 * PLD;
};

/* grid (ceil(T/64), B*H), block 128. Warp w: query rows q0 + 16w .. +15.
 * Per 64-key tile: S = Q K^T, dP = dY V^T [16, 64]; P = 2^(S sl2 - lse log2 e) (0 where
 * masked); dS = P (dP - dsum) (bf16); dQ [16, HD] += dS K (fragments). dq = scale dQ. */
template <int HD>
__global__ void __launch_bounds__(NT)
    attention_dq_bf16_kernel(bn_bf16 *dq, const bn_bf16 *dy, const float *lse, const float *dsum,
                             const bn_bf16 *q, const bn_bf16 *k, const bn_bf16 *v, int T, int H,
                             int KV, float sl2, float scale)
{
    typedef Geo<HD> G;
    typedef DqSmem<HD> SM;
    constexpr int LD = G::LD, OLD = G::OLD, NC = G::NC;
    extern __shared__ __align__(128) unsigned char smem[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    bn_bf16 *Qs = (bn_bf16 *)(smem + SM::q), *Os = (bn_bf16 *)(smem + SM::o),
            *Ks = (bn_bf16 *)(smem + SM::k), *Vs = (bn_bf16 *)(smem + SM::v);
    float *Ss = (float *)(smem + SM::s) + warp * G::SCR, *Dp = Ss + 16 * SLD;
    bn_bf16 *dSs = (bn_bf16 *)(smem + SM::p) + warp * 16 * PLD;

    int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / KV);
    int q0 = blockIdx.x * TR;
    size_t QD = (size_t)H * HD, KVD = (size_t)KV * HD;
    size_t qoff = (size_t)b * T * QD + (size_t)h * HD, kvoff = (size_t)b * T * KVD + (size_t)kvh * HD;

    load_tile<HD>(Qs, q + qoff, QD, q0, T);
    load_tile<HD>(Os, dy + qoff, QD, q0, T);
    __syncthreads();
    frag_a qf[NC], of[NC]; /* this warp's 16 rows of q and dy */
    for (int c = 0; c < NC; c++) {
        wmma::load_matrix_sync(qf[c], Qs + warp * 16 * LD + c * 16, LD);
        wmma::load_matrix_sync(of[c], Os + warp * 16 * LD + c * 16, LD);
    }
    frag_c dqf[NC];
    for (int c = 0; c < NC; c++) wmma::fill_fragment(dqf[c], 0.0f);

    int r = lane >> 1, hf = lane & 1, i = q0 + warp * 16 + r;
    bool live = i < T;
    float lse2 = live ? lse[(size_t)bh * T + i] * LOG2E : 0.0f;
    float di = live ? dsum[(size_t)bh * T + i] : 0.0f;
    int last = min(T - 1, q0 + TR - 1);
    for (int j0 = 0; j0 <= last; j0 += TR) {
        __syncthreads();
        load_tile<HD>(Ks, k + kvoff, KVD, j0, T);
        load_tile<HD>(Vs, v + kvoff, KVD, j0, T);
        __syncthreads();
        int nkb = j0 == q0 ? warp + 1 : TR / 16;

        /* S = Q K^T, dP = dY V^T  [16, 64] */
        for (int n = 0; n < nkb; n++) {
            frag_c sf, pf;
            wmma::fill_fragment(sf, 0.0f);
            wmma::fill_fragment(pf, 0.0f);
            for (int c = 0; c < NC; c++) {
                frag_bt kf, vf;
                wmma::load_matrix_sync(kf, Ks + n * 16 * LD + c * 16, LD);
                wmma::mma_sync(sf, qf[c], kf, sf);
                wmma::load_matrix_sync(vf, Vs + n * 16 * LD + c * 16, LD);
                wmma::mma_sync(pf, of[c], vf, pf);
            }
            wmma::store_matrix_sync(Ss + n * 16, sf, SLD, wmma::mem_row_major);
            wmma::store_matrix_sync(Dp + n * 16, pf, SLD, wmma::mem_row_major);
        }
        __syncwarp();

        /* dS = P (dP - dsum), 0 where masked (the masked columns are never read) */
#pragma unroll 8
        for (int t = 0; t < 32; t++) {
            int c = rot_col(t, r, hf), j = j0 + c;
            float ds = 0.0f;
            if (live && j <= i && j < T) {
                float p = exp2f(Ss[r * SLD + c] * sl2 - lse2);
                ds = p * (Dp[r * SLD + c] - di);
            }
            dSs[r * PLD + c] = __float2bfloat16(ds);
        }
        __syncwarp();

        /* dQ [16, HD] += dS [16, 64] K [64, HD] */
        for (int dn = 0; dn < NC; dn++)
            for (int kk = 0; kk < nkb; kk++) {
                frag_a af;
                frag_b kf;
                wmma::load_matrix_sync(af, dSs + kk * 16, PLD);
                wmma::load_matrix_sync(kf, Ks + kk * 16 * LD + dn * 16, LD);
                wmma::mma_sync(dqf[dn], af, kf, dqf[dn]);
            }
    }
    __syncwarp();
    for (int dn = 0; dn < NC; dn++) wmma::store_matrix_sync(Ss + dn * 16, dqf[dn], OLD, wmma::mem_row_major);
    __syncwarp();
    store_rows<HD>(dq + qoff, QD, Ss, scale, q0 + warp * 16, T, lane);
}

template <int HD> struct DkvSmem {
    typedef Geo<HD> G;
    static constexpr size_t k = 0, v = k + G::TILE, q = v + G::TILE, o = q + G::TILE,
        s = o + G::TILE,                          /* per warp: S^T, dP^T [16][SLD]; dk/dv at the end */
        p = s + (size_t)4 * NW * G::SCR,          /* per warp: P^T, dS^T [16][PLD] bf16 */
        st = p + (size_t)2 * NW * 2 * 16 * PLD,   /* lse * log2 e [64], dsum [64] of the query tile */
        bytes = st + (size_t)4 * 2 * TR;
};

/* grid (ceil(T/64), B*KV), block 128. Warp w: key rows k0 + 16w .. +15 of kv head kvh.
 * For each query head h of the group and each 64-query tile from the diagonal on:
 * S^T = K Q^T, dP^T = V dY^T [16, 64]; P^T = 2^(S^T sl2 - lse log2 e) (0 where i < j or
 * i >= T); dS^T = P^T (dP^T - dsum); dV [16, HD] += P^T dY, dK += dS^T Q (fragments kept
 * across the whole loop). dk = scale dK, dv = dV. */
template <int HD>
__global__ void __launch_bounds__(NT)
    attention_dkdv_bf16_kernel(bn_bf16 *dk, bn_bf16 *dv, const bn_bf16 *dy, const float *lse,
                               const float *dsum, const bn_bf16 *q, const bn_bf16 *k,
                               const bn_bf16 *v, int T, int H, int KV, float sl2, float scale)
{
    typedef Geo<HD> G;
    typedef DkvSmem<HD> SM;
    constexpr int LD = G::LD, OLD = G::OLD, NC = G::NC;
    extern __shared__ __align__(128) unsigned char smem[];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    bn_bf16 *Ks = (bn_bf16 *)(smem + SM::k), *Vs = (bn_bf16 *)(smem + SM::v),
            *Qs = (bn_bf16 *)(smem + SM::q), *Os = (bn_bf16 *)(smem + SM::o);
    float *St = (float *)(smem + SM::s) + warp * G::SCR, *Dt = St + 16 * SLD;
    bn_bf16 *Pt = (bn_bf16 *)(smem + SM::p) + warp * 2 * 16 * PLD, *dSt = Pt + 16 * PLD;
    float *Ls = (float *)(smem + SM::st), *Ds = Ls + TR;

    int bkv = blockIdx.y, b = bkv / KV, kvh = bkv % KV, GQ = H / KV;
    int k0 = blockIdx.x * TR;
    size_t QD = (size_t)H * HD, KVD = (size_t)KV * HD;
    size_t kvoff = (size_t)b * T * KVD + (size_t)kvh * HD;
    load_tile<HD>(Ks, k + kvoff, KVD, k0, T);
    load_tile<HD>(Vs, v + kvoff, KVD, k0, T);
    const bn_bf16 *Kw = Ks + warp * 16 * LD, *Vw = Vs + warp * 16 * LD; /* this warp's keys */

    frag_c dkf[NC], dvf[NC];
    for (int c = 0; c < NC; c++) {
        wmma::fill_fragment(dkf[c], 0.0f);
        wmma::fill_fragment(dvf[c], 0.0f);
    }
    int r = lane >> 1, hf = lane & 1, j = k0 + warp * 16 + r;
    for (int g = 0; g < GQ; g++) {
        int h = kvh * GQ + g;
        size_t bh = (size_t)b * H + h, qoff = (size_t)b * T * QD + (size_t)h * HD;
        for (int i0 = k0; i0 < T; i0 += TR) {
            __syncthreads(); /* every warp is done with the previous Q/dY tile */
            load_tile<HD>(Qs, q + qoff, QD, i0, T);
            load_tile<HD>(Os, dy + qoff, QD, i0, T);
            for (int e = threadIdx.x; e < TR; e += NT) {
                int ii = i0 + e;
                Ls[e] = ii < T ? lse[bh * T + ii] * LOG2E : 0.0f;
                Ds[e] = ii < T ? dsum[bh * T + ii] : 0.0f;
            }
            __syncthreads();
            /* query blocks of 16 this warp needs: all, or from its own keys on in the
             * diagonal tile (the columns skipped there are masked without being read) */
            int nlo = i0 == k0 ? warp : 0;

            /* S^T = K Q^T, dP^T = V dY^T  [16, 64] */
            for (int n = nlo; n < TR / 16; n++) {
                frag_c sf, pf;
                wmma::fill_fragment(sf, 0.0f);
                wmma::fill_fragment(pf, 0.0f);
                for (int c = 0; c < NC; c++) {
                    frag_a kf, vf;
                    frag_bt qf, of;
                    wmma::load_matrix_sync(kf, Kw + c * 16, LD);
                    wmma::load_matrix_sync(qf, Qs + n * 16 * LD + c * 16, LD);
                    wmma::mma_sync(sf, kf, qf, sf);
                    wmma::load_matrix_sync(vf, Vw + c * 16, LD);
                    wmma::load_matrix_sync(of, Os + n * 16 * LD + c * 16, LD);
                    wmma::mma_sync(pf, vf, of, pf);
                }
                wmma::store_matrix_sync(St + n * 16, sf, SLD, wmma::mem_row_major);
                wmma::store_matrix_sync(Dt + n * 16, pf, SLD, wmma::mem_row_major);
            }
            __syncwarp();

            /* P^T, dS^T of key row r, 0 where masked (i < j or i >= T: also every column
             * of a padding key row j >= T) */
#pragma unroll 8
            for (int t = 0; t < 32; t++) {
                int c = rot_col(t, r, hf), ii = i0 + c;
                float p = 0.0f, ds = 0.0f;
                if (ii >= j && ii < T) {
                    p = exp2f(St[r * SLD + c] * sl2 - Ls[c]);
                    ds = p * (Dt[r * SLD + c] - Ds[c]);
                }
                Pt[r * PLD + c] = __float2bfloat16(p);
                dSt[r * PLD + c] = __float2bfloat16(ds);
            }
            __syncwarp();

            /* dV [16, HD] += P^T [16, 64] dY [64, HD];  dK += dS^T [16, 64] Q [64, HD] */
            for (int dn = 0; dn < NC; dn++)
                for (int kk = nlo; kk < TR / 16; kk++) {
                    frag_a af;
                    frag_b bf;
                    wmma::load_matrix_sync(af, Pt + kk * 16, PLD);
                    wmma::load_matrix_sync(bf, Os + kk * 16 * LD + dn * 16, LD);
                    wmma::mma_sync(dvf[dn], af, bf, dvf[dn]);
                    wmma::load_matrix_sync(af, dSt + kk * 16, PLD);
                    wmma::load_matrix_sync(bf, Qs + kk * 16 * LD + dn * 16, LD);
                    wmma::mma_sync(dkf[dn], af, bf, dkf[dn]);
                }
        }
    }
    /* the scratch S^T/dP^T becomes the warp's 16 x HD result block, dv then dk */
    __syncwarp();
    for (int dn = 0; dn < NC; dn++) wmma::store_matrix_sync(St + dn * 16, dvf[dn], OLD, wmma::mem_row_major);
    __syncwarp();
    store_rows<HD>(dv + kvoff, KVD, St, 1.0f, k0 + warp * 16, T, lane);
    __syncwarp();
    for (int dn = 0; dn < NC; dn++) wmma::store_matrix_sync(St + dn * 16, dkf[dn], OLD, wmma::mem_row_major);
    __syncwarp();
    store_rows<HD>(dk + kvoff, KVD, St, scale, k0 + warp * 16, T, lane);
}

template <int HD>
void forward_bf16_hd(bn_bf16 *y, float *lse, const bn_bf16 *q, const bn_bf16 *k, const bn_bf16 *v,
                     int B, int T, int H, int KV, cudaStream_t s)
{
    float scale = 1.0f / sqrtf((float)HD);
    size_t smem = FwdSmem<HD>::bytes;
    /* errors here show at the launch (cudaGetLastError), as a launch's own would */
    (void)cudaFuncSetAttribute(attention_forward_bf16_kernel<HD>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    dim3 grid((T + TR - 1) / TR, B * H);
    attention_forward_bf16_kernel<HD><<<grid, NT, smem, s>>>(y, lse, q, k, v, T, H, KV, scale * LOG2E);
}

template <int HD>
void backward_bf16_hd(bn_bf16 *dq, bn_bf16 *dk, bn_bf16 *dv, float *dsum, const bn_bf16 *dy,
                      const bn_bf16 *y, const float *lse, const bn_bf16 *q, const bn_bf16 *k,
                      const bn_bf16 *v, int B, int T, int H, int KV, cudaStream_t s)
{
    float scale = 1.0f / sqrtf((float)HD);
    size_t sq = DqSmem<HD>::bytes, skv = DkvSmem<HD>::bytes;
    (void)cudaFuncSetAttribute(attention_dq_bf16_kernel<HD>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq);
    (void)cudaFuncSetAttribute(attention_dkdv_bf16_kernel<HD>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)skv);
    dim3 gp((T + NT - 1) / NT, B * H), gq((T + TR - 1) / TR, B * H), gk((T + TR - 1) / TR, B * KV);
    attention_prep_bf16_kernel<HD><<<gp, NT, 0, s>>>(dsum, dy, y, T, H);
    attention_dq_bf16_kernel<HD><<<gq, NT, sq, s>>>(dq, dy, lse, dsum, q, k, v, T, H, KV,
                                                    scale * LOG2E, scale);
    attention_dkdv_bf16_kernel<HD><<<gk, NT, skv, s>>>(dk, dv, dy, lse, dsum, q, k, v, T, H, KV,
                                                       scale * LOG2E, scale);
}

} /* namespace */

int bn_cu_attention_forward_bf16(bn_bf16 *y, float *lse, const bn_bf16 *q, const bn_bf16 *k,
                                 const bn_bf16 *v, int B, int T, int H, int KV, int hd, cudaStream_t s)
{
    if (hd != 16 && hd != 32 && hd != 64 && hd != 128) return -1;
    if (B <= 0 || T <= 0) return 0;
    switch (hd) {
    case 16: forward_bf16_hd<16>(y, lse, q, k, v, B, T, H, KV, s); break;
    case 32: forward_bf16_hd<32>(y, lse, q, k, v, B, T, H, KV, s); break;
    case 64: forward_bf16_hd<64>(y, lse, q, k, v, B, T, H, KV, s); break;
    default: forward_bf16_hd<128>(y, lse, q, k, v, B, T, H, KV, s); break;
    }
    return 0;
}

int bn_cu_attention_backward_bf16(bn_bf16 *dq, bn_bf16 *dk, bn_bf16 *dv, float *dsum,
                                  const bn_bf16 *dy, const bn_bf16 *y, const float *lse,
                                  const bn_bf16 *q, const bn_bf16 *k, const bn_bf16 *v,
                                  int B, int T, int H, int KV, int hd, cudaStream_t s)
{
    if (hd != 16 && hd != 32 && hd != 64 && hd != 128) return -1;
    if (B <= 0 || T <= 0) return 0;
#define BW(HD) backward_bf16_hd<HD>(dq, dk, dv, dsum, dy, y, lse, q, k, v, B, T, H, KV, s); break
    switch (hd) {
    case 16: BW(16);
    case 32: BW(32);
    case 64: BW(64);
    default: BW(128);
    }
#undef BW
    return 0;
}

/* ======================= self-check: bf16 tensor cores vs FP32 ======================= */

namespace {

/* device buffers freed on every return */
struct DevBufs {
    std::vector<void *> p;
    ~DevBufs()
    {
        for (void *x : p) cudaFree(x);
    }
    template <typename T> cudaError_t get(T **out, size_t n)
    {
        void *x = NULL;
        cudaError_t e = cudaMalloc(&x, n * sizeof(T) > 0 ? n * sizeof(T) : 1);
        if (e == cudaSuccess) p.push_back(x);
        *out = (T *)x;
        return e;
    }
};

struct Events {
    cudaEvent_t a = NULL, b = NULL;
    ~Events()
    {
        if (a) cudaEventDestroy(a);
        if (b) cudaEventDestroy(b);
    }
};

int check_fail(bn_err *err, cudaError_t e, const char *what)
{
    return bn_err_set(err, e == cudaErrorMemoryAllocation ? BN_ENOMEM : BN_EIO,
                      "attention check: cuda: %s: %s", what, cudaGetErrorString(e));
}

#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return check_fail(err, e_, #call); } while (0)

/* seeded N(0, 1) (xorshift32 + Box-Muller) times mul, rounded to bf16; up holds the
 * rounded values as floats */
void randn_bf16(std::vector<bn_bf16> &out, std::vector<float> &up, size_t n, float mul,
                unsigned *state)
{
    out.resize(n);
    up.resize(n);
    for (size_t i = 0; i < n; i++) {
        float u[2];
        for (int t = 0; t < 2; t++) {
            unsigned x = *state;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *state = x;
            u[t] = ((x >> 8) + 0.5f) / 16777216.0f; /* (0, 1) */
        }
        float z = sqrtf(-2.0f * logf(u[0])) * cosf(6.283185307f * u[1]) * mul;
        out[i] = __float2bfloat16(z);
        up[i] = __bfloat162float(out[i]);
    }
}

/* ||a - ref|| / ||ref||; NaN when a holds a non-finite value */
double rel_l2(const std::vector<float> &a, const std::vector<float> &ref)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        if (!isfinite(a[i])) return NAN;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

} /* namespace */

int bn_cu_attention_check(int B, int T, int H, int KV, int hd, unsigned seed, bn_cu_attn_check *out,
                          bn_err *err)
{
    if (B <= 0 || T <= 0 || H <= 0 || KV <= 0 || H % KV != 0 ||
        (hd != 16 && hd != 32 && hd != 64 && hd != 128))
        return bn_err_set(err, BN_EINVAL, "attention check: bad shape B=%d T=%d H=%d KV=%d hd=%d",
                          B, T, H, KV, hd);
    size_t nq = (size_t)B * T * H * hd, nkv = (size_t)B * T * KV * hd, nr = (size_t)B * H * T;

    /* inputs: q ~ N(0, 4), k, v, dy ~ N(0, 1): scaled scores ~ N(0, 4) */
    unsigned st = seed * 2654435761u + 12345u;
    if (st == 0) st = 1;
    std::vector<bn_bf16> hq, hk, hv, hdy;
    std::vector<float> fq, fk, fv, fdy;
    randn_bf16(hq, fq, nq, 2.0f, &st);
    randn_bf16(hk, fk, nkv, 1.0f, &st);
    randn_bf16(hv, fv, nkv, 1.0f, &st);
    randn_bf16(hdy, fdy, nq, 1.0f, &st);

    DevBufs m;
    float *q, *k, *v, *dy, *y, *lse, *dq, *dk, *dv, *dsum; /* FP32 reference */
    bn_bf16 *bq, *bk, *bv, *bdy, *by, *bdq, *bdk, *bdv;    /* tensor cores */
    float *blse, *bdsum;
    CK(m.get(&q, nq));
    CK(m.get(&k, nkv));
    CK(m.get(&v, nkv));
    CK(m.get(&dy, nq));
    CK(m.get(&y, nq));
    CK(m.get(&lse, nr));
    CK(m.get(&dq, nq));
    CK(m.get(&dk, nkv));
    CK(m.get(&dv, nkv));
    CK(m.get(&dsum, nr));
    CK(m.get(&bq, nq));
    CK(m.get(&bk, nkv));
    CK(m.get(&bv, nkv));
    CK(m.get(&bdy, nq));
    CK(m.get(&by, nq));
    CK(m.get(&blse, nr));
    CK(m.get(&bdq, nq));
    CK(m.get(&bdk, nkv));
    CK(m.get(&bdv, nkv));
    CK(m.get(&bdsum, nr));
    CK(cudaMemcpy(q, fq.data(), nq * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(k, fk.data(), nkv * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(v, fv.data(), nkv * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dy, fdy.data(), nq * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bq, hq.data(), nq * sizeof(bn_bf16), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bk, hk.data(), nkv * sizeof(bn_bf16), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bv, hv.data(), nkv * sizeof(bn_bf16), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bdy, hdy.data(), nq * sizeof(bn_bf16), cudaMemcpyHostToDevice));

    Events ev;
    CK(cudaEventCreate(&ev.a));
    CK(cudaEventCreate(&ev.b));
    cudaStream_t s = 0;

    /* One untimed warm-up and 5 timed runs of one op; its outputs (out[0..n_out) of
     * bytes[]) poisoned with 0xFF bytes (NaN in FP32 and bf16) before each run. */
    struct Poison { void *p; size_t bytes; };
    auto timed = [&](double *ms, const Poison *po, int n_po, auto &&run) -> int {
        float t[5];
        for (int rep = -1; rep < 5; rep++) {
            for (int x = 0; x < n_po; x++) CK(cudaMemsetAsync(po[x].p, 0xFF, po[x].bytes, s));
            CK(cudaEventRecord(ev.a, s));
            run();
            CK(cudaGetLastError());
            CK(cudaEventRecord(ev.b, s));
            CK(cudaEventSynchronize(ev.b));
            float e = 0;
            CK(cudaEventElapsedTime(&e, ev.a, ev.b));
            if (rep >= 0) t[rep] = e;
        }
        std::sort(t, t + 5);
        *ms = t[2];
        return 0;
    };
    int rc;
    Poison pf[] = { { y, nq * sizeof(float) }, { lse, nr * sizeof(float) } };
    rc = timed(&out->ms_fwd_ref, pf, 2, [&] { bn_cu_attention_forward(y, lse, q, k, v, B, T, H, KV, hd, s); });
    if (rc) return rc;
    Poison pb[] = { { dq, nq * sizeof(float) }, { dk, nkv * sizeof(float) },
                    { dv, nkv * sizeof(float) }, { dsum, nr * sizeof(float) } };
    rc = timed(&out->ms_bwd_ref, pb, 4, [&] {
        bn_cu_attention_backward(dq, dk, dv, dsum, dy, y, lse, q, k, v, B, T, H, KV, hd, s);
    });
    if (rc) return rc;
    Poison tf[] = { { by, nq * sizeof(bn_bf16) }, { blse, nr * sizeof(float) } };
    rc = timed(&out->ms_fwd_tc, tf, 2, [&] { bn_cu_attention_forward_bf16(by, blse, bq, bk, bv, B, T, H, KV, hd, s); });
    if (rc) return rc;
    Poison tb[] = { { bdq, nq * sizeof(bn_bf16) }, { bdk, nkv * sizeof(bn_bf16) },
                    { bdv, nkv * sizeof(bn_bf16) }, { bdsum, nr * sizeof(float) } };
    rc = timed(&out->ms_bwd_tc, tb, 4, [&] {
        bn_cu_attention_backward_bf16(bdq, bdk, bdv, bdsum, bdy, by, blse, bq, bk, bv, B, T, H, KV, hd, s);
    });
    if (rc) return rc;

    /* compare */
    auto fetch_f = [&](std::vector<float> &h, const float *d, size_t n) -> int {
        h.resize(n);
        CK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
        return 0;
    };
    auto fetch_b = [&](std::vector<float> &h, const bn_bf16 *d, size_t n) -> int {
        std::vector<bn_bf16> t(n);
        CK(cudaMemcpy(t.data(), d, n * sizeof(bn_bf16), cudaMemcpyDeviceToHost));
        h.resize(n);
        for (size_t i = 0; i < n; i++) h[i] = __bfloat162float(t[i]);
        return 0;
    };
    std::vector<float> ref, got;
    if ((rc = fetch_f(ref, y, nq)) || (rc = fetch_b(got, by, nq))) return rc;
    out->err_y = rel_l2(got, ref);
    if ((rc = fetch_f(ref, lse, nr)) || (rc = fetch_f(got, blse, nr))) return rc;
    out->err_lse = rel_l2(got, ref);
    if ((rc = fetch_f(ref, dq, nq)) || (rc = fetch_b(got, bdq, nq))) return rc;
    out->err_dq = rel_l2(got, ref);
    if ((rc = fetch_f(ref, dk, nkv)) || (rc = fetch_b(got, bdk, nkv))) return rc;
    out->err_dk = rel_l2(got, ref);
    if ((rc = fetch_f(ref, dv, nkv)) || (rc = fetch_b(got, bdv, nkv))) return rc;
    out->err_dv = rel_l2(got, ref);
    return 0;
}
#undef CK
