// 2-D convolution, PyTorch semantics (cross-correlation, NCHW, weight (Cout, Cin / groups, KH, KW), zero
// padding, stride, dilation, groups, optional bias). Storage fp32 or fp16, accumulation fp32.
//
// np_conv_igemm<T>            implicit GEMM for any configuration. Per group g it multiplies
//                             W_g (Cout/g x K) by the im2col matrix (K x P), K = Cin/g * KH * KW, P = N * OH * OW,
//                             without forming the matrix: each 64 x 64 output tile (channels x positions) gathers
//                             its 16-deep slices of W and of the input into double-buffered shared memory, the
//                             next slice's loads in flight while the current one is multiplied, 4 x 4 outputs per
//                             thread. The k -> (channel, kh, kw) decomposition of each slice is computed once per
//                             block into shared memory instead of by every loading thread.
// np_conv_depthwise<T>        groups == Cin, Cout a multiple of Cin: one block per output plane tile, the input
//                             patch it needs and the plane's filter staged in (dynamic) shared memory.
// np_conv_depthwise_direct<T> the same layers, one thread per output reading through the cache: for planes too
//                             small to tile (OW < 16) or patches too large for shared memory.
// np_conv_transpose_direct<T> transposed convolution (F.conv_transpose2d: weight (Cin, Cout / groups, KH, KW),
//                             stride, padding, output padding, dilation, groups, bias), one thread per output
//                             gathering what scatters to it: tap (kh, kw) reaches output oh from input
//                             ih = (oh + ph - kh * dh) / sh when that divides exactly and lies in the input.
//
// Launch contracts: cuda_kernels/README.md. Every tensor holds fewer than 2^31 elements (32-bit indexing).
#include "np_common.cuh"

#define NP_CONV_BM 64  // output channels per tile
#define NP_CONV_BN 64  // output positions per tile
#define NP_CONV_BK 16
#define NP_CONV_PAD 4
#define NP_CONV_OUT_OF_RANGE (-(1 << 29))  // a row offset that fails every bounds check (k >= K)

// grid (ceil(P / 64), ceil((Cout / groups) / 64), groups), block 256, no dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(256)
    np_conv_igemm(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                  T* __restrict__ y, int N, int C, int H, int W, int Cout, int OH, int OW, int KH, int KW, int sh,
                  int sw, int ph, int pw, int dh, int dw, int groups, int has_bias) {
    __shared__ __align__(16) float ws[2][NP_CONV_BK][NP_CONV_BM + NP_CONV_PAD];  // [k][channel]
    __shared__ __align__(16) float xs[2][NP_CONV_BK][NP_CONV_BN + NP_CONV_PAD];  // [k][position]
    // Per k of a slice: offset of (channel, kh * dh, kw * dw) in the input plane stack, and kh * dh, kw * dw.
    __shared__ int k_off[2][NP_CONV_BK];
    __shared__ int k_dh[2][NP_CONV_BK];
    __shared__ int k_dw[2][NP_CONV_BK];

    const int cg = C / groups;       // input channels per group
    const int mg = Cout / groups;    // output channels per group
    const int khw = KH * KW;
    const int K = cg * khw;
    const int ohw = OH * OW;
    const int P = N * ohw;
    const int g = blockIdx.z;
    const int m0 = blockIdx.y * NP_CONV_BM;
    const int p0 = blockIdx.x * NP_CONV_BN;

    const int t = threadIdx.x;
    const int tx = t & 15;  // positions tx + 16 j (coalesced stores)
    const int ty = t >> 4;  // channels 4 ty + i (one float4 read of the weight tile)

    // Weight loader: element k = wk of rows wr + 16 i; a warp reads 16 consecutive k of two rows.
    const int wk = t & 15;
    const int wr = t >> 4;
    const T* wg = w + (g * mg) * K;

    // Input loader: position column xc, k rows xr + 4 i; a warp reads 32 consecutive positions.
    const int xc = t & 63;
    const int xr = t >> 6;
    const int p = p0 + xc;
    const bool p_ok = p < P;
    const int pn = p_ok ? p / ohw : 0;
    const int pq = p_ok ? p - pn * ohw : 0;
    const int poh = pq / OW;
    const int pow_ = pq - poh * OW;
    const int ih0 = poh * sh - ph;
    const int iw0 = pow_ * sw - pw;
    const T* xg = x + (pn * C + g * cg) * H * W;

    // Fills the k table of the slice starting at k0 (threads 0..15).
    auto table = [&](int k0, int b) {
        if (t < NP_CONV_BK) {
            const int k = k0 + t;
            if (k < K) {
                const int ci = k / khw;
                const int r = k - ci * khw;
                const int kh = r / KW;
                const int kw = r - kh * KW;
                k_off[b][t] = ci * H * W;
                k_dh[b][t] = kh * dh;
                k_dw[b][t] = kw * dw;
            } else {
                k_off[b][t] = 0;
                k_dh[b][t] = NP_CONV_OUT_OF_RANGE;
                k_dw[b][t] = 0;
            }
        }
    };

    float rw[4], rx[4];
    auto load = [&](int k0, int b) {
        const int k = k0 + wk;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + wr + 16 * i;
            rw[i] = (m < mg && k < K) ? np_ld(wg + m * K + k) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int kr = xr + 4 * i;
            const int ih = ih0 + k_dh[b][kr];
            const int iw = iw0 + k_dw[b][kr];
            const bool ok = p_ok && ih >= 0 && ih < H && iw >= 0 && iw < W;
            rx[i] = ok ? np_ld(xg + k_off[b][kr] + ih * W + iw) : 0.0f;
        }
    };

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    table(0, 0);
    __syncthreads();
    load(0, 0);
    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += NP_CONV_BK, buf ^= 1) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            ws[buf][wk][wr + 16 * i] = rw[i];
            xs[buf][xr + 4 * i][xc] = rx[i];
        }
        // The next slice's table goes to the other table buffer, last read by the loads of this slice,
        // which every thread finished before the previous barrier.
        const bool more = k0 + NP_CONV_BK < K;
        if (more) table(k0 + NP_CONV_BK, buf ^ 1);
        // One barrier per slice (as in gemm.cu): tiles and tables are double-buffered.
        __syncthreads();
        if (more) load(k0 + NP_CONV_BK, buf ^ 1);
