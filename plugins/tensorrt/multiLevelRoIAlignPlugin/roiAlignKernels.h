// CUDA launcher of MultiLevelRoIAlign (semantics in roiAlignParams.h). Tensors are contiguous; features, rois and the
// output share one float type; arithmetic is float32. Enqueued on `stream`; nothing is allocated, no workspace.
#pragma once

#include "carafe_cuda.h"
#include "roiAlignParams.h"

#include <cuda_runtime_api.h>

namespace carafe
{
namespace roialign
{

struct Level
{
    void const* features; // (N, C, height, width)
    int64_t height;
    int64_t width;
};

struct Shape
{
    int64_t numRois;  // K
    int64_t batch;    // N
    int64_t channels; // C
    Level levels[kMaxLevels];
};

// type: DType::kFloat32 or kFloat16 (others: cudaErrorInvalidValue). batchIndices: int64 when `int64Indices`, else
// int32. output (K, C, outputHeight, outputWidth).
cudaError_t launchMultiLevelRoiAlign(Params const& p, Shape const& s, DType type, void const* rois,
    void const* batchIndices, bool int64Indices, void* output, cudaStream_t stream) noexcept;

} // namespace roialign
} // namespace carafe
