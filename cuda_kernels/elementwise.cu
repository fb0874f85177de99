// Element-wise and data-movement layers, PyTorch semantics (NCHW). Storage fp32 or fp16, arithmetic fp32.
//
// np_elementwise_<activation><T>   relu, relu6, sigmoid, hardsigmoid, silu, hardswish, gelu (exact, with erf),
//                                  gelu_tanh (GELU's tanh form, approximate="tanh"), tanh
// np_elementwise_batchnorm<T>      inference batchnorm folded into y = x * scale[c] + shift[c] (fp32 scale/shift)
// np_elementwise_add<T>, _mul<T>   k same-shaped operands, through a device table of their addresses
// np_elementwise_add_bcast<T>, _mul_bcast<T>
//                                  operands after the first are N x C x 1 x 1 (squeeze-and-excitation)
// np_elementwise_concat<T>         copies k operands into their channel ranges of the output, one launch
// np_elementwise_softmax<T>        softmax over channels at each (n, h, w), numerically stable (running max)
// np_elementwise_softmax_rows<T>   the same when H = W = 1: one block per row of C contiguous values
// np_elementwise_softmax_lastdim<T> softmax over the last axis of rows of C contiguous values (channels_first=0,
//                                  attention's scores): bx threads per row (a warp, or a block for long rows)
// np_elementwise_channel_shuffle<T> ShuffleNet's shuffle: output channel i * groups + g is input channel
//                                  g * (C / groups) + i
// np_elementwise_embedding<T>      F.embedding: row idx[r] of the (vocab x D) table to output row r (int64 indices;
//                                  an index outside [0, vocab) writes NaN, so a check fails instead of a crash)
// np_elementwise_upsample_nearest<T>, _bilinear<T>
//                                  F.interpolate(size=(OH, OW)), nearest and bilinear (align_corners=False), with
//                                  PyTorch's float32 source coordinates
//
// Flat kernels handle 4 consecutive elements per thread (one 16-byte fp32 or 8-byte fp16 access) where the
// layout allows it ("vec4"); every buffer is a whole CuPy allocation, so aligned. Launch contracts:
// cuda_kernels/README.md. Every tensor holds fewer than 2^31 elements (32-bit indexing).
#include "np_common.cuh"

// ---- activations ----------------------------------------------------------------------------------------

struct np_relu {
    static __device__ __forceinline__ float apply(float v) { return fmaxf(v, 0.0f); }
};
struct np_relu6 {
    static __device__ __forceinline__ float apply(float v) { return fminf(fmaxf(v, 0.0f), 6.0f); }
};
struct np_sigmoid {
    static __device__ __forceinline__ float apply(float v) { return 1.0f / (1.0f + expf(-v)); }
};
struct np_hardsigmoid {
    static __device__ __forceinline__ float apply(float v) { return fminf(fmaxf(v + 3.0f, 0.0f), 6.0f) / 6.0f; }
};
struct np_silu {
    static __device__ __forceinline__ float apply(float v) { return v / (1.0f + expf(-v)); }
};
struct np_hardswish {
    static __device__ __forceinline__ float apply(float v) { return v * (fminf(fmaxf(v + 3.0f, 0.0f), 6.0f) / 6.0f); }
};
struct np_gelu {
    static __device__ __forceinline__ float apply(float v) {
        return 0.5f * v * (1.0f + erff(v * 0.7071067811865475f));
    }
};

// grid (ceil(ceil(n / 4) / 256)), block 256: thread t handles elements [4t, 4t + 4) of n.
template <typename T, typename Op>
__device__ __forceinline__ void np_activation_body(const T* __restrict__ x, T* __restrict__ y, int n) {
    const unsigned int i = 4u * (blockIdx.x * 256u + threadIdx.x);
    const unsigned int un = static_cast<unsigned int>(n);
    if (i + 3u < un) {
        float v[4];
        np_load4(x + i, v);
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = Op::apply(v[j]);
        np_store4(y + i, v);
    } else {
        for (unsigned int j = i; j < un; ++j) y[j] = np_from_float<T>(Op::apply(np_ld(x + j)));
    }
}