#pragma unroll
        for (int kk = 0; kk < NP_CONV_BK; ++kk) {
            const float4 a = *reinterpret_cast<const float4*>(&ws[buf][kk][4 * ty]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            float bv[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = xs[buf][kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
    }

#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int q = p0 + tx + 16 * j;
        if (q >= P) continue;
        const int n = q / ohw;
        const int out_base = n * Cout * ohw + (q - n * ohw);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + 4 * ty + i;
            if (m < mg) {
                const int co = g * mg + m;
                const float b = has_bias ? np_ld(bias + co) : 0.0f;
                y[out_base + co * ohw] = np_from_float<T>(acc[i][j] + b);
            }
        }
    }
}

// grid (N * Cout, tiles_h * tiles_w), block (tile_w, by) with tile_w * by <= 256; a block computes the output
// rows [tr * tile_h, tr * tile_h + tile_h) and columns [tc * tile_w, tc * tile_w + tile_w) of one plane,
// tile_h a multiple of by. Dynamic shared memory: (patch_h * patch_w + KH * KW) floats, where
// patch_h = (tile_h - 1) * sh + (KH - 1) * dh + 1 and patch_w = (tile_w - 1) * sw + (KW - 1) * dw + 1.
template <typename T>
__global__ void __launch_bounds__(256)
    np_conv_depthwise(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                      T* __restrict__ y, int C, int H, int W, int Cout, int OH, int OW, int KH, int KW, int sh,
                      int sw, int ph, int pw, int dh, int dw, int has_bias, int tiles_w, int tile_h, int patch_h,
                      int patch_w) {
    extern __shared__ float np_dw_smem[];
    float* patch = np_dw_smem;
    float* filt = np_dw_smem + patch_h * patch_w;

    const int plane = blockIdx.x;  // n * Cout + co
    const int n = plane / Cout;
    const int co = plane - n * Cout;
    const int ci = co / (Cout / C);  // PyTorch: output channel co reads input channel co / (Cout / C)
    const int tr = blockIdx.y / tiles_w;
    const int tc = blockIdx.y - tr * tiles_w;
    const int tile_w = blockDim.x;
    const int oh0 = tr * tile_h;
    const int ow0 = tc * tile_w;
    const int ih0 = oh0 * sh - ph;
    const int iw0 = ow0 * sw - pw;

    const T* xp = x + (n * C + ci) * H * W;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int nthreads = blockDim.x * blockDim.y;
    for (int i = tid; i < patch_h * patch_w; i += nthreads) {
        const int r = i / patch_w;
        const int c = i - r * patch_w;
        const int ih = ih0 + r;
        const int iw = iw0 + c;
        patch[i] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? np_ld(xp + ih * W + iw) : 0.0f;
    }
    for (int i = tid; i < KH * KW; i += nthreads) filt[i] = np_ld(w + co * KH * KW + i);
    __syncthreads();

    const float b = has_bias ? np_ld(bias + co) : 0.0f;
    const int ow = ow0 + threadIdx.x;
    if (ow >= OW) return;  // after the only barrier
    T* yp = y + plane * OH * OW;
    for (int r = threadIdx.y; r < tile_h; r += blockDim.y) {
        const int oh = oh0 + r;
        if (oh >= OH) break;
        const float* pp = patch + (r * sh) * patch_w + threadIdx.x * sw;
        float acc = b;
        for (int kh = 0; kh < KH; ++kh) {
            const float* row = pp + kh * dh * patch_w;
            const float* f = filt + kh * KW;
            for (int kw = 0; kw < KW; ++kw) acc = fmaf(row[kw * dw], f[kw], acc);
        }
        yp[oh * OW + ow] = np_from_float<T>(acc);
    }
}

