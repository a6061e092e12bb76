// CUDA launcher of BatchedNMS (semantics in batchedNMSParams.h). Tensors are contiguous; boxes, scores and the box and
// score outputs share one float type; comparisons and IoU are float32. Enqueued on `stream`; the workspace (of
// workspaceSize bytes) is the only memory used besides the tensors.
#pragma once

#include "batchedNMSParams.h"
#include "carafe_cuda.h"

#include <cstddef>
#include <cuda_runtime_api.h>

namespace carafe
{
namespace nms
{

struct Shape
{
    int64_t batch;       // N
    int64_t numBoxes;    // M
    int64_t numClasses;  // C
    int64_t boxesPerRow; // Cb: 1 or C
};

// Bytes of workspace launchBatchedNms needs for `s` (every (image, class) pair gets room for all M boxes).
size_t workspaceSize(Shape const& s) noexcept;

// type: DType::kFloat32 or kFloat16 (others: cudaErrorInvalidValue). Outputs as in batchedNMSParams.h, K =
// p.maxPerImage slots per image.
cudaError_t launchBatchedNms(Params const& p, Shape const& s, DType type, void const* boxes, void const* scores,
    void* outBoxes, void* outScores, int32_t* outLabels, int32_t* outValid, void* workspace,
    cudaStream_t stream) noexcept;

} // namespace nms
} // namespace carafe