#define NP_ACTIVATION_KERNEL(NAME, OP)                                                                          \
    template <typename T>                                                                                   \
    __global__ void __launch_bounds__(256) NAME(const T* __restrict__ x, T* __restrict__ y, int n) {       \
        np_activation_body<T, OP>(x, y, n);                                                                 \
    }

struct np_gelu_tanh {
    static __device__ __forceinline__ float apply(float v) {
        return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
};
struct np_tanh {
    static __device__ __forceinline__ float apply(float v) { return tanhf(v); }
};

NP_ACTIVATION_KERNEL(np_elementwise_relu, np_relu)
NP_ACTIVATION_KERNEL(np_elementwise_relu6, np_relu6)
NP_ACTIVATION_KERNEL(np_elementwise_sigmoid, np_sigmoid)
NP_ACTIVATION_KERNEL(np_elementwise_hardsigmoid, np_hardsigmoid)
NP_ACTIVATION_KERNEL(np_elementwise_silu, np_silu)
NP_ACTIVATION_KERNEL(np_elementwise_hardswish, np_hardswish)
NP_ACTIVATION_KERNEL(np_elementwise_gelu, np_gelu)
NP_ACTIVATION_KERNEL(np_elementwise_gelu_tanh, np_gelu_tanh)
NP_ACTIVATION_KERNEL(np_elementwise_tanh, np_tanh)

// ---- batchnorm ------------------------------------------------------------------------------------------

// vec4 (HW % 4 == 0): grid (ceil(n / 4 / 256)), else grid (ceil(n / 256)); block 256. n = N * C * HW.
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_batchnorm(const T* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ shift,
                             T* __restrict__ y, int n, int C, int HW, int vec4) {
    const unsigned int t = blockIdx.x * 256u + threadIdx.x;
    const unsigned int un = static_cast<unsigned int>(n);
    const unsigned int uhw = static_cast<unsigned int>(HW);
    const unsigned int uc = static_cast<unsigned int>(C);
    if (vec4) {
        const unsigned int i = 4u * t;
        if (i >= un) return;
        const unsigned int c = (i / uhw) % uc;  // all four elements lie in one plane
        const float a = __ldg(scale + c), b = __ldg(shift + c);
        float v[4];
        np_load4(x + i, v);
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = fmaf(v[j], a, b);
        np_store4(y + i, v);
    } else {
        if (t >= un) return;
        const unsigned int c = (t / uhw) % uc;
        y[t] = np_from_float<T>(fmaf(np_ld(x + t), __ldg(scale + c), __ldg(shift + c)));
    }
}

// ---- add, mul -------------------------------------------------------------------------------------------

struct np_op_add {
    static __device__ __forceinline__ float apply(float a, float b) { return a + b; }
};
struct np_op_mul {
    static __device__ __forceinline__ float apply(float a, float b) { return a * b; }
};

// xs: device array of k >= 2 operand addresses, each n elements. Grid and block as the activations.
template <typename T, typename Op>
__device__ __forceinline__ void np_nary_body(const T* const* __restrict__ xs, int k, T* __restrict__ y, int n) {
    const unsigned int i = 4u * (blockIdx.x * 256u + threadIdx.x);
    const unsigned int un = static_cast<unsigned int>(n);
    if (i + 3u < un) {
        float acc[4];
        np_load4(xs[0] + i, acc);
        for (int j = 1; j < k; ++j) {
            float v[4];
            np_load4(xs[j] + i, v);
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[e] = Op::apply(acc[e], v[e]);
        }
        np_store4(y + i, acc);
    } else {
        for (unsigned int e = i; e < un; ++e) {
            float acc = np_ld(xs[0] + e);
            for (int j = 1; j < k; ++j) acc = Op::apply(acc, np_ld(xs[j] + e));
            y[e] = np_from_float<T>(acc);
        }
    }
}

// xs[0] has n = N * C * HW elements, xs[1..k-1] have N * C (one per plane). Grid as the batchnorm kernel.
template <typename T, typename Op>
__device__ __forceinline__ void np_bcast_body(const T* const* __restrict__ xs, int k, T* __restrict__ y, int n,
                                              int HW, int vec4) {
    const unsigned int t = blockIdx.x * 256u + threadIdx.x;
    const unsigned int un = static_cast<unsigned int>(n);
    const unsigned int uhw = static_cast<unsigned int>(HW);
    const unsigned int i = vec4 ? 4u * t : t;
    if (i >= un) return;
    const unsigned int plane = i / uhw;
    float s = np_ld(xs[1] + plane);
    for (int j = 2; j < k; ++j) s = Op::apply(s, np_ld(xs[j] + plane));
    if (vec4) {
        float v[4];
        np_load4(xs[0] + i, v);
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = Op::apply(v[e], s);
        np_store4(y + i, v);
    } else {
        y[i] = np_from_float<T>(Op::apply(np_ld(xs[0] + i), s));
    }
}

template <typename T>
__global__ void __launch_bounds__(256) np_elementwise_add(const T* const* __restrict__ xs, int k, T* __restrict__ y, int n) {
    np_nary_body<T, np_op_add>(xs, k, y, n);
}

template <typename T>
__global__ void __launch_bounds__(256) np_elementwise_mul(const T* const* __restrict__ xs, int k, T* __restrict__ y, int n) {
    np_nary_body<T, np_op_mul>(xs, k, y, n);
}

template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_add_bcast(const T* const* __restrict__ xs, int k, T* __restrict__ y, int n, int HW, int vec4) {
    np_bcast_body<T, np_op_add>(xs, k, y, n, HW, vec4);
}

template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_mul_bcast(const T* const* __restrict__ xs, int k, T* __restrict__ y, int n, int HW, int vec4) {
    np_bcast_body<T, np_op_mul>(xs, k, y, n, HW, vec4);
}

// ---- concat ---------------------------------------------------------------------------------------------

// Operand j (blockIdx.y) has chans[j] channels and goes to output channels [offs[j], offs[j] + chans[j]).
// grid (ceil(max_j N * chans[j] * HW / (vec4 ? 4 : 1) / 256), k), block 256; vec4: HW % 4 == 0.
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_concat(const T* const* __restrict__ xs, const int* __restrict__ chans, const int* __restrict__ offs,
                          T* __restrict__ y, int N, int HW, int Ctot, int vec4) {
    const int j = blockIdx.y;
    const unsigned int len = static_cast<unsigned int>(__ldg(chans + j)) * static_cast<unsigned int>(HW);  // per sample
    const unsigned int total = static_cast<unsigned int>(N) * len;
    const unsigned int t = blockIdx.x * 256u + threadIdx.x;
    const unsigned int e = vec4 ? 4u * t : t;
    if (e >= total) return;
    const unsigned int n = e / len;
    const unsigned int r = e - n * len;
    const unsigned int dst = n * static_cast<unsigned int>(Ctot) * static_cast<unsigned int>(HW) +
                             static_cast<unsigned int>(__ldg(offs + j)) * static_cast<unsigned int>(HW) + r;
    const T* src = xs[j];
    if (vec4) {
        float v[4];
        np_load4(src + e, v);
        np_store4(y + dst, v);
    } else {
        y[dst] = src[e];
    }
}

// ---- softmax over channels ------------------------------------------------------------------------------

// A running (max m, sum s of exp(v - m)) pair; (-inf, 0) is the empty pair.
// Adds one value: one exp per value, the sum rescaled only when the maximum grows.
__device__ __forceinline__ void np_softmax_push(float& m, float& s, float v) {
    if (v > m) {
        s = s * expf(m - v) + 1.0f;  // from the empty pair: 0 * exp(-inf) + 1
        m = v;
    } else {
        s += expf(v - m);
    }
}

// Merges another pair into (m, s).
__device__ __forceinline__ void np_softmax_merge(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == __int_as_float(0xff800000)) return;  // both empty
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// grid (ceil(N * HW / 256)), block 256: one thread per position, its C values HW apart (a warp reads 32
// consecutive positions of a channel). Two passes over the input: running max and sum, then the output.
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_softmax(const T* __restrict__ x, T* __restrict__ y, int N, int C, int HW) {
    const int pos = blockIdx.x * 256 + threadIdx.x;
    if (pos >= N * HW) return;
    const int n = pos / HW;
    const int base = n * C * HW + (pos - n * HW);
    float m = __int_as_float(0xff800000), s = 0.0f;
    for (int c = 0; c < C; ++c) np_softmax_push(m, s, np_ld(x + base + c * HW));
    const float inv = 1.0f / s;
    for (int c = 0; c < C; ++c) y[base + c * HW] = np_from_float<T>(expf(np_ld(x + base + c * HW) - m) * inv);
}

// H = W = 1: grid (N), block 256; row n is C contiguous values.
template <typename T>
__global__ void __launch_bounds__(256) np_elementwise_softmax_rows(const T* __restrict__ x, T* __restrict__ y, int C) {
    __shared__ float sm[8], ss[8];
    const T* xr = x + blockIdx.x * C;
    T* yr = y + blockIdx.x * C;
    float m = __int_as_float(0xff800000), s = 0.0f;
    for (int c = threadIdx.x; c < C; c += 256) np_softmax_push(m, s, np_ld(xr + c));
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
        np_softmax_merge(m, s, m2, s2);
    }
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    m = sm[0];
    s = ss[0];
#pragma unroll
    for (int k = 1; k < 8; ++k) np_softmax_merge(m, s, sm[k], ss[k]);
    const float inv = 1.0f / s;
    for (int c = threadIdx.x; c < C; c += 256) yr[c] = np_from_float<T>(expf(np_ld(xr + c) - m) * inv);
}

