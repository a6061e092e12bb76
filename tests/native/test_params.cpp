// Attribute parsing and shape checks shared by the TensorRT plugin's creators and configurePlugin (no TensorRT
// needed): valid CARAFE / MMCVCARAFE fields, every rejection path, and the shape consistency rules.
#include "carafe_params.h"
#include "check.h"

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
    Params q;
    err = carafe::parseFields({{"mode", FieldKind::kChar, up, 2}}, FieldSet::kCarafe, q);
    CHECK_MSG(err.empty(), "%s", err.c_str());
    CHECK(q.mode == Mode::kUp && q.kernelSize == 5 && q.group == 1 && q.scale == 2); // defaults kept

    int64_t const k64 = 7;
    int32_t const modeInt = 1;
    Params r;
    err = carafe::parseFields({{"kernel_size", FieldKind::kInt64, &k64, 1}, intField("mode", modeInt)}, FieldSet::kCarafe, r);
    CHECK_MSG(err.empty(), "%s", err.c_str());
    CHECK(r.kernelSize == 7 && r.mode == Mode::kDown);
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
    for (Bad const& b : bad)
    {
        Params p;
        std::string const err = carafe::parseFields({intField(b.name, b.value)}, FieldSet::kCarafe, p);
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

} // namespace

int main()
{
    parsesCarafeFields();
    parsesMmcvFields();
    rejectsBadValues();
    checksShapes();
    return TEST_RESULT();
}
