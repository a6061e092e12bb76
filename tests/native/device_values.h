// What the GPU tests share: converting float64 reference values to and from the device element types, copying
// vectors to and from the device, and failing loudly on a CUDA runtime error. Host code only (cuda_fp16.h /
// cuda_bf16.h conversions are host-callable); the CPU emulation of the kernels uses the conversions too.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CUDA_OK(call)                                                                                                  \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const e_ = (call);                                                                                 \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));              \
            std::exit(1);                                                                                              \
        }                                                                                                              \
    } while (0)

namespace carafe_test
{

// Round-to-nearest, as the device would store the value.
template <typename T>
T fromDouble(double v);
template <>
inline float fromDouble<float>(double v)
{
    return static_cast<float>(v);
}
template <>
inline double fromDouble<double>(double v)
{
    return v;
}
template <>
inline __half fromDouble<__half>(double v)
{
    return __float2half_rn(static_cast<float>(v));
}
template <>
inline __nv_bfloat16 fromDouble<__nv_bfloat16>(double v)
{
    return __float2bfloat16_rn(static_cast<float>(v));
}

inline double toDouble(float v)
{
    return v;
}
inline double toDouble(double v)
{
    return v;
}
inline double toDouble(__half v)
{
    return __half2float(v);
}
inline double toDouble(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

// A device copy of `host` (at least one element allocated); the caller frees it.
template <typename T>
T* upload(std::vector<T> const& host)
{
    T* dev = nullptr;
    CUDA_OK(cudaMalloc(&dev, std::max<size_t>(host.size(), 1) * sizeof(T)));
    CUDA_OK(cudaMemcpy(dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return dev;
}

// `count` elements copied back (cudaMemcpy waits for the default stream's work).
template <typename T>
std::vector<T> download(T const* dev, size_t count)
{
    std::vector<T> host(count);
    CUDA_OK(cudaMemcpy(host.data(), dev, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

} // namespace carafe_test
