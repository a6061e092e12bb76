// BatchedNMS: attributes, their validation and the shape rules, independent of TensorRT (tested on machines without
// its headers). The plugin maps its PluginFields onto carafe::Field and calls these.
//
// Semantics (mmdetection's multiclass_nms / batched_nms as carafe-deploy's detectors run it, with ONNX Runtime's
// NonMaxSuppression arithmetic):
//   inputs  boxes (N, M, Cb, 4) x1 y1 x2 y2 with Cb = 1 (one box per row, shared by the classes) or Cb = C (one box per
//           row and class); scores (N, M, C)
//   per image n and class c: the candidates are the rows m with scores[n, m, c] > score_threshold, visited by
//           descending score (ties: lower m first); a candidate is kept unless its IoU with a box kept before it (of
//           the same image and class) is > iou_threshold; at most max_per_class are kept (-1: no limit). IoU is
//           computed in float32 on (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)) and counts as 0 when an area
//           or the intersection is not positive.
//   outputs the kept boxes of all classes by descending score (ties: lower m * C + c first), at most max_per_image:
//           boxes (N, max_per_image, 4) (the input's box of the row and class), scores (N, max_per_image),
//           labels (N, max_per_image) int32 class index, valid (N,) int32 how many slots are filled; unfilled slots
//           hold boxes 0, scores 0, labels -1.
#pragma once

#include "carafe_params.h"

#include <cstdint>
#include <string>
#include <vector>

namespace carafe
{
namespace nms
{

constexpr int32_t kMaxPerImage = 1 << 20;

struct Params
{
    float scoreThreshold{0.0F}; // required
    float iouThreshold{0.5F};   // required
    int32_t maxPerClass{-1};    // -1: no limit
    int32_t maxPerImage{0};     // required
};

// Empty when `p` is inside the contract, else a message naming the attribute.
std::string validate(Params const& p);

// Sets `p` from the fields score_threshold, iou_threshold, max_per_image (required) and max_per_class (-1). Unknown
// or repeated fields, wrong kinds or counts are errors. Empty string on success, else a message naming the field.
std::string parseFields(std::vector<Field> const& fields, Params& p);

// Checks boxes (N, M, Cb, 4) against scores (N, M, C) (-1 = unknown extent). Empty when consistent.
std::string checkShapes(std::vector<int64_t> const& boxes, std::vector<int64_t> const& scores);

} // namespace nms
} // namespace carafe
