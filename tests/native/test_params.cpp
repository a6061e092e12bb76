// Attribute parsing and shape checks shared by the TensorRT plugin's creators and configurePlugin (no TensorRT
// needed): valid CARAFE / MMCVCARAFE fields, every rejection path, and the shape consistency rules.
#include "carafe_params.h"
#include "check.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using carafe::Field;
using carafe::FieldKind;
using carafe::FieldSet;
using carafe::Mode;
using carafe::Params;

namespace
{

Field intField(char const* name, int32_t const& v)
{
    return Field{name, FieldKind::kInt32, &v, 1};
}

bool contains(std::string const& s, char const* part)
{
    return s.find(part) != std::string::npos;
}

void parsesCarafeFields()
{
    int32_t const k = 3, g = 4, s = 4;
    char const down[] = "down"; // with its NUL, as some producers pass it
    Params p;
    std::string err = carafe::parseFields(
        {intField("kernel_size", k), intField("group", g), intField("scale_factor", s), {"mode", FieldKind::kChar, down, 5}},
        FieldSet::kCarafe, p);
    CHECK_MSG(err.empty(), "%s", err.c_str());
    CHECK(p.kernelSize == 3 && p.group == 4 && p.scale == 4 && p.mode == Mode::kDown);

    char const up[] = {'u', 'p'}; // without a NUL
    int32_t const k5 = 5;
    Params q;
    q.group = 7; // parseFields starts from the defaults, not from what `q` held
    err = carafe::parseFields({intField("kernel_size", k5), {"mode", FieldKind::kChar, up, 2}}, FieldSet::kCarafe, q);
    CHECK_MSG(err.empty(), "%s", err.c_str());
    CHECK(q.mode == Mode::kUp && q.kernelSize == 5 && q.group == 1 && q.scale == 2); // defaults for the rest

    int64_t const k64 = 7;
    int32_t const modeInt = 1;
    Params r;
    err = carafe::parseFields({{"kernel_size", FieldKind::kInt64, &k64, 1}, intField("mode", modeInt)}, FieldSet::kCarafe, r);
    CHECK_MSG(err.empty(), "%s", err.c_str());
    CHECK(r.kernelSize == 7 && r.mode == Mode::kDown);
}

// kernel_size has no default; a field given twice is refused (no "last one wins"); strings are compared byte-exactly.
void requiredDuplicateAndExactFields()
{
    int32_t const k3 = 3, k5 = 5, g2 = 2;
    Params p;
    std::string err = carafe::parseFields({intField("group", g2)}, FieldSet::kCarafe, p);
    CHECK_MSG(contains(err, "required field 'kernel_size' is missing"), "%s", err.c_str());
    err = carafe::parseFields({}, FieldSet::kMmcv, p);
    CHECK_MSG(contains(err, "required field 'kernel_size' is missing"), "%s", err.c_str());

    err = carafe::parseFields({intField("kernel_size", k3), intField("kernel_size", k5)}, FieldSet::kCarafe, p);
    CHECK_MSG(contains(err, "'kernel_size' is given twice"), "%s", err.c_str());
    char const upStr[] = "up";
    err = carafe::parseFields({intField("kernel_size", k3), {"mode", FieldKind::kChar, upStr, 2},
                                  {"mode", FieldKind::kChar, "down", 4}}, FieldSet::kCarafe, p);
    CHECK_MSG(contains(err, "'mode' is given twice"), "%s", err.c_str());
    err = carafe::parseFields({intField("kernel_size", k3), intField("group_size", g2), intField("group_size", g2)},
        FieldSet::kMmcv, p);
    CHECK_MSG(contains(err, "'group_size' is given twice"), "%s", err.c_str());

    char const garbage[] = {'u', 'p', '\0', 'g', 'a', 'r', 'b', 'a', 'g', 'e'};
    err = carafe::parseFields({intField("kernel_size", k3), {"mode", FieldKind::kChar, garbage, 10}},
        FieldSet::kCarafe, p);
    CHECK_MSG(contains(err, "mode") && contains(err, "up\\x00garbage"), "%s", err.c_str());
    char const upNul[] = {'u', 'p', '\0'}; // one terminating NUL is how some producers pass it
    err = carafe::parseFields({intField("kernel_size", k3), {"mode", FieldKind::kChar, upNul, 3}}, FieldSet::kCarafe, p);
    CHECK_MSG(err.empty() && p.mode == Mode::kUp, "%s", err.c_str());
    char const upNulNul[] = {'u', 'p', '\0', '\0'};
    err = carafe::parseFields({intField("kernel_size", k3), {"mode", FieldKind::kChar, upNulNul, 4}},
        FieldSet::kCarafe, p);
    CHECK_MSG(contains(err, "mode"), "%s", err.c_str());
    char const upper[] = "UP";
    err = carafe::parseFields({intField("kernel_size", k3), {"mode", FieldKind::kChar, upper, 2}}, FieldSet::kCarafe, p);
    CHECK_MSG(contains(err, "\"UP\""), "%s", err.c_str());
    err = carafe::parseFields({intField("kernel_size", k3), {"mode", FieldKind::kChar, upper, 0}}, FieldSet::kCarafe, p);
    CHECK_MSG(contains(err, "no value"), "%s", err.c_str());
}

void parsesMmcvFields()
{
    int32_t const k = 5, g = 2;
    float const s = 2.0F;
    Params p;
    p.mode = Mode::kDown;
    std::string err = carafe::parseFields(
        {intField("kernel_size", k), intField("group_size", g), {"scale_factor", FieldKind::kFloat32, &s, 1}},
        FieldSet::kMmcv, p);
    CHECK_MSG(err.empty(), "%s", err.c_str());
    CHECK(p.kernelSize == 5 && p.group == 2 && p.scale == 2 && p.mode == Mode::kUp);

    float const frac = 2.5F;
    Params q;
    err = carafe::parseFields({{"scale_factor", FieldKind::kFloat32, &frac, 1}}, FieldSet::kMmcv, q);
    CHECK(contains(err, "scale_factor") && contains(err, "integer"));

    // MMCVCARAFE has no "group" or "mode" field.
    Params r;
    err = carafe::parseFields({intField("group", g)}, FieldSet::kMmcv, r);
    CHECK(contains(err, "unknown field 'group'"));
}

void rejectsBadValues()
{
    struct Bad
    {
        char const* name;
        int32_t value;
        char const* expect;
    };
    Bad const bad[] = {{"kernel_size", 4, "kernel_size must be odd"}, {"kernel_size", 0, "kernel_size"},
        {"kernel_size", -3, "kernel_size"}, {"kernel_size", 65, "kernel_size"}, {"group", 0, "group"},
        {"scale_factor", 0, "scale_factor"}, {"scale_factor", -2, "scale_factor"}, {"mode", 2, "mode"}};
    int32_t const k3 = 3;
    for (Bad const& b : bad)
    {
        Params p;
        std::vector<Field> fields{intField(b.name, b.value)};
        if (std::strcmp(b.name, "kernel_size") != 0)
        {
            fields.insert(fields.begin(), intField("kernel_size", k3));
        }
        std::string const err = carafe::parseFields(fields, FieldSet::kCarafe, p);
        CHECK_MSG(contains(err, b.expect), "%s=%d gave \"%s\"", b.name, b.value, err.c_str());
    }
    char const sideways[] = "sideways";
    Params p;
    std::string err = carafe::parseFields({{"mode", FieldKind::kChar, sideways, 8}}, FieldSet::kCarafe, p);
    CHECK(contains(err, "mode") && contains(err, "sideways"));

    int32_t const two[] = {3, 5};
    err = carafe::parseFields({{"kernel_size", FieldKind::kInt32, two, 2}}, FieldSet::kCarafe, p);
    CHECK(contains(err, "one value"));
    err = carafe::parseFields({{"kernel_size", FieldKind::kInt32, nullptr, 1}}, FieldSet::kCarafe, p);
    CHECK(contains(err, "no value"));
    err = carafe::parseFields({{"kernel_size", FieldKind::kChar, "5", 1}}, FieldSet::kCarafe, p);
    CHECK(contains(err, "numeric"));
    err = carafe::parseFields({{"kernal_size", FieldKind::kInt32, two, 1}}, FieldSet::kCarafe, p);
    CHECK(contains(err, "unknown field 'kernal_size'"));
}

void checksShapes()
{
    Params up; // k=5, G=1, s=2, up
    up.kernelSize = 5;
    int64_t const f[4] = {2, 64, 25, 42};
    int64_t const k[4] = {2, 25, 50, 84};
    CHECK(carafe::checkShapes(up, f, k).empty());

    Params g4 = up;
    g4.group = 4;
    int64_t const f6[4] = {2, 6, 25, 42};
    CHECK(contains(carafe::checkShapes(g4, f6, k), "divisible by group"));
    int64_t const k100[4] = {2, 100, 50, 84};
    CHECK(carafe::checkShapes(g4, f, k100).empty());
    CHECK(contains(carafe::checkShapes(g4, f, k), "channels, got 25"));

    int64_t const kBatch[4] = {1, 25, 50, 84};
    CHECK(contains(carafe::checkShapes(up, f, kBatch), "batch"));
    int64_t const kWide[4] = {2, 25, 50, 85};
    CHECK(contains(carafe::checkShapes(up, f, kWide), "width"));

    Params down = up;
    down.mode = Mode::kDown;
    int64_t const kDown[4] = {2, 25, 13, 21}; // ceil(25/2), ceil(42/2)
    CHECK(carafe::checkShapes(down, f, kDown).empty());
    int64_t const kFloor[4] = {2, 25, 12, 21};
    CHECK(contains(carafe::checkShapes(down, f, kFloor), "height"));

    int64_t const dyn[4] = {-1, 64, -1, -1}; // dynamic extents are not checked
    CHECK(carafe::checkShapes(up, dyn, k).empty());
}

// Absurd extents (a corrupt or hostile network) are refused with a message; under UBSan a signed overflow here fails.
void refusesExtentsThatOverflow()
{
    Params up;
    up.kernelSize = 5;
    up.scale = 64;
    int64_t const big = INT64_MAX / 2;
    int64_t const fHuge[4] = {1, 1, big, 4};
    int64_t const kUnknown[4] = {1, 25, -1, -1};
    std::string err = carafe::checkShapes(up, fHuge, kUnknown);
    CHECK_MSG(contains(err, "height") && contains(err, "int64"), "%s", err.c_str());

    Params down = up;
    down.mode = Mode::kDown;
    int64_t const fMax[4] = {1, 1, INT64_MAX, 1};
    int64_t out = 0;
    CHECK(carafe::outputExtentChecked(INT64_MAX, 64, Mode::kDown, out) && out == INT64_MAX / 64 + 1);
    CHECK(!carafe::outputExtentChecked(INT64_MAX, 2, Mode::kUp, out));
    CHECK(!carafe::outputExtentChecked(-5, 2, Mode::kUp, out));
    int64_t const kMax[4] = {1, 25, INT64_MAX / 64 + 1, 1};
    err = carafe::checkShapes(down, fMax, kMax); // ceil(H/s) of INT64_MAX: (H + s - 1) / s would overflow
    CHECK_MSG(err.empty(), "%s", err.c_str());

    int64_t const fMany[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
    int64_t const kAnyBatch[4] = {-1, 25, -1, -1};
    err = carafe::checkShapes(up, fMany, kAnyBatch);
    CHECK_MSG(contains(err, "more elements than int64"), "%s", err.c_str());
    int64_t const kMany[4] = {1, 25, INT64_MAX / 4, 4};
    int64_t const fOk[4] = {1, 1, -1, -1};
    err = carafe::checkShapes(up, fOk, kMany);
    CHECK_MSG(contains(err, "kernels") && contains(err, "int64"), "%s", err.c_str());
}

// configurePlugin sees -1 for an extent known only at run time; any other negative extent is a broken network.
void refusesNegativeExtents()
{
    Params up;
    up.kernelSize = 5;
    int64_t const fNeg[4] = {1, -7, 5, 5};
    int64_t const k[4] = {1, 25, 10, 10};
    std::string err = carafe::checkShapes(up, fNeg, k);
    CHECK_MSG(contains(err, "features dimension 1 is -7"), "%s", err.c_str());
    int64_t const f[4] = {1, 8, 5, 5};
    int64_t const kNeg[4] = {1, 25, -2, 10};
    err = carafe::checkShapes(up, f, kNeg);
    CHECK_MSG(contains(err, "kernels dimension 2 is -2"), "%s", err.c_str());
    int64_t const fMin[4] = {1, 8, INT64_MIN, 5};
    err = carafe::checkShapes(up, fMin, k);
    CHECK_MSG(contains(err, "features dimension 2"), "%s", err.c_str());
    int64_t const fDyn[4] = {-1, 8, -1, -1};
    CHECK(carafe::checkShapes(up, fDyn, k).empty());
}

// enqueue's geometry: every extent known and checked, so that H = INT64_MAX / 2 (whose up-sampled extent overflows
// int64; UBSan fails this test on a signed overflow) is a message, not index math.
void launchGeometryIsChecked()
{
    Params up;
    up.kernelSize = 5;
    carafe::Geometry g{};
    g.n = -42;
    int64_t const big = INT64_MAX / 2;
    int64_t const fHuge[4] = {1, 8, big, 4};
    int64_t const kHuge[4] = {1, 25, 2 * big, 8}; // consistent, but 8 * H * 4 elements do not fit in int64
    std::string err = carafe::launchGeometry(up, fHuge, kHuge, g);
    CHECK_MSG(contains(err, "more elements than int64"), "%s", err.c_str());
    int64_t const fOver[4] = {1, 8, big + 1, 4}; // 2 * H itself overflows
    err = carafe::launchGeometry(up, fOver, kHuge, g);
    CHECK_MSG(contains(err, "too large") && contains(err, "int64"), "%s", err.c_str());
    CHECK(g.n == -42); // untouched on failure

    int64_t const f[4] = {2, 8, 5, 7};
    int64_t const kUnknown[4] = {2, 25, -1, 14};
    err = carafe::launchGeometry(up, f, kUnknown, g);
    CHECK_MSG(contains(err, "needs every extent"), "%s", err.c_str());
    int64_t const kShort[4] = {2, 25, 10, 13};
    CHECK(contains(carafe::launchGeometry(up, f, kShort, g), "width"));

    int64_t const k[4] = {2, 25, 10, 14};
    err = carafe::launchGeometry(up, f, k, g);
    CHECK_MSG(err.empty(), "%s", err.c_str());
    CHECK(g.n == 2 && g.c == 8 && g.h == 5 && g.w == 7 && g.ho == 10 && g.wo == 14 && g.k == 5 && g.group == 1
        && g.scale == 2 && g.mode == Mode::kUp);

    Params down = up;
    down.mode = Mode::kDown;
    down.scale = 3;
    int64_t const kDown[4] = {2, 25, 2, 3}; // ceil(5/3), ceil(7/3)
    err = carafe::launchGeometry(down, f, kDown, g);
    CHECK_MSG(err.empty() && g.ho == 2 && g.wo == 3, "%s", err.c_str());
}

} // namespace

int main()
{
    parsesCarafeFields();
    parsesMmcvFields();
    rejectsBadValues();
    requiredDuplicateAndExactFields();
    checksShapes();
    refusesExtentsThatOverflow();
    refusesNegativeExtents();
    launchGeometryIsChecked();
    return TEST_RESULT();
}
