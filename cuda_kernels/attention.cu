// Scaled dot-product attention, F.scaled_dot_product_attention(q, k, v, is_causal) semantics:
// out = softmax(q k^T / sqrt(d) + mask) v, the causal mask top-left aligned as PyTorch's (query i sees keys 0..i,
// also when the query and key lengths differ). Storage fp32 or fp16, arithmetic fp32.
//
// np_attention_rows<T>  one warp per query row, 4 rows (of one batch and head) per block. The warp walks the
//                       keys in groups of 32: lane j scores key j0 + j against the query (held in shared memory,
//                       scaled by 1/sqrt(d)), the group's maximum updates a running (max, sum) as an online
//                       softmax (the accumulators rescaled when the maximum grows), then the 32 weights are
//                       broadcast one after the other and each lane accumulates its head_dim elements of the
//                       weighted sum of V (lanes own elements lane, lane + 32, ...: head_dim <= 128). The score
//                       matrix is never stored: memory is the inputs and the output.
//
// Launch contracts: cuda_kernels/README.md. Every tensor holds fewer than 2^31 elements (32-bit indexing).
#include "np_common.cuh"

#define NP_ATT_ROWS 4      // query rows (warps) per block
#define NP_ATT_MAX_DIM 128  // head_dim <= 32 * NP_ATT_DIM_PER_LANE
#define NP_ATT_DIM_PER_LANE 4

// q [pairs, L, d], k and v [pairs, S, d], out [pairs, L, d] (pairs = batch * heads).
// grid (ceil(L / 4), pairs), block 128. vec4: d % 4 == 0 (every row starts 4-element aligned).
template <typename T>
__global__ void __launch_bounds__(128)
    np_attention_rows(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                      int L, int S, int d, int causal, int vec4) {
    __shared__ __align__(16) float qs[NP_ATT_ROWS][NP_ATT_MAX_DIM];
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * NP_ATT_ROWS + warp;
    if (row >= L) return;  // whole warps leave: only warp-level synchronization below
    const unsigned int pair = blockIdx.y;
    const T* qr = q + (pair * static_cast<unsigned int>(L) + row) * d;
    const T* kp = k + pair * static_cast<unsigned int>(S) * d;
    const T* vp = v + pair * static_cast<unsigned int>(S) * d;
    const float scale = 1.0f / sqrtf(static_cast<float>(d));
    float* qw = qs[warp];
    for (int e = lane; e < d; e += 32) qw[e] = np_ld(qr + e) * scale;
    __syncwarp();

    const int end = causal ? min(S, row + 1) : S;  // keys this query sees
    float m = __int_as_float(0xff800000), l = 0.0f;
    float acc[NP_ATT_DIM_PER_LANE];
#pragma unroll
    for (int i = 0; i < NP_ATT_DIM_PER_LANE; ++i) acc[i] = 0.0f;

    for (int j0 = 0; j0 < end; j0 += 32) {
        const int j = j0 + lane;
        float s = __int_as_float(0xff800000);
        if (j < end) {
            const T* kr = kp + j * d;
            float dot = 0.0f;
            if (vec4) {
                for (int e = 0; e < d; e += 4) {
                    float kv[4];
                    np_load4(kr + e, kv);
                    dot = fmaf(qw[e], kv[0], dot);
                    dot = fmaf(qw[e + 1], kv[1], dot);
                    dot = fmaf(qw[e + 2], kv[2], dot);
                    dot = fmaf(qw[e + 3], kv[3], dot);
                }
            } else {
                for (int e = 0; e < d; ++e) dot = fmaf(qw[e], np_ld(kr + e), dot);
            }
            s = dot;
        }
        const float mn = fmaxf(m, np_warp_max(s));  // finite: key j0 is always seen
        const float correction = expf(m - mn);      // 0 on the first group (m = -inf)
        const float p = j < end ? expf(s - mn) : 0.0f;
        l = l * correction + np_warp_sum(p);
#pragma unroll
        for (int i = 0; i < NP_ATT_DIM_PER_LANE; ++i) acc[i] *= correction;
        m = mn;
        const int count = min(32, end - j0);
        for (int jj = 0; jj < count; ++jj) {
            const float w = __shfl_sync(0xffffffffu, p, jj);
            const T* vr = vp + (j0 + jj) * d;
#pragma unroll
            for (int i = 0; i < NP_ATT_DIM_PER_LANE; ++i) {
                const int e = lane + 32 * i;
                if (e < d) acc[i] = fmaf(w, np_ld(vr + e), acc[i]);
            }
        }
    }
    const float inv = 1.0f / l;
    T* orow = out + (pair * static_cast<unsigned int>(L) + row) * d;
#pragma unroll
    for (int i = 0; i < NP_ATT_DIM_PER_LANE; ++i) {
        const int e = lane + 32 * i;
        if (e < d) orow[e] = np_from_float<T>(acc[i] * inv);
    }
}
