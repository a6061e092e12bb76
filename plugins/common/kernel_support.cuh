// What the detection plugins' CUDA kernels share with each other and with tests/native/cuda_host_emulation.h, which
// compiles the same .cu files for the CPU: the launch macro, dynamic shared memory, float conversion of the element
// types, and products that the compiler may not fuse into an FMA (so a GPU rounds as the CPU references do).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#define CARAFE_STRIP_PARENS(...) __VA_ARGS__
#ifndef CARAFE_LAUNCH
#define CARAFE_LAUNCH(kernel, grid, block, shared, stream, ...)                                                        \
    CARAFE_STRIP_PARENS kernel<<<grid, block, shared, stream>>>(__VA_ARGS__)
#endif

namespace carafe
{
namespace kernels
{

__host__ __device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__host__ __device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
__host__ __device__ __forceinline__ T fromFloat(float v);
template <>
__host__ __device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__host__ __device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

// a * b rounded to float32, never contracted with a following add.
__device__ __forceinline__ float mulRn(float a, float b)
{
#if defined(CARAFE_HOST_EMULATION)
    return a * b;
#else
    return __fmul_rn(a, b);
#endif
}

// The block's dynamic shared memory (the launch's `shared` bytes), 8-byte aligned.
template <typename T>
__device__ __forceinline__ T* sharedBuffer()
{
#if defined(CARAFE_HOST_EMULATION)
    return reinterpret_cast<T*>(carafe_emulation::sharedMemory());
#else
    extern __shared__ double kernelSharedStorage[];
    return reinterpret_cast<T*>(kernelSharedStorage);
#endif
}

// Blocks for `count` work items of `threads` each, capped (kernels stride over the rest).
inline unsigned blocksFor(int64_t count, int threads, int64_t cap = 65535)
{
    int64_t const blocks = (count + threads - 1) / threads;
    return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

} // namespace kernels
} // namespace carafe
