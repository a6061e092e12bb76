// MultiLevelRoIAlign: attributes, their validation and the shape rules, independent of TensorRT (tested on machines
// without its headers). The plugin maps its PluginFields onto carafe::Field and calls these.
//
// Semantics (mmdetection's SingleRoIExtractor with mmcv's RoIAlign, as carafe-deploy's detectors use it):
//   inputs  rois (K, 4) x1 y1 x2 y2 in image pixels, batch_indices (K,) int32/int64, features_l (N, C, H_l, W_l),
//           l = 0 .. L-1, L = len(featmap_strides)
//   level   l(k) = clamp(floor(log2(sqrt((x2 - x1) * (y2 - y1)) / finest_scale + 1e-6)), 0, L - 1)
//   output  (K, C, output_height, output_width): RoI k average-pooled from features_{l(k)} with spatial scale
//           1 / featmap_strides[l(k)]; "half_pixel" (mmcv aligned=True, the default) shifts the RoI by half a pixel
//           and allows any RoI size, "output_half_pixel" (aligned=False) does not shift and makes RoIs at least
//           1 x 1; sampling_ratio 0 takes ceil(roi_size / output_size) samples per bin along each axis.
//   A RoI whose level is not a number (a NaN coordinate) or whose batch index is outside [0, N) pools to zeros.
#pragma once

#include "carafe_params.h"

#include <cstdint>
#include <string>
#include <vector>

namespace carafe
{
namespace roialign
{

constexpr int32_t kMaxLevels = 8;
constexpr int32_t kMaxOutputSize = 1024;
constexpr int32_t kMaxSamplingRatio = 64;

struct Params
{
    int32_t outputHeight{0}; // required
    int32_t outputWidth{0};  // required
    int32_t samplingRatio{0};
    float finestScale{56.0F};
    bool aligned{true}; // coordinate_transformation_mode "half_pixel" (true) or "output_half_pixel"
    int32_t numLevels{0}; // len(featmap_strides), required
    float strides[kMaxLevels]{};
};

// "half_pixel" / "output_half_pixel" for messages and serialization.
char const* coordinateModeName(bool aligned);

// Empty when `p` is inside the contract, else a message naming the attribute.
std::string validate(Params const& p);

// Sets `p` from the fields output_height, output_width (required), featmap_strides (required, 1..8 floats),
// sampling_ratio (0), finest_scale (56), coordinate_transformation_mode ("half_pixel"). Unknown or repeated fields,
// wrong kinds or counts are errors. Empty string on success, else a message naming the field.
std::string parseFields(std::vector<Field> const& fields, Params& p);

// Checks the input shapes (each a list of extents, -1 = unknown): rois (K, 4), batch_indices (K,), and
// p.numLevels feature maps (N, C, H, W) sharing N and C. Empty when consistent.
std::string checkShapes(Params const& p, std::vector<std::vector<int64_t>> const& inputs);

} // namespace roialign
} // namespace carafe
