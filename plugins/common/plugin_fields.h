// Reading the fields of the detection plugins (MultiLevelRoIAlign, BatchedNMS) from carafe::Field, the
// TensorRT-independent mirror of PluginField (carafe_params.h), so that the parsing is tested without TensorRT headers.
// ONNX-TensorRT hands INT attributes over as kINT32, FLOAT as kFLOAT32, STRING as kCHAR and FLOATS as kFLOAT32 arrays;
// other integer and float kinds are accepted too where they hold the value exactly.
#pragma once

#include "carafe_params.h"

#include <initializer_list>
#include <string>
#include <vector>

namespace carafe
{
namespace fields
{

// Empty when every field name is one of `known` and none is given twice; otherwise a message naming the field.
std::string checkNames(std::vector<Field> const& fields, std::initializer_list<char const*> known);

// Empty when every name in `required` is among the fields, else a message naming the first missing one.
std::string checkRequired(std::vector<Field> const& fields, std::initializer_list<char const*> required);

// One whole number (any integer kind, or a float kind holding an integer) that fits in int32.
bool readInt(Field const& f, int32_t& out, std::string& err);

// One finite number of any numeric kind, as float.
bool readFloat(Field const& f, float& out, std::string& err);

// 1..maxCount finite numbers of any numeric kind.
bool readFloats(Field const& f, size_t maxCount, std::vector<float>& out, std::string& err);

// A string: the bytes of a kCHAR field, one terminating NUL allowed and nothing after it.
bool readString(Field const& f, std::string& out, std::string& err);

// A name or string value with control and non-ASCII bytes escaped, for messages.
std::string shown(std::string const& bytes);

// "(2, 256, -1, 4)": extents for messages (-1: unknown at build time).
std::string dimsString(std::vector<int64_t> const& dims);

} // namespace fields
} // namespace carafe
