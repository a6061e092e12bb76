// What the GPU tests share: converting float64 reference values to and from the device element types, and failing
// loudly on a CUDA runtime error. Host code only (cuda_fp16.h / cuda_bf16.h conversions are host-callable).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

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

} // namespace carafe_test
