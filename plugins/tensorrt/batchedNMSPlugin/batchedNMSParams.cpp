#include "batchedNMSParams.h"

#include "plugin_fields.h"

#include <cmath>
#include <sstream>

namespace carafe
{
namespace nms
{
namespace
{

using fields::dimsString;

bool known(int64_t v)
{
    return v >= 0;
}

} // namespace

std::string validate(Params const& p)
{
    std::ostringstream s;
    if (!std::isfinite(p.scoreThreshold))
    {
        s << "score_threshold must be a finite number, got " << p.scoreThreshold;
    }
    else if (!(p.iouThreshold >= 0.0F && p.iouThreshold <= 1.0F))
    {
        s << "iou_threshold must be in [0, 1], got " << p.iouThreshold;
    }
    else if (p.maxPerImage < 1 || p.maxPerImage > kMaxPerImage)
    {
        s << "max_per_image must be in [1, " << kMaxPerImage << "], got " << p.maxPerImage;
    }
    else if (p.maxPerClass != -1 && p.maxPerClass < 1)
    {
        s << "max_per_class must be -1 (no limit) or at least 1, got " << p.maxPerClass;
    }
    return s.str();
}

std::string parseFields(std::vector<Field> const& fields, Params& p)
{
    p = Params{};
    std::string err = fields::checkNames(fields, {"score_threshold", "iou_threshold", "max_per_class", "max_per_image"});
    if (err.empty())
        err = fields::checkRequired(fields, {"score_threshold", "iou_threshold", "max_per_image"});
    if (!err.empty())
    {
        return err;
    }
    for (Field const& f : fields)
    {
        bool const ok = f.name == "score_threshold" ? fields::readFloat(f, p.scoreThreshold, err)
            : f.name == "iou_threshold"             ? fields::readFloat(f, p.iouThreshold, err)
            : f.name == "max_per_class"             ? fields::readInt(f, p.maxPerClass, err)
                                                    : fields::readInt(f, p.maxPerImage, err);
        if (!ok)
        {
            return err;
        }
    }
    return validate(p);
}

std::string checkShapes(std::vector<int64_t> const& boxes, std::vector<int64_t> const& scores)
{
    if (boxes.size() != 4 || (known(boxes[3]) && boxes[3] != 4))
    {
        return "boxes must be (N, M, 1 or C, 4), got " + dimsString(boxes);
    }
    if (scores.size() != 3)
    {
        return "scores must be (N, M, C), got " + dimsString(scores);
    }
    for (int i = 0; i < 2; ++i)
    {
        if (known(boxes[i]) && known(scores[i]) && boxes[i] != scores[i])
        {
            return "boxes " + dimsString(boxes) + " and scores " + dimsString(scores) + " disagree on "
                + (i == 0 ? "the batch" : "the number of boxes M");
        }
    }
    if (known(scores[2]) && scores[2] < 1)
    {
        return "scores " + dimsString(scores) + " must have at least one class";
    }
    if (known(boxes[2]) && boxes[2] != 1 && known(scores[2]) && boxes[2] != scores[2])
    {
        return "boxes " + dimsString(boxes) + " must have 1 or C = " + std::to_string(scores[2])
            + " boxes per row (scores " + dimsString(scores) + ")";
    }
    // candidate indices are int32 and the workspace is counted in int64
    if (known(scores[1]) && scores[1] > INT32_MAX)
    {
        return "scores " + dimsString(scores) + ": more than 2^31 - 1 boxes per image";
    }
    int64_t count = 1;
    for (int64_t e : scores)
    {
        if (known(e) && __builtin_mul_overflow(count, e, &count))
        {
            return "scores " + dimsString(scores) + " has more elements than int64 counts";
        }
    }
    if (known(count) && count > (INT64_MAX >> 6))
    {
        return "scores " + dimsString(scores) + " needs a workspace larger than int64 counts";
    }
    return {};
}

} // namespace nms
} // namespace carafe
