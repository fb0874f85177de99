// Linear layers: Y[M, N] = X[M, K] . W[N, K]^T (+ bias[N]), PyTorch's weight layout (out_features, in_features).
// M is the batch, N the output features, K the input features. Storage fp32 or fp16, accumulation fp32.
//
// np_gemm_tiled<T>       64 x 64 output tile per block of 256 threads, 4 x 4 outputs per thread, K in steps of
//                        16 through double-buffered shared memory, the next step's global loads in flight while
//                        the current one is multiplied.
// np_gemm_small_batch<T> M <= 8 (inference at small batch is a matrix-vector product, bound by reading W once):
//                        one warp per output feature, its lanes stream that row of W, 4 elements at a time.
// np_gemm_bias<T>        Y[m, n] += bias[n], for the cuBLAS variant (cuBLAS computes the product alone).
// np_gemm_batched<T>     the matmul layer: Y[b] = A[b] . B[b] with A[b] M x K and B[b] K x N (both row-major, as
//                        torch.matmul's operands), batch b = blockIdx.z at element strides stride_a, stride_b
//                        (0: one B shared by every batch, torch.matmul's broadcasting), stride_y; the tiling of
//                        np_gemm_tiled, B's tile loaded along N (its contiguous axis).
//
// Launch contracts: cuda_kernels/README.md. Every tensor holds fewer than 2^31 elements (32-bit indexing).
#include "np_common.cuh"

#define NP_GEMM_BM 64
#define NP_GEMM_BN 64
#define NP_GEMM_BK 16
#define NP_GEMM_PAD 4  // keeps each shared row 16-byte aligned (float4 reads) and spreads the stores' banks
#define NP_GEMM_SMALL_M 8

// grid (ceil(N / 64), ceil(M / 64)), block 256.
template <typename T>
__global__ void __launch_bounds__(256)
    np_gemm_tiled(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                  T* __restrict__ y, int M, int N, int K, int has_bias) {
    // Both operands are stored [k][row] so that the inner loop reads rows of the tile along k.
    __shared__ __align__(16) float xs[2][NP_GEMM_BK][NP_GEMM_BM + NP_GEMM_PAD];
    __shared__ __align__(16) float ws[2][NP_GEMM_BK][NP_GEMM_BN + NP_GEMM_PAD];

    const int t = threadIdx.x;
    const int tx = t & 15;  // output columns tx + 16 j: a warp stores 16 consecutive features per row
    const int ty = t >> 4;  // output rows 4 ty + i: one float4 read of the x tile
    const int m0 = blockIdx.y * NP_GEMM_BM;
    const int n0 = blockIdx.x * NP_GEMM_BN;

    // Loader: thread t brings element k = lk of rows lr + 16 i (i < 4) of both tiles; a warp reads 16
    // consecutive k of two rows.
    const int lk = t & 15;
    const int lr = t >> 4;

    float rx[4], rw[4];
    auto load = [&](int k0) {
        const int k = k0 + lk;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + lr + 16 * i;
            const int n = n0 + lr + 16 * i;
            rx[i] = (m < M && k < K) ? np_ld(x + m * K + k) : 0.0f;
            rw[i] = (n < N && k < K) ? np_ld(w + n * K + k) : 0.0f;
        }
    };

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    load(0);
    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += NP_GEMM_BK, buf ^= 1) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            xs[buf][lk][lr + 16 * i] = rx[i];
            ws[buf][lk][lr + 16 * i] = rw[i];
        }
        // One barrier per step is enough with two buffers: a thread overwrites buffer b two steps after it
        // was read, and every thread has passed the barrier in between only after reading it.
        __syncthreads();
        if (k0 + NP_GEMM_BK < K) load(k0 + NP_GEMM_BK);
#pragma unroll
        for (int kk = 0; kk < NP_GEMM_BK; ++kk) {
            const float4 a = *reinterpret_cast<const float4*>(&xs[buf][kk][4 * ty]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            float bv[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = ws[buf][kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
    }

#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int n = n0 + tx + 16 * j;
        if (n >= N) continue;
        const float b = has_bias ? np_ld(bias + n) : 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + 4 * ty + i;
            if (m < M) y[m * N + n] = np_from_float<T>(acc[i][j] + b);
        }
    }
}

