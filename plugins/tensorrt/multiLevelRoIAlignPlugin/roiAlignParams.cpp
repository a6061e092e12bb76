#include "roiAlignParams.h"

#include "plugin_fields.h"

#include <cmath>
#include <sstream>

namespace carafe
{
namespace roialign
{
namespace
{

using fields::dimsString;

bool known(int64_t v)
{
    return v >= 0;
}

} // namespace

char const* coordinateModeName(bool aligned)
{
    return aligned ? "half_pixel" : "output_half_pixel";
}

std::string validate(Params const& p)
{
    auto range = [](char const* name, int32_t v, int32_t lo, int32_t hi) -> std::string {
        if (v < lo || v > hi)
        {
            return std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got "
                + std::to_string(v);
        }
        return {};
    };
    std::string err = range("output_height", p.outputHeight, 1, kMaxOutputSize);
    if (err.empty())
        err = range("output_width", p.outputWidth, 1, kMaxOutputSize);
    if (err.empty())
        err = range("sampling_ratio", p.samplingRatio, 0, kMaxSamplingRatio);
    if (err.empty())
        err = range("the number of featmap_strides", p.numLevels, 1, kMaxLevels);
    if (!err.empty())
    {
        return err;
    }
    if (!std::isfinite(p.finestScale) || !(p.finestScale > 0.0F))
    {
        std::ostringstream s;
        s << "finest_scale must be a positive number, got " << p.finestScale;
        return s.str();
    }
    for (int32_t l = 0; l < p.numLevels; ++l)
    {
        if (!std::isfinite(p.strides[l]) || !(p.strides[l] > 0.0F))
        {
            std::ostringstream s;
            s << "featmap_strides[" << l << "] must be a positive number, got " << p.strides[l];
            return s.str();
        }
    }
    return {};
}

std::string parseFields(std::vector<Field> const& fields, Params& p)
{
    p = Params{};
    std::string err = fields::checkNames(fields,
        {"output_height", "output_width", "featmap_strides", "sampling_ratio", "finest_scale",
            "coordinate_transformation_mode"});
    if (err.empty())
        err = fields::checkRequired(fields, {"output_height", "output_width", "featmap_strides"});
    if (!err.empty())
    {
        return err;
    }
    for (Field const& f : fields)
    {
        bool ok = true;
        if (f.name == "output_height")
        {
            ok = fields::readInt(f, p.outputHeight, err);
        }
        else if (f.name == "output_width")
        {
            ok = fields::readInt(f, p.outputWidth, err);
        }
        else if (f.name == "sampling_ratio")
        {
            ok = fields::readInt(f, p.samplingRatio, err);
        }
        else if (f.name == "finest_scale")
        {
            ok = fields::readFloat(f, p.finestScale, err);
        }
        else if (f.name == "featmap_strides")
        {
            std::vector<float> strides;
            ok = fields::readFloats(f, kMaxLevels, strides, err);
            p.numLevels = static_cast<int32_t>(strides.size());
            for (size_t l = 0; ok && l < strides.size(); ++l)
            {
                p.strides[l] = strides[l];
            }
        }
        else // coordinate_transformation_mode
        {
            std::string mode;
            ok = fields::readString(f, mode, err);
            if (ok && mode != "half_pixel" && mode != "output_half_pixel")
            {
                err = "field 'coordinate_transformation_mode' must be \"half_pixel\" or \"output_half_pixel\", got \""
                    + fields::shown(mode) + "\"";
                ok = false;
            }
            p.aligned = mode == "half_pixel";
        }
        if (!ok)
        {
            return err;
        }
    }
    return validate(p);
}

std::string checkShapes(Params const& p, std::vector<std::vector<int64_t>> const& inputs)
{
    size_t const want = 2 + static_cast<size_t>(p.numLevels);
    if (inputs.size() != want)
    {
        return "expects " + std::to_string(want) + " inputs (rois, batch_indices and one feature map per featmap "
            "stride, " + std::to_string(p.numLevels) + "), got " + std::to_string(inputs.size());
    }
    auto const& rois = inputs[0];
    auto const& batch = inputs[1];
    if (rois.size() != 2 || (known(rois[1]) && rois[1] != 4))
    {
        return "rois must be (K, 4), got " + dimsString(rois);
    }
    if (batch.size() != 1)
    {
        return "batch_indices must be (K,), got " + dimsString(batch);
    }
    if (known(rois[0]) && known(batch[0]) && rois[0] != batch[0])
    {
        return "batch_indices " + dimsString(batch) + " must have one entry per RoI of rois " + dimsString(rois);
    }
    int64_t n = -1;
    int64_t c = -1;
    for (int32_t l = 0; l < p.numLevels; ++l)
    {
        auto const& f = inputs[2 + l];
        if (f.size() != 4)
        {
            return "features " + std::to_string(l) + " must be 4-D (N, C, H, W), got " + dimsString(f);
        }
        for (int i = 0; i < 2; ++i)
        {
            int64_t& shared = i == 0 ? n : c;
            if (known(f[i]) && known(shared) && f[i] != shared)
            {
                return std::string("every feature map must have the same ") + (i == 0 ? "batch" : "channels")
                    + ": features " + std::to_string(l) + " is " + dimsString(f) + ", features 0 has "
                    + std::to_string(shared);
            }
            if (known(f[i]))
            {
                shared = f[i];
            }
        }
        // the kernels count elements with int64 offsets: refuse extents whose product would overflow
        int64_t count = 1;
        for (int64_t e : f)
        {
            if (known(e) && __builtin_mul_overflow(count, e, &count))
            {
                return "features " + std::to_string(l) + " " + dimsString(f) + " has more elements than int64 counts";
            }
        }
    }
    if (known(rois[0]) && known(c))
    {
        int64_t count = 0;
        if (__builtin_mul_overflow(rois[0], c, &count)
            || __builtin_mul_overflow(count, static_cast<int64_t>(p.outputHeight) * p.outputWidth, &count))
        {
            return "the output (" + std::to_string(rois[0]) + ", " + std::to_string(c) + ", "
                + std::to_string(p.outputHeight) + ", " + std::to_string(p.outputWidth)
                + ") has more elements than int64 counts";
        }
    }
    return {};
}

} // namespace roialign
} // namespace carafe