// Rows of C contiguous values: block (bx, by), bx = 32 with by = 8 (a warp per row) or bx = 256 with by = 1 (a
// block per row); grid ceil(rows / by). The same running (max, sum) as above, merged across the row's threads.
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_softmax_lastdim(const T* __restrict__ x, T* __restrict__ y, int rows, int C) {
    __shared__ float sm[8], ss[8];
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;  // a whole warp (bx = 32) or the whole block (bx = 256, by = 1)
    const T* xr = x + row * C;
    T* yr = y + row * C;
    const int bx = blockDim.x;
    float m = __int_as_float(0xff800000), s = 0.0f;
    for (int c = threadIdx.x; c < C; c += bx) np_softmax_push(m, s, np_ld(xr + c));
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
        np_softmax_merge(m, s, m2, s2);
    }
    if (bx > 32) {
        const int warp = threadIdx.x >> 5;
        if ((threadIdx.x & 31) == 0) {
            sm[warp] = m;
            ss[warp] = s;
        }
        __syncthreads();
        m = sm[0];
        s = ss[0];
#pragma unroll
        for (int k = 1; k < 8; ++k) np_softmax_merge(m, s, sm[k], ss[k]);
    }
    const float inv = 1.0f / s;
    for (int c = threadIdx.x; c < C; c += bx) yr[c] = np_from_float<T>(expf(np_ld(xr + c) - m) * inv);
}