// grid (ceil(N / 8)), block 256 (8 warps, one output feature each); M <= 8. vec4: K % 4 == 0 (then every
// row starts 4-element aligned).
template <typename T>
__global__ void __launch_bounds__(256)
    np_gemm_small_batch(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                        T* __restrict__ y, int M, int N, int K, int has_bias, int vec4) {
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (n >= N) return;  // whole warps leave together: no barrier below, shuffles are per warp
    const T* wr = w + n * K;
    float acc[NP_GEMM_SMALL_M];
#pragma unroll
    for (int m = 0; m < NP_GEMM_SMALL_M; ++m) acc[m] = 0.0f;

    if (vec4) {
        for (int k = 4 * lane; k < K; k += 128) {
            float wv[4];
            np_load4(wr + k, wv);
#pragma unroll
            for (int m = 0; m < NP_GEMM_SMALL_M; ++m) {
                if (m < M) {
                    float xv[4];
                    np_load4(x + m * K + k, xv);
                    acc[m] += wv[0] * xv[0] + wv[1] * xv[1] + wv[2] * xv[2] + wv[3] * xv[3];
                }
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            const float wv = np_ld(wr + k);
#pragma unroll
            for (int m = 0; m < NP_GEMM_SMALL_M; ++m)
                if (m < M) acc[m] = fmaf(wv, np_ld(x + m * K + k), acc[m]);
        }
    }

    const float b = has_bias ? np_ld(bias + n) : 0.0f;
#pragma unroll
    for (int m = 0; m < NP_GEMM_SMALL_M; ++m) {
        const float s = np_warp_sum(acc[m]);  // every lane takes part, also for m >= M
        if (lane == 0 && m < M) y[m * N + n] = np_from_float<T>(s + b);
    }
}

// grid (ceil(M * N / 256)), block 256.
template <typename T>
__global__ void __launch_bounds__(256) np_gemm_bias(T* __restrict__ y, const T* __restrict__ bias, int M, int N) {
    const unsigned int i = blockIdx.x * 256u + threadIdx.x;
    if (i >= static_cast<unsigned int>(M) * static_cast<unsigned int>(N)) return;
    y[i] = np_from_float<T>(np_to_float(y[i]) + np_ld(bias + i % static_cast<unsigned int>(N)));
}

// grid (ceil(N / 64), ceil(M / 64), batches), block 256. No bias (matmul multiplies two activations).
template <typename T>
__global__ void __launch_bounds__(256)
    np_gemm_batched(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, int M, int N, int K,
                    int stride_a, int stride_b, int stride_y) {
    __shared__ __align__(16) float as[2][NP_GEMM_BK][NP_GEMM_BM + NP_GEMM_PAD];
    __shared__ __align__(16) float bs[2][NP_GEMM_BK][NP_GEMM_BN + NP_GEMM_PAD];

    const unsigned int batch = blockIdx.z;
    a += batch * static_cast<unsigned int>(stride_a);
    b += batch * static_cast<unsigned int>(stride_b);
    y += batch * static_cast<unsigned int>(stride_y);
    const int t = threadIdx.x;
    const int tx = t & 15;
    const int ty = t >> 4;
    const int m0 = blockIdx.y * NP_GEMM_BM;
    const int n0 = blockIdx.x * NP_GEMM_BN;

    // A's loader as np_gemm_tiled's X loader (k = t & 15 of rows t >> 4 + 16 i); B's brings k = (t >> 6) + 4 i
    // of column n0 + (t & 63): a warp reads 32 consecutive elements of a row of B.
    const int lk = t & 15;
    const int lr = t >> 4;
    const int bn = t & 63;
    const int bk = t >> 6;

    float ra[4], rb[4];
    auto load = [&](int k0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + lr + 16 * i;
            const int ka = k0 + lk;
            ra[i] = (m < M && ka < K) ? np_ld(a + m * K + ka) : 0.0f;
            const int kb = k0 + bk + 4 * i;
            const int n = n0 + bn;
            rb[i] = (n < N && kb < K) ? np_ld(b + kb * N + n) : 0.0f;
        }
    };

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    load(0);
    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += NP_GEMM_BK, buf ^= 1) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            as[buf][lk][lr + 16 * i] = ra[i];
            bs[buf][bk + 4 * i][bn] = rb[i];
        }
        __syncthreads();  // one barrier per step, as in np_gemm_tiled
        if (k0 + NP_GEMM_BK < K) load(k0 + NP_GEMM_BK);
#pragma unroll
        for (int kk = 0; kk < NP_GEMM_BK; ++kk) {
            const float4 av4 = *reinterpret_cast<const float4*>(&as[buf][kk][4 * ty]);
            const float av[4] = {av4.x, av4.y, av4.z, av4.w};
            float bv[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = bs[buf][kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
    }

#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int n = n0 + tx + 16 * j;
        if (n >= N) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + 4 * ty + i;
            if (m < M) y[m * N + n] = np_from_float<T>(acc[i][j]);
        }
    }
}
