#include "carafe_params.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace carafe
{
namespace
{

// Upper bounds keep the CUDA kernels' register/shared-memory plans and int32 grid arithmetic meaningful; they are far
// above anything CARAFE models use (k <= 7, s <= 4).
constexpr int32_t kMaxKernelSize = 63;
constexpr int32_t kMaxScale = 64;
constexpr int32_t kMaxGroup = 1 << 16;

bool readNumber(Field const& f, double& out, std::string& err)
{
    if (f.data == nullptr || f.length < 1)
    {
        err = "field '" + f.name + "' has no value";
        return false;
    }
    if (f.length != 1)
    {
        err = "field '" + f.name + "' must hold one value, got " + std::to_string(f.length);
        return false;
    }
    switch (f.kind)
    {
    case FieldKind::kInt8: out = *static_cast<int8_t const*>(f.data); return true;
    case FieldKind::kInt16: out = *static_cast<int16_t const*>(f.data); return true;
    case FieldKind::kInt32: out = *static_cast<int32_t const*>(f.data); return true;
    case FieldKind::kInt64: out = static_cast<double>(*static_cast<int64_t const*>(f.data)); return true;
    case FieldKind::kFloat32: out = *static_cast<float const*>(f.data); return true;
    case FieldKind::kFloat64: out = *static_cast<double const*>(f.data); return true;
    default: err = "field '" + f.name + "' must be numeric"; return false;
    }
}

bool readInt(Field const& f, int32_t& out, std::string& err)
{
    double v = 0;
    if (!readNumber(f, v, err))
    {
        return false;
    }
    if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 2147483647.0)
    {
        std::ostringstream s;
        s << "field '" << f.name << "' must be an integer, got " << v;
        err = s.str();
        return false;
    }
    out = static_cast<int32_t>(v);
    return true;
}

// The bytes of a string field as a C++ literal would show them ("up\0garbage" stays visible).
std::string shown(char const* data, size_t length)
{
    std::string s;
    for (size_t i = 0; i < length; ++i)
    {
        unsigned char const c = static_cast<unsigned char>(data[i]);
        if (c >= 0x20 && c < 0x7F && c != '\\' && c != '"')
        {
            s += static_cast<char>(c);
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

bool readMode(Field const& f, Mode& out, std::string& err)
{
    if (f.kind == FieldKind::kChar)
    {
        if (f.data == nullptr || f.length < 1)
        {
            err = "field 'mode' has no value";
            return false;
        }
        // Producers pass strings with or without one terminating NUL; anything else, a NUL inside included, is not
        // the string it might start with.
        char const* data = static_cast<char const*>(f.data);
        size_t length = static_cast<size_t>(f.length);
        if (data[length - 1] == '\0')
        {
            --length;
        }
        std::string const s(data, length);
        if (s == "up")
        {
            out = Mode::kUp;
            return true;
        }
        if (s == "down")
        {
            out = Mode::kDown;
            return true;
        }
        err = "field 'mode' must be \"up\" or \"down\", got \"" + shown(data, static_cast<size_t>(f.length)) + "\"";
        return false;
    }
    // Also accepted as an integer (0 = up, 1 = down) for producers that cannot emit string fields.
    int32_t v = -1;
    if (!readInt(f, v, err))
    {
        err = "field 'mode' must be the string \"up\" or \"down\" (or 0 / 1)";
        return false;
    }
    if (v != 0 && v != 1)
    {
        err = "field 'mode' must be \"up\" or \"down\" (or 0 / 1), got " + std::to_string(v);
        return false;
    }
    out = static_cast<Mode>(v);
    return true;
}

// a*b into `out`, false when it does not fit in int64 (both >= 0).
bool mulFits(int64_t a, int64_t b, int64_t& out)
{
    return !__builtin_mul_overflow(a, b, &out);
}

// The element count of a 4-D extent list whose entries are known (>= 0); false when it does not fit in int64.
bool countFits(int64_t const d[4])
{
    int64_t n = 1;
    for (int i = 0; i < 4; ++i)
    {
        if (!mulFits(n, d[i], n))
        {
            return false;
        }
    }
    return true;
}

} // namespace

char const* modeName(Mode mode)
{
    return mode == Mode::kUp ? "up" : "down";
}

std::string validate(Params const& p)
{
    if (p.kernelSize < 1 || p.kernelSize % 2 == 0 || p.kernelSize > kMaxKernelSize)
    {
        return "kernel_size must be odd and in [1, " + std::to_string(kMaxKernelSize) + "], got "
            + std::to_string(p.kernelSize);
    }
    if (p.group < 1 || p.group > kMaxGroup)
    {
        return "group must be in [1, " + std::to_string(kMaxGroup) + "], got " + std::to_string(p.group);
    }
    if (p.scale < 1 || p.scale > kMaxScale)
    {
        return "scale_factor must be in [1, " + std::to_string(kMaxScale) + "], got " + std::to_string(p.scale);
    }
    if (p.mode != Mode::kUp && p.mode != Mode::kDown)
    {
        return "mode must be up or down";
    }
    return {};
}

std::string parseFields(std::vector<Field> const& fields, FieldSet set, Params& p)
{
    p = Params{};
    char const* const groupName = set == FieldSet::kCarafe ? "group" : "group_size";
    std::vector<std::string> seen;
    std::string err;
    for (Field const& f : fields)
    {
        for (std::string const& name : seen)
        {
            if (name == f.name)
            {
                return "field '" + f.name + "' is given twice";
            }
        }
        seen.push_back(f.name);
        bool ok = true;
        if (f.name == "kernel_size")
        {
            ok = readInt(f, p.kernelSize, err);
        }
        else if (f.name == groupName)
        {
            ok = readInt(f, p.group, err);
        }
        else if (f.name == "scale_factor")
        {
            // MMCVCARAFE stores it as a float (mmcv's symbolic); it must still be a whole number.
            ok = readInt(f, p.scale, err);
        }
        else if (set == FieldSet::kCarafe && f.name == "mode")
        {
            ok = readMode(f, p.mode, err);
        }
        else
        {
            return "unknown field '" + shown(f.name.data(), f.name.size()) + "'"
                + (set == FieldSet::kCarafe ? " (expected kernel_size, group, scale_factor, mode)"
                                            : " (expected kernel_size, group_size, scale_factor)");
        }
        if (!ok)
        {
            return err;
        }
    }
    bool haveKernelSize = false;
    for (std::string const& name : seen)
    {
        haveKernelSize = haveKernelSize || name == "kernel_size";
    }
    if (!haveKernelSize)
    {
        return "the required field 'kernel_size' is missing (it has no default)";
    }
    if (set == FieldSet::kMmcv)
    {
        p.mode = Mode::kUp;
    }
    return validate(p);
}

std::string checkShapes(Params const& p, int64_t const fd[4], int64_t const kd[4])
{
    auto known = [](int64_t v) { return v >= 0; };
    std::ostringstream s;
    for (int t = 0; t < 2; ++t)
    {
        int64_t const* const d = t == 0 ? fd : kd;
        for (int i = 0; i < 4; ++i)
        {
            if (d[i] < -1) // -1 is TensorRT's "unknown until run time"; nothing else below 0 is an extent
            {
                s << (t == 0 ? "features" : "kernels") << " dimension " << i << " is " << d[i]
                  << ": an extent is >= 0, or -1 where it is known only at run time";
                return s.str();
            }
        }
    }
    if (known(fd[1]) && fd[1] % p.group != 0)
    {
        s << "features channels (" << fd[1] << ") must be divisible by group (" << p.group << ")";
        return s.str();
    }
    int64_t const kc = static_cast<int64_t>(p.group) * p.kernelSize * p.kernelSize;
    if (known(kd[1]) && kd[1] != kc)
    {
        s << "kernels must have group*kernel_size^2 = " << p.group << "*" << p.kernelSize << "^2 = " << kc
          << " channels, got " << kd[1];
        return s.str();
    }
    if (known(fd[0]) && known(kd[0]) && fd[0] != kd[0])
    {
        s << "kernels batch (" << kd[0] << ") must equal features batch (" << fd[0] << ")";
        return s.str();
    }
    int64_t out[2] = {-1, -1};
    for (int i = 2; i < 4; ++i)
    {
        char const* const axis = i == 2 ? "height" : "width";
        if (!known(fd[i]))
        {
            continue;
        }
        if (!outputExtentChecked(fd[i], p.scale, p.mode, out[i - 2]))
        {
            s << "features " << axis << " (" << fd[i] << ") is too large: its " << modeName(p.mode)
              << " output extent with scale_factor " << p.scale << " does not fit in int64";
            return s.str();
        }
        if (known(kd[i]) && kd[i] != out[i - 2])
        {
            s << "kernels " << axis << " (" << kd[i] << ") must be the " << modeName(p.mode) << " output extent "
              << out[i - 2] << " of features extent " << fd[i] << " with scale_factor " << p.scale;
            return s.str();
        }
    }
    // Element counts the kernels index with int64 offsets: absurd extents must be refused, not wrapped.
    bool const allKnown = known(fd[0]) && known(fd[1]) && known(fd[2]) && known(fd[3]);
    int64_t const outputDims[4] = {fd[0], fd[1], out[0], out[1]};
    if (allKnown && (!countFits(fd) || !countFits(outputDims)))
    {
        s << "features (" << fd[0] << ", " << fd[1] << ", " << fd[2] << ", " << fd[3]
          << ") or its output has more elements than int64 can count";
        return s.str();
    }
    bool const kernelsKnown = known(kd[0]) && known(kd[1]) && known(kd[2]) && known(kd[3]);
    if (kernelsKnown && !countFits(kd))
    {
        s << "kernels (" << kd[0] << ", " << kd[1] << ", " << kd[2] << ", " << kd[3]
          << ") has more elements than int64 can count";
        return s.str();
    }
    return {};
}

std::string launchGeometry(Params const& p, int64_t const fd[4], int64_t const kd[4], Geometry& g)
{
    for (int i = 0; i < 4; ++i)
    {
        if (fd[i] < 0 || kd[i] < 0)
        {
            std::ostringstream s;
            s << "a launch needs every extent; got features (" << fd[0] << ", " << fd[1] << ", " << fd[2] << ", "
              << fd[3] << ") and kernels (" << kd[0] << ", " << kd[1] << ", " << kd[2] << ", " << kd[3] << ")";
            return s.str();
        }
    }
    std::string err = checkShapes(p, fd, kd);
    if (!err.empty())
    {
        return err;
    }
    g = makeGeometry(fd[0], fd[1], fd[2], fd[3], p.kernelSize, p.group, p.scale, p.mode);
    return {};
}

} // namespace carafe
