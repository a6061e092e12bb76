// CUDA launchers of the CARAFE / CARAFE++ operator. Tensors are contiguous NCHW; features, kernels and outputs share
// one dtype. Everything is enqueued on `stream`; nothing is allocated.
#pragma once

#include "carafe_geometry.h"

#include <cuda_runtime_api.h>

namespace carafe
{

enum class DType : int32_t
{
    kFloat32 = 0,
    kFloat16 = 1,
    kBFloat16 = 2,
    kFloat64 = 3, // accumulates in float64; for gradcheck through the PyTorch op (the plugin never uses it)
};

// Arithmetic is float32 for the 16/32-bit types and float64 for kFloat64.
// output (N, C, Ho, Wo) = carafe(features (N, C, H, W), kernels (N, G*k*k, Ho, Wo)).
cudaError_t launchForward(Geometry const& g, DType type, void const* features, void const* kernels, void* output,
    cudaStream_t stream) noexcept;

// Gradients of the forward with respect to both inputs; gradFeatures and gradKernels are overwritten. Either output
// pointer may be null to skip that gradient.
cudaError_t launchBackward(Geometry const& g, DType type, void const* gradOutput, void const* features,
    void const* kernels, void* gradFeatures, void* gradKernels, cudaStream_t stream) noexcept;

// Which forward kernel launchForward picks for `g` ("up_s2_k5", "down_k5", "generic", ...), for benchmarks and tests.
char const* forwardVariant(Geometry const& g, DType type = DType::kFloat32) noexcept;

} // namespace carafe