// ---- channel shuffle ------------------------------------------------------------------------------------

// Grid as the batchnorm kernel (n = N * C * HW; vec4: HW % 4 == 0).
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_channel_shuffle(const T* __restrict__ x, T* __restrict__ y, int n, int C, int HW, int groups,
                                   int vec4) {
    const unsigned int t = blockIdx.x * 256u + threadIdx.x;
    const unsigned int i = vec4 ? 4u * t : t;
    if (i >= static_cast<unsigned int>(n)) return;
    const int co = static_cast<int>((i / static_cast<unsigned int>(HW)) % static_cast<unsigned int>(C));
    const int ci = (co % groups) * (C / groups) + co / groups;
    const unsigned int src = static_cast<unsigned int>(static_cast<int>(i) + (ci - co) * HW);
    if (vec4) {
        float v[4];
        np_load4(x + src, v);
        np_store4(y + i, v);
    } else {
        y[i] = x[src];
    }
}

// ---- embedding ------------------------------------------------------------------------------------------

// idx: rows int64 indices; w: vocab x D; y: rows x D. vec4 (D % 4 == 0): thread t copies elements [4t, 4t + 4),
// grid ceil(rows * D / 4 / 256); else one element per thread, grid ceil(rows * D / 256). Block 256.
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_embedding(const long long* __restrict__ idx, const T* __restrict__ w, T* __restrict__ y, int rows,
                             int D, int vocab, int vec4) {
    const unsigned int t = blockIdx.x * 256u + threadIdx.x;
    const unsigned int e = vec4 ? 4u * t : t;
    const unsigned int ud = static_cast<unsigned int>(D);
    if (e >= static_cast<unsigned int>(rows) * ud) return;
    const unsigned int r = e / ud;
    const unsigned int c = e - r * ud;
    const long long token = __ldg(idx + r);
    const int width = vec4 ? 4 : 1;
    if (token < 0 || token >= vocab) {
        for (int j = 0; j < width; ++j) y[e + j] = np_from_float<T>(__int_as_float(0x7fc00000));  // NaN
        return;
    }
    const T* src = w + static_cast<unsigned int>(token) * ud + c;
    if (vec4) {
        float v[4];
        np_load4(src, v);
        np_store4(y + e, v);
    } else {
        y[e] = src[0];
    }
}

