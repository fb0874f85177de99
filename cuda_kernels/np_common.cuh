// Shared by every kernel family: the fp16 storage type and conversions, 4-element vector access, warp
// reductions. No kernels here.
//
// Compiled by NVRTC through CuPy (the loader, neuralpower/bench/kernels.py, pastes this file in place of its
// #include line) and by nvcc in the tests: it therefore uses no header at all, not even cuda_fp16.h, whose
// availability under NVRTC depends on how CuPy finds the CUDA toolkit. fp16 values are stored as raw 16-bit
// patterns and converted with the PTX cvt instructions, which is all cuda_fp16.h would do for us: every
// kernel computes in fp32.
#pragma once

// An IEEE binary16 value, stored (CuPy's float16 arrays are passed as np_half*).
struct np_half {
    unsigned short bits;
};

__device__ __forceinline__ float np_to_float(float v) { return v; }

__device__ __forceinline__ float np_to_float(np_half v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

template <typename T>
__device__ __forceinline__ T np_from_float(float f);

template <>
__device__ __forceinline__ float np_from_float<float>(float f) {
    return f;
}

template <>
__device__ __forceinline__ np_half np_from_float<np_half>(float f) {
    np_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));  // round to nearest even, as PyTorch
    return h;
}

// Read-only load through the non-coherent cache, converted to float.
__device__ __forceinline__ float np_ld(const float* p) { return __ldg(p); }

__device__ __forceinline__ float np_ld(const np_half* p) {
    np_half h;
    h.bits = __ldg(reinterpret_cast<const unsigned short*>(p));
    return np_to_float(h);
}

__device__ __forceinline__ float np_half_lo(unsigned int u) {
    np_half h;
    h.bits = static_cast<unsigned short>(u & 0xffffu);
    return np_to_float(h);
}

__device__ __forceinline__ float np_half_hi(unsigned int u) {
    np_half h;
    h.bits = static_cast<unsigned short>(u >> 16);
    return np_to_float(h);
}

__device__ __forceinline__ unsigned int np_pack_half2(float lo, float hi) {
    return static_cast<unsigned int>(np_from_float<np_half>(lo).bits) |
           (static_cast<unsigned int>(np_from_float<np_half>(hi).bits) << 16);
}

// Four consecutive elements starting at p, which must be aligned to 4 elements (16 bytes for fp32, 8 for
// fp16): one vector load or store instead of four.
__device__ __forceinline__ void np_load4(const float* p, float v[4]) {
    const float4 t = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = t.x;
    v[1] = t.y;
    v[2] = t.z;
    v[3] = t.w;
}

__device__ __forceinline__ void np_load4(const np_half* p, float v[4]) {
    const uint2 t = __ldg(reinterpret_cast<const uint2*>(p));
    v[0] = np_half_lo(t.x);
    v[1] = np_half_hi(t.x);
    v[2] = np_half_lo(t.y);
    v[3] = np_half_hi(t.y);
}

__device__ __forceinline__ void np_store4(float* p, const float v[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ void np_store4(np_half* p, const float v[4]) {
    *reinterpret_cast<uint2*>(p) = make_uint2(np_pack_half2(v[0], v[1]), np_pack_half2(v[2], v[3]));
}

__device__ __forceinline__ float np_warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float np_warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}
