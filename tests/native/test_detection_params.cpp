// The detection plugins' field parsing and shape rules (MultiLevelRoIAlign, BatchedNMS), without TensorRT: every
// field error is one message naming the field, limits and shape mismatches are refused, and nothing reads past a
// field's data (built with AddressSanitizer and UBSan; each field's data is a heap copy of exactly its bytes).
#include "batchedNMSParams.h"
#include "check.h"
#include "roiAlignParams.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using carafe::Field;
using carafe::FieldKind;

namespace
{

// Fields whose data live on the heap at exactly their size, so ASan sees any over-read.
struct Fields
{
    std::vector<std::shared_ptr<unsigned char[]>> storage; // shared: copies of a Fields point at the same bytes
    std::vector<Field> list;

    Fields& add(char const* name, FieldKind kind, void const* data, int32_t length, size_t bytes)
    {
        storage.emplace_back(new unsigned char[bytes > 0 ? bytes : 1]);
        if (bytes > 0)
            std::memcpy(storage.back().get(), data, bytes);
        list.push_back(Field{name, kind, storage.back().get(), length});
        return *this;
    }
    Fields& i32(char const* name, int32_t v)
    {
        return add(name, FieldKind::kInt32, &v, 1, sizeof v);
    }
    Fields& i64(char const* name, int64_t v)
    {
        return add(name, FieldKind::kInt64, &v, 1, sizeof v);
    }
    Fields& f32(char const* name, float v)
    {
        return add(name, FieldKind::kFloat32, &v, 1, sizeof v);
    }
    Fields& f64(char const* name, double v)
    {
        return add(name, FieldKind::kFloat64, &v, 1, sizeof v);
    }
    Fields& floats(char const* name, std::vector<float> const& v)
    {
        return add(name, FieldKind::kFloat32, v.data(), static_cast<int32_t>(v.size()), v.size() * sizeof(float));
    }
    Fields& str(char const* name, std::string const& v)
    {
        return add(name, FieldKind::kChar, v.data(), static_cast<int32_t>(v.size()), v.size());
    }
};

bool mentions(std::string const& err, char const* part)
{
    bool const ok = err.find(part) != std::string::npos;
    if (!ok)
        std::fprintf(stderr, "  message \"%s\" does not mention \"%s\"\n", err.c_str(), part);
    return ok;
}

Fields roiFields()
{
    Fields f;
    f.i32("output_height", 7).i32("output_width", 7).floats("featmap_strides", {4, 8, 16, 32});
    return f;
}

void roiAlignFields()
{
    carafe::roialign::Params p;
    // the detectors' node: defaults for the rest
    CHECK(carafe::roialign::parseFields(roiFields().list, p).empty());
    CHECK(p.outputHeight == 7 && p.outputWidth == 7 && p.numLevels == 4 && p.strides[3] == 32.0F);
    CHECK(p.samplingRatio == 0 && p.finestScale == 56.0F && p.aligned);
    // every field, other numeric kinds, a string with its NUL
    Fields all = roiFields();
    all.i64("sampling_ratio", 2).f64("finest_scale", 28.0).add("coordinate_transformation_mode", FieldKind::kChar,
        "output_half_pixel", 18, 18);
    CHECK(carafe::roialign::parseFields(all.list, p).empty());
    CHECK(p.samplingRatio == 2 && p.finestScale == 28.0F && !p.aligned);

    struct Bad
    {
        Fields fields;
        char const* mention;
    };
    std::vector<Bad> bad;
    bad.push_back({Fields().i32("output_width", 7).floats("featmap_strides", {4}), "'output_height' is missing"});
    bad.push_back({roiFields().i32("output_height", 3), "'output_height' is given twice"});
    bad.push_back({roiFields().i32("sampling_ration", 2), "unknown field 'sampling_ration'"});
    bad.push_back({roiFields().f32("sampling_ratio", 1.5F), "'sampling_ratio' must be an int32 integer"});
    bad.push_back({roiFields().i32("sampling_ratio", -1), "sampling_ratio must be in [0, 64]"});
    bad.push_back({roiFields().f32("finest_scale", -56.0F), "finest_scale must be a positive number"});
    bad.push_back({roiFields().f32("finest_scale", NAN), "'finest_scale' must be finite"});
    bad.push_back({roiFields().str("coordinate_transformation_mode", "half"), "\"half_pixel\" or \"output_half_pixel\""});
    bad.push_back({roiFields().add("coordinate_transformation_mode", FieldKind::kChar, "half_pixel\0x", 12, 12),
        "has a NUL inside"});
    bad.push_back({roiFields().str("finest_scale", "56"), "'finest_scale' must be numeric"});
    Fields zeroSize;
    zeroSize.i32("output_height", 0).i32("output_width", 7).floats("featmap_strides", {4});
    bad.push_back({zeroSize, "output_height must be in [1, 1024]"});
    Fields nineLevels;
    nineLevels.i32("output_height", 7).i32("output_width", 7).floats("featmap_strides", {1, 2, 3, 4, 5, 6, 7, 8, 9});
    bad.push_back({nineLevels, "'featmap_strides' must hold 1 to 8 value(s), got 9"});
    Fields zeroStride;
    zeroStride.i32("output_height", 7).i32("output_width", 7).floats("featmap_strides", {4, 0});
    bad.push_back({zeroStride, "featmap_strides[1] must be a positive number"});
    Fields empty;
    empty.i32("output_height", 7).i32("output_width", 7).add("featmap_strides", FieldKind::kFloat32, nullptr, 0, 0);
    bad.push_back({empty, "'featmap_strides' has no value"});
    for (Bad const& b : bad)
    {
        std::string const err = carafe::roialign::parseFields(b.fields.list, p);
        CHECK_MSG(mentions(err, b.mention), "roi_align fields: %s", b.mention);
    }
}

void roiAlignShapes()
{
    carafe::roialign::Params p;
    CHECK(carafe::roialign::parseFields(roiFields().list, p).empty());
    using S = std::vector<std::vector<int64_t>>;
    S const good = {{1000, 4}, {1000}, {1, 256, 200, 304}, {1, 256, 100, 152}, {1, 256, 50, 76}, {1, 256, 25, 38}};
    CHECK(carafe::roialign::checkShapes(p, good).empty());
    S dynamic = {{-1, 4}, {-1}, {-1, 256, -1, -1}, {-1, 256, -1, -1}, {-1, -1, -1, -1}, {-1, 256, -1, -1}};
    CHECK(carafe::roialign::checkShapes(p, dynamic).empty());
    struct Bad
    {
        S shapes;
        char const* mention;
    };
    Bad const bad[] = {
        {{{1000, 4}, {1000}, {1, 256, 200, 304}}, "expects 6 inputs"},
        {{{1000, 5}, {1000}, good[2], good[3], good[4], good[5]}, "rois must be (K, 4)"},
        {{{1000, 4}, {999}, good[2], good[3], good[4], good[5]}, "one entry per RoI"},
        {{{1000, 4}, {1000, 1}, good[2], good[3], good[4], good[5]}, "batch_indices must be (K,)"},
        {{{1000, 4}, {1000}, good[2], {1, 128, 100, 152}, good[4], good[5]}, "the same channels"},
        {{{1000, 4}, {1000}, good[2], good[3], {2, 256, 50, 76}, good[5]}, "the same batch"},
        {{{1000, 4}, {1000}, good[2], good[3], {1, 256, 50}, good[5]}, "features 2 must be 4-D"},
        {{{1000, 4}, {1000}, good[2], good[3], good[4], {1, 256, int64_t(1) << 40, int64_t(1) << 40}}, "more elements"},
        {{{INT64_MAX / 2, 4}, {INT64_MAX / 2}, good[2], good[3], good[4], good[5]}, "the output"},
    };
    for (Bad const& b : bad)
    {
        std::string const err = carafe::roialign::checkShapes(p, b.shapes);
        CHECK_MSG(mentions(err, b.mention), "roi_align shapes: %s", b.mention);
    }
}

Fields nmsFields()
{
    Fields f;
    f.f32("score_threshold", 0.05F).f32("iou_threshold", 0.5F).i32("max_per_image", 100);
    return f;
}

void nmsFieldsAndShapes()
{
    carafe::nms::Params p;
    CHECK(carafe::nms::parseFields(nmsFields().list, p).empty());
    CHECK(p.scoreThreshold == 0.05F && p.iouThreshold == 0.5F && p.maxPerImage == 100 && p.maxPerClass == -1);
    Fields rpn;
    rpn.f32("score_threshold", -1.0F).f64("iou_threshold", 0.7).i32("max_per_image", 1000).i64("max_per_class", 300);
    CHECK(carafe::nms::parseFields(rpn.list, p).empty());
    CHECK(p.scoreThreshold == -1.0F && p.maxPerClass == 300);

    struct Bad
    {
        Fields fields;
        char const* mention;
    };
    std::vector<Bad> bad;
    bad.push_back({Fields().f32("score_threshold", 0).f32("iou_threshold", 0.5F), "'max_per_image' is missing"});
    bad.push_back({nmsFields().f32("iou_threshold", 0.3F), "'iou_threshold' is given twice"});
    bad.push_back({nmsFields().i32("keep_top_k", 3), "unknown field 'keep_top_k'"});
    bad.push_back({nmsFields().i32("max_per_class", 0), "max_per_class must be -1 (no limit) or at least 1"});
    Fields iou;
    iou.f32("score_threshold", 0).f32("iou_threshold", 1.5F).i32("max_per_image", 10);
    bad.push_back({iou, "iou_threshold must be in [0, 1]"});
    Fields inf;
    inf.f32("score_threshold", INFINITY).f32("iou_threshold", 0.5F).i32("max_per_image", 10);
    bad.push_back({inf, "'score_threshold' must be finite"});
    Fields k0;
    k0.f32("score_threshold", 0).f32("iou_threshold", 0.5F).i32("max_per_image", 0);
    bad.push_back({k0, "max_per_image must be in [1, 1048576]"});
    Fields two;
    two.f32("score_threshold", 0).floats("iou_threshold", {0.5F, 0.6F}).i32("max_per_image", 5);
    bad.push_back({two, "'iou_threshold' must hold 1 value(s), got 2"});
    Fields big;
    big.f32("score_threshold", 0).f32("iou_threshold", 0.5F).f64("max_per_image", 4e9);
    bad.push_back({big, "'max_per_image' must be an int32 integer"});
    for (Bad const& b : bad)
    {
        std::string const err = carafe::nms::parseFields(b.fields.list, p);
        CHECK_MSG(mentions(err, b.mention), "nms fields: %s", b.mention);
    }

    CHECK(carafe::nms::checkShapes({1, 1000, 80, 4}, {1, 1000, 80}).empty());
    CHECK(carafe::nms::checkShapes({2, 5000, 1, 4}, {2, 5000, 5}).empty());
    CHECK(carafe::nms::checkShapes({-1, 1000, -1, 4}, {-1, -1, 80}).empty());
    struct BadShape
    {
        std::vector<int64_t> boxes, scores;
        char const* mention;
    };
    BadShape const badShapes[] = {
        {{1, 1000, 4}, {1, 1000, 80}, "boxes must be (N, M, 1 or C, 4)"},
        {{1, 1000, 80, 5}, {1, 1000, 80}, "boxes must be (N, M, 1 or C, 4)"},
        {{1, 1000, 80, 4}, {1, 1000}, "scores must be (N, M, C)"},
        {{2, 1000, 80, 4}, {1, 1000, 80}, "the batch"},
        {{1, 999, 80, 4}, {1, 1000, 80}, "the number of boxes M"},
        {{1, 1000, 3, 4}, {1, 1000, 80}, "must have 1 or C = 80"},
        {{1, 1000, 1, 4}, {1, 1000, 0}, "at least one class"},
        {{1, int64_t(1) << 32, 1, 4}, {1, int64_t(1) << 32, 1}, "2^31 - 1 boxes"},
        {{int64_t(1) << 40, 1 << 30, 1, 4}, {int64_t(1) << 40, 1 << 30, 1}, "more elements than int64"},
    };
    for (BadShape const& b : badShapes)
    {
        std::string const err = carafe::nms::checkShapes(b.boxes, b.scores);
        CHECK_MSG(mentions(err, b.mention), "nms shapes: %s", b.mention);
    }
}

} // namespace

int main()
{
    roiAlignFields();
    roiAlignShapes();
    nmsFieldsAndShapes();
    return TEST_RESULT();
}