// grid (ceil(N * Cout * OH * OW / 256)), block 256.
template <typename T>
__global__ void __launch_bounds__(256)
    np_conv_depthwise_direct(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                             T* __restrict__ y, int N, int C, int H, int W, int Cout, int OH, int OW, int KH, int KW,
                             int sh, int sw, int ph, int pw, int dh, int dw, int has_bias) {
    const int total = N * Cout * OH * OW;
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= total) return;
    const int ow = i % OW;
    const int t1 = i / OW;
    const int oh = t1 % OH;
    const int plane = t1 / OH;
    const int n = plane / Cout;
    const int co = plane - n * Cout;
    const int ci = co / (Cout / C);
    const T* xp = x + (n * C + ci) * H * W;
    const T* f = w + co * KH * KW;
    float acc = has_bias ? np_ld(bias + co) : 0.0f;
    const int ih0 = oh * sh - ph;
    const int iw0 = ow * sw - pw;
    for (int kh = 0; kh < KH; ++kh) {
        const int ih = ih0 + kh * dh;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < KW; ++kw) {
            const int iw = iw0 + kw * dw;
            if (iw >= 0 && iw < W) acc = fmaf(np_ld(xp + ih * W + iw), np_ld(f + kh * KW + kw), acc);
        }
    }
    y[i] = np_from_float<T>(acc);
}

// grid ceil(N * Cout * OH * OW / 256), block 256. The output size (with its output padding) is the planner's.
template <typename T>
__global__ void __launch_bounds__(256)
    np_conv_transpose_direct(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                             T* __restrict__ y, int N, int C, int H, int W, int Cout, int OH, int OW, int KH, int KW,
                             int sh, int sw, int ph, int pw, int dh, int dw, int groups, int has_bias) {
    const int total = N * Cout * OH * OW;
    const int i = blockIdx.x * 256 + threadIdx.x;
    if (i >= total) return;
    const int ow = i % OW;
    const int t1 = i / OW;
    const int oh = t1 % OH;
    const int plane = t1 / OH;
    const int n = plane / Cout;
    const int co = plane - n * Cout;
    const int og = Cout / groups;
    const int cg = C / groups;
    const int g = co / og;
    const int o = co - g * og;
    const int khw = KH * KW;
    const T* xg = x + (n * C + g * cg) * H * W;
    const T* wg = w + (g * cg * og + o) * khw;  // w[g * cg + c][o][kh][kw] = wg[c * og * khw + kh * KW + kw]
    float acc = has_bias ? np_ld(bias + co) : 0.0f;
    for (int kh = 0; kh < KH; ++kh) {
        const int th = oh + ph - kh * dh;
        if (th < 0 || th % sh != 0) continue;
        const int ih = th / sh;
        if (ih >= H) continue;
        for (int kw = 0; kw < KW; ++kw) {
            const int tw = ow + pw - kw * dw;
            if (tw < 0 || tw % sw != 0) continue;
            const int iw = tw / sw;
            if (iw >= W) continue;
            const T* xs = xg + ih * W + iw;
            const T* ws = wg + kh * KW + kw;
            for (int c = 0; c < cg; ++c) acc = fmaf(np_ld(xs + c * H * W), np_ld(ws + c * og * khw), acc);
        }
    }
    y[i] = np_from_float<T>(acc);
}
