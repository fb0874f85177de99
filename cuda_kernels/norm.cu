// Layer normalization, PyTorch semantics: y = (x - mean) / sqrt(var + eps) * weight + bias, the biased variance,
// eps = 1e-5 (torch.nn.LayerNorm's default and ConvNeXt's). Storage fp32 or fp16, arithmetic fp32; weight and
// bias have the layer's storage type (they are the module's parameters).
//
// np_norm_layernorm<T>     over the last axis: rows of D contiguous values ([N, tokens, D], a transformer's
//                          LayerNorm). bx threads per row (a warp, or a block of 256 for long rows), by rows per
//                          block; two passes over the row for the mean and the variance of the centered values
//                          (no cancellation, as E[x^2] - E[x]^2 would have), a third writes the output.
// np_norm_layernorm_cf<T>  channels first: [N, D, T] (ConvNeXt's LayerNorm2d on N x C x H x W, T = H * W), D
//                          values T apart at each position. One thread per position: a warp reads 32 consecutive
//                          positions of a channel, so every pass is coalesced.
//
// Launch contracts: cuda_kernels/README.md. Every tensor holds fewer than 2^31 elements (32-bit indexing).
#include "np_common.cuh"

#define NP_LN_EPS 1e-5f

// The sum of v over the bx = blockDim.x threads of a row (32 or 256), returned to all of them. With bx = 256 the
// block holds one row (by = 1), so the barriers are the whole block's.
__device__ __forceinline__ float np_row_sum(float v, float* scratch) {
    v = np_warp_sum(v);
    if (blockDim.x == 32) return v;
    const int warp = threadIdx.x >> 5;
    __syncthreads();  // the previous use of scratch is over
    if ((threadIdx.x & 31) == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) total += scratch[k];
    return total;
}

// block (bx, by): bx = 32 with by = 8 (a warp per row), or bx = 256 with by = 1; grid ceil(rows / by).
template <typename T>
__global__ void __launch_bounds__(256)
    np_norm_layernorm(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                      T* __restrict__ y, int rows, int D) {
    __shared__ float scratch[8];
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;  // bx = 32: the whole warp leaves; bx = 256: the whole block (by = 1)
    const T* xr = x + row * D;
    T* yr = y + row * D;
    const int bx = blockDim.x;
    float s = 0.0f;
    for (int i = threadIdx.x; i < D; i += bx) s += np_ld(xr + i);
    const float mean = np_row_sum(s, scratch) / static_cast<float>(D);
    float q = 0.0f;
    for (int i = threadIdx.x; i < D; i += bx) {
        const float c = np_ld(xr + i) - mean;
        q = fmaf(c, c, q);
    }
    const float rstd = 1.0f / sqrtf(np_row_sum(q, scratch) / static_cast<float>(D) + NP_LN_EPS);
    for (int i = threadIdx.x; i < D; i += bx)
        yr[i] = np_from_float<T>(fmaf((np_ld(xr + i) - mean) * rstd, np_ld(weight + i), np_ld(bias + i)));
}

// grid ceil(N * T / 256), block 256.
template <typename T>
__global__ void __launch_bounds__(256)
    np_norm_layernorm_cf(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                         T* __restrict__ y, int N, int D, int T_) {
    const int pos = blockIdx.x * 256 + threadIdx.x;
    if (pos >= N * T_) return;
    const int n = pos / T_;
    const int base = n * D * T_ + (pos - n * T_);
    float s = 0.0f;
    for (int c = 0; c < D; ++c) s += np_ld(x + base + c * T_);
    const float mean = s / static_cast<float>(D);
    float q = 0.0f;
    for (int c = 0; c < D; ++c) {
        const float v = np_ld(x + base + c * T_) - mean;
        q = fmaf(v, v, q);
    }
    const float rstd = 1.0f / sqrtf(q / static_cast<float>(D) + NP_LN_EPS);
    for (int c = 0; c < D; ++c)
        y[base + c * T_] =
            np_from_float<T>(fmaf((np_ld(x + base + c * T_) - mean) * rstd, np_ld(weight + c), np_ld(bias + c)));
}
