// Pooling, PyTorch semantics (NCHW, planes = N * C). Storage fp32 or fp16, arithmetic fp32.
//
// np_pool_max<T>          max over each window (padding never wins; NaN propagates, as in PyTorch), with
//                         stride, padding, dilation and ceil mode (the output size comes from the caller).
// np_pool_avg<T>          average with count_include_pad = True (PyTorch's default): the divisor counts the
//                         padding but not the part of a ceil-mode window that overhangs the padded input.
// np_pool_adaptive_avg<T> adaptive average: window [floor(i * H / OH), ceil((i + 1) * H / OH)) per axis.
// np_pool_global_avg<T>   adaptive average to 1 x 1: a warp (or a whole block, for large planes) reduces one
//                         plane with coalesced, vectorized loads.
//
// Launch contracts: cuda_kernels/README.md. Every tensor holds fewer than 2^31 elements (32-bit indexing).
#include "np_common.cuh"

// grid (ceil(planes * OH * OW / 256)), block 256 (also for np_pool_avg and np_pool_adaptive_avg).
template <typename T>
__global__ void __launch_bounds__(256)
    np_pool_max(const T* __restrict__ x, T* __restrict__ y, int planes, int H, int W, int OH, int OW, int KH, int KW,
                int sh, int sw, int ph, int pw, int dh, int dw) {
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= planes * OH * OW) return;
    const int ow = i % OW;
    const int t1 = i / OW;
    const int oh = t1 % OH;
    const int plane = t1 / OH;
    const T* xp = x + plane * H * W;
    const int ih0 = oh * sh - ph;
    const int iw0 = ow * sw - pw;
    float m = __int_as_float(0xff800000);  // -inf: a window entirely in the padding gives -inf, as PyTorch
    for (int kh = 0; kh < KH; ++kh) {
        const int ih = ih0 + kh * dh;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < KW; ++kw) {
            const int iw = iw0 + kw * dw;
            if (iw < 0 || iw >= W) continue;
            const float v = np_ld(xp + ih * W + iw);
            if (v > m || v != v) m = v;
        }
    }
    y[i] = np_from_float<T>(m);
}

template <typename T>
__global__ void __launch_bounds__(256)
    np_pool_avg(const T* __restrict__ x, T* __restrict__ y, int planes, int H, int W, int OH, int OW, int KH, int KW,
                int sh, int sw, int ph, int pw) {
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= planes * OH * OW) return;
    const int ow = i % OW;
    const int t1 = i / OW;
    const int oh = t1 % OH;
    const int plane = t1 / OH;
    const T* xp = x + plane * H * W;
    int h0 = oh * sh - ph;
    int w0 = ow * sw - pw;
    int h1 = min(h0 + KH, H + ph);
    int w1 = min(w0 + KW, W + pw);
    const float divisor = static_cast<float>((h1 - h0) * (w1 - w0));
    h0 = max(h0, 0);
    w0 = max(w0, 0);
    h1 = min(h1, H);
    w1 = min(w1, W);
    float s = 0.0f;
    for (int ih = h0; ih < h1; ++ih)
        for (int iw = w0; iw < w1; ++iw) s += np_ld(xp + ih * W + iw);
    y[i] = np_from_float<T>(s / divisor);
}

template <typename T>
__global__ void __launch_bounds__(256)
    np_pool_adaptive_avg(const T* __restrict__ x, T* __restrict__ y, int planes, int H, int W, int OH, int OW) {
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= planes * OH * OW) return;
    const int ow = i % OW;
    const int t1 = i / OW;
    const int oh = t1 % OH;
    const int plane = t1 / OH;
    const T* xp = x + plane * H * W;
    // 64-bit: oh * H may pass 2^31 even when every tensor is smaller
    const int h0 = static_cast<int>((static_cast<long long>(oh) * H) / OH);
    const int h1 = static_cast<int>(((static_cast<long long>(oh) + 1) * H + OH - 1) / OH);
    const int w0 = static_cast<int>((static_cast<long long>(ow) * W) / OW);
    const int w1 = static_cast<int>(((static_cast<long long>(ow) + 1) * W + OW - 1) / OW);
    float s = 0.0f;
    for (int ih = h0; ih < h1; ++ih)
        for (int iw = w0; iw < w1; ++iw) s += np_ld(xp + ih * W + iw);
    y[i] = np_from_float<T>(s / static_cast<float>((h1 - h0) * (w1 - w0)));
}

// block (bx, by) with bx in {32, 64, ..., 256} threads per plane and bx * by == 256 (by planes per block),
// grid (ceil(planes / by)); vec4: HW % 4 == 0 (every plane then starts 4-element aligned).
template <typename T>
__global__ void __launch_bounds__(256)
    np_pool_global_avg(const T* __restrict__ x, T* __restrict__ y, int planes, int HW, int vec4) {
    __shared__ float partial[8][8];  // [plane of the block][warp of the plane]
    const int plane = blockIdx.x * blockDim.y + threadIdx.y;
    const bool ok = plane < planes;  // no early return: the block may meet a barrier below
    float s = 0.0f;
    if (ok) {
        const T* xp = x + plane * HW;
        if (vec4) {
            for (int i = 4 * threadIdx.x; i < HW; i += 4 * blockDim.x) {
                float v[4];
                np_load4(xp + i, v);
                s += (v[0] + v[1]) + (v[2] + v[3]);
            }
        } else {
            for (int i = threadIdx.x; i < HW; i += blockDim.x) s += np_ld(xp + i);
        }
    }
    s = np_warp_sum(s);
    const int warps = blockDim.x >> 5;
    if (warps > 1) {  // uniform over the block
        if ((threadIdx.x & 31) == 0) partial[threadIdx.y][threadIdx.x >> 5] = s;
        __syncthreads();
        if (threadIdx.x == 0) {
            s = 0.0f;
            for (int k = 0; k < warps; ++k) s += partial[threadIdx.y][k];
        }
    }
    if (ok && threadIdx.x == 0) y[plane] = np_from_float<T>(s / static_cast<float>(HW));
}
