// Operator attributes and their validation, independent of TensorRT so that field parsing and shape checks are tested
// on machines without TensorRT headers. The TensorRT plugin maps its PluginField objects onto `Field` and calls these.
#pragma once

#include "carafe_geometry.h"

#include <cstdint>
#include <string>
#include <vector>

namespace carafe
{

struct Params
{
    int32_t kernelSize{0}; // required: parseFields refuses fields without it (0 is outside the contract)
    int32_t group{1};
    int32_t scale{2};
    Mode mode{Mode::kUp};
};

// The attribute flavours the two node types carry (CONTRACT §2-3).
enum class FieldSet
{
    kCarafe, // carafe::CARAFE: kernel_size:int, group:int, scale_factor:int, mode:string
    kMmcv,   // mmcv::MMCVCARAFE: kernel_size:int, group_size:int, scale_factor:float (up only)
};

// A mirror of the PluginField types this operator can receive.
enum class FieldKind
{
    kInt8,
    kInt16,
    kInt32,
    kInt64,
    kFloat32,
    kFloat64,
    kChar,
    kOther,
};

struct Field
{
    std::string name;
    FieldKind kind;
    void const* data;
    int32_t length;
};

// Empty string when `p` is inside the contract, otherwise a message naming the bad attribute.
std::string validate(Params const& p);

// Sets `p` from `fields`: kernel_size is required, the other fields default to group 1, scale_factor 2, mode "up".
// A field given twice, an unknown field (a typo), a value of the wrong kind or count, and a string that is not
// exactly "up"/"down" (one terminating NUL allowed, nothing after it) are errors. Returns an empty string on success,
// otherwise a message naming the field; `p` is then unspecified.
std::string parseFields(std::vector<Field> const& fields, FieldSet set, Params& p);

// "up" / "down" for messages and serialization.
char const* modeName(Mode mode);

// Checks features (N, C, H, W) against kernels (N, G*k*k, Ho, Wo) for these attributes. Any extent may be -1
// (unknown at build time) and is then not checked; any other negative extent is an error. Extents whose output size
// or element count would not fit in int64 are an error, not an overflow. Empty string when consistent.
std::string checkShapes(Params const& p, int64_t const featureDims[4], int64_t const kernelDims[4]);

// The geometry a launch (enqueue) runs with: every extent known (>= 0) and accepted by checkShapes. Empty string
// with `g` set, otherwise a message and `g` untouched: the kernels' index math never sees extents whose products
// overflow, whatever dims reach enqueue.
std::string launchGeometry(Params const& p, int64_t const featureDims[4], int64_t const kernelDims[4], Geometry& g);

} // namespace carafe