// ---- upsampling -----------------------------------------------------------------------------------------

// One thread per output element of planes x OH x OW: grid ceil(planes * OH * OW / 256), block 256.
// Source row min(floor(oh * (float)H / OH), H - 1), computed in float32 as ATen's nearest kernel does.
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_upsample_nearest(const T* __restrict__ x, T* __restrict__ y, int planes, int H, int W, int OH,
                                    int OW) {
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= planes * OH * OW) return;
    const int ow = i % OW;
    const int t1 = i / OW;
    const int oh = t1 % OH;
    const int plane = t1 / OH;
    const float scale_h = static_cast<float>(H) / static_cast<float>(OH);
    const float scale_w = static_cast<float>(W) / static_cast<float>(OW);
    const int ih = min(static_cast<int>(floorf(static_cast<float>(oh) * scale_h)), H - 1);
    const int iw = min(static_cast<int>(floorf(static_cast<float>(ow) * scale_w)), W - 1);
    y[i] = x[(plane * H + ih) * W + iw];
}

// align_corners=False: source (o + 0.5) * in / out - 0.5, clamped at 0; the upper neighbour clamped to the edge.
__device__ __forceinline__ void np_bilinear_source(int o, int in, int out, int& lo, int& step, float& lambda) {
    const float src = fmaxf((static_cast<float>(o) + 0.5f) * (static_cast<float>(in) / static_cast<float>(out)) - 0.5f,
                            0.0f);
    lo = static_cast<int>(src);
    step = lo < in - 1 ? 1 : 0;
    lambda = src - static_cast<float>(lo);
}

// Grid and block as the nearest kernel.
template <typename T>
__global__ void __launch_bounds__(256)
    np_elementwise_upsample_bilinear(const T* __restrict__ x, T* __restrict__ y, int planes, int H, int W, int OH,
                                     int OW) {
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= planes * OH * OW) return;
    const int ow = i % OW;
    const int t1 = i / OW;
    const int oh = t1 % OH;
    const int plane = t1 / OH;
    int h0, hstep, w0, wstep;
    float lh, lw;
    np_bilinear_source(oh, H, OH, h0, hstep, lh);
    np_bilinear_source(ow, W, OW, w0, wstep, lw);
    const T* p = x + (plane * H + h0) * W + w0;
    const float top = (1.0f - lw) * np_ld(p) + lw * np_ld(p + wstep);
    const float bottom = (1.0f - lw) * np_ld(p + hstep * W) + lw * np_ld(p + hstep * W + wstep);
    y[i] = np_from_float<T>((1.0f - lh) * top + lh * bottom);
}
