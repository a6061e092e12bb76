#include "plugin_fields.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace carafe
{
namespace fields
{
namespace
{

size_t elementSize(FieldKind kind)
{
    switch (kind)
    {
    case FieldKind::kInt8: return 1;
    case FieldKind::kInt16: return 2;
    case FieldKind::kInt32: return 4;
    case FieldKind::kInt64: return 8;
    case FieldKind::kFloat32: return 4;
    case FieldKind::kFloat64: return 8;
    default: return 0;
    }
}

// Element i of a numeric field as double (memcpy: PluginField data carries no alignment promise).
double element(Field const& f, size_t i)
{
    unsigned char const* p = static_cast<unsigned char const*>(f.data) + i * elementSize(f.kind);
    switch (f.kind)
    {
    case FieldKind::kInt8: { int8_t v; std::memcpy(&v, p, sizeof v); return v; }
    case FieldKind::kInt16: { int16_t v; std::memcpy(&v, p, sizeof v); return v; }
    case FieldKind::kInt32: { int32_t v; std::memcpy(&v, p, sizeof v); return v; }
    case FieldKind::kInt64: { int64_t v; std::memcpy(&v, p, sizeof v); return static_cast<double>(v); }
    case FieldKind::kFloat32: { float v; std::memcpy(&v, p, sizeof v); return v; }
    case FieldKind::kFloat64: { double v; std::memcpy(&v, p, sizeof v); return v; }
    default: return NAN;
    }
}

bool numbers(Field const& f, size_t minCount, size_t maxCount, std::vector<double>& out, std::string& err)
{
    if (elementSize(f.kind) == 0)
    {
        err = "field '" + shown(f.name) + "' must be numeric";
        return false;
    }
    if (f.data == nullptr || f.length < 1)
    {
        err = "field '" + shown(f.name) + "' has no value";
        return false;
    }
    size_t const n = static_cast<size_t>(f.length);
    if (n < minCount || n > maxCount)
    {
        err = "field '" + shown(f.name) + "' must hold " + (minCount == maxCount ? std::to_string(minCount)
            : std::to_string(minCount) + " to " + std::to_string(maxCount)) + " value(s), got " + std::to_string(n);
        return false;
    }
    out.resize(n);
    for (size_t i = 0; i < n; ++i)
    {
        out[i] = element(f, i);
        if (!std::isfinite(out[i]))
        {
            std::ostringstream s;
            s << "field '" << shown(f.name) << "' must be finite, got " << out[i];
            err = s.str();
            return false;
        }
    }
    return true;
}

} // namespace

std::string shown(std::string const& bytes)
{
    std::string s;
    for (char ch : bytes)
    {
        unsigned char const c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c < 0x7F && c != '\\' && c != '"')
        {
            s += ch;
        }
        else
        {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02x", c);
            s += buf;
        }
    }
    return s;
}

std::string dimsString(std::vector<int64_t> const& dims)
{
    std::string s = "(";
    for (size_t i = 0; i < dims.size(); ++i)
    {
        s += (i ? ", " : "") + std::to_string(dims[i]);
    }
    return s + ")";
}

std::string checkNames(std::vector<Field> const& fields, std::initializer_list<char const*> known)
{
    for (size_t i = 0; i < fields.size(); ++i)
    {
        bool isKnown = false;
        for (char const* name : known)
        {
            isKnown = isKnown || fields[i].name == name;
        }
        if (!isKnown)
        {
            std::string expected;
            for (char const* name : known)
            {
                expected += (expected.empty() ? "" : ", ") + std::string(name);
            }
            return "unknown field '" + shown(fields[i].name) + "' (expected " + expected + ")";
        }
        for (size_t j = 0; j < i; ++j)
        {
            if (fields[j].name == fields[i].name)
            {
                return "field '" + fields[i].name + "' is given twice";
            }
        }
    }
    return {};
}

std::string checkRequired(std::vector<Field> const& fields, std::initializer_list<char const*> required)
{
    for (char const* name : required)
    {
        bool found = false;
        for (Field const& f : fields)
        {
            found = found || f.name == name;
        }
        if (!found)
        {
            return "the required field '" + std::string(name) + "' is missing (it has no default)";
        }
    }
    return {};
}

bool readInt(Field const& f, int32_t& out, std::string& err)
{
    std::vector<double> v;
    if (!numbers(f, 1, 1, v, err))
    {
        return false;
    }
    if (v[0] != std::floor(v[0]) || std::fabs(v[0]) > 2147483647.0)
    {
        std::ostringstream s;
        s << "field '" << shown(f.name) << "' must be an int32 integer, got " << v[0];
        err = s.str();
        return false;
    }
    out = static_cast<int32_t>(v[0]);
    return true;
}

bool readFloat(Field const& f, float& out, std::string& err)
{
    std::vector<float> v;
    if (!readFloats(f, 1, v, err))
    {
        return false;
    }
    out = v[0];
    return true;
}

bool readFloats(Field const& f, size_t maxCount, std::vector<float>& out, std::string& err)
{
    std::vector<double> v;
    if (!numbers(f, 1, maxCount, v, err))
    {
        return false;
    }
    out.clear();
    for (double x : v)
    {
        if (std::fabs(x) > 3.4028234663852886e38)
        {
            err = "field '" + shown(f.name) + "' holds a value beyond float32";
            return false;
        }
        out.push_back(static_cast<float>(x));
    }
    return true;
}

bool readString(Field const& f, std::string& out, std::string& err)
{
    if (f.kind != FieldKind::kChar)
    {
        err = "field '" + shown(f.name) + "' must be a string";
        return false;
    }
    if (f.data == nullptr || f.length < 1)
    {
        err = "field '" + shown(f.name) + "' has no value";
        return false;
    }
    char const* data = static_cast<char const*>(f.data);
    size_t length = static_cast<size_t>(f.length);
    if (data[length - 1] == '\0')
    {
        --length;
    }
    out.assign(data, length);
    if (out.find('\0') != std::string::npos)
    {
        err = "field '" + shown(f.name) + "' has a NUL inside: \"" + shown(std::string(data, f.length)) + "\"";
        return false;
    }
    return true;
}

} // namespace fields
} // namespace carafe
