// Drives libcarafe_trt_plugin.so through its C++ API the way TensorRT does, with TensorRT headers only (no libnvinfer):
//   --host  creators and field validation, output shapes through a small test IExprBuilder, format combinations,
//           configurePlugin/onShapeChange checks, clone, getFieldsToSerialize -> createPlugin round trip;
//   --gpu   enqueue on real device buffers (outputs poisoned) against the float64 host reference for float32,
//           float16, bfloat16 and both modes, then serialize -> recreate -> enqueue gives the same bytes.
//           Exits 77 (CTest "skipped") when no GPU is present.
#include "NvInferRuntime.h"
#include "carafePlugin.h"
#include "carafe_reference.h"
#include "check.h"
#include "device_values.h"
#include "trt_test_support.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

using namespace carafe_trt_test;

struct Attrs
{
    int32_t k{5};
    int32_t group{1};
    int32_t scale{2};
    std::string mode{"up"};
};

std::unique_ptr<IPluginV3> makeCarafe(Attrs const& a, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    std::vector<PluginField> f{{"kernel_size", &a.k, PluginFieldType::kINT32, 1},
        {"group", &a.group, PluginFieldType::kINT32, 1}, {"scale_factor", &a.scale, PluginFieldType::kINT32, 1},
        {"mode", a.mode.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(a.mode.size())}};
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};
    return std::unique_ptr<IPluginV3>(creator("CARAFE")->createPlugin("layer", &fc, phase));
}

Dims dims4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    Dims x{};
    x.nbDims = 4;
    x.d[0] = a;
    x.d[1] = b;
    x.d[2] = c;
    x.d[3] = d;
    return x;
}

std::vector<int64_t> outputShape(IPluginV3* p, Dims const& f, Dims const& k, TestExprBuilder& eb)
{
    DimsExprs in[2];
    for (int i = 0; i < 2; ++i)
    {
        Dims const& src = i == 0 ? f : k;
        in[i].nbDims = src.nbDims;
        for (int j = 0; j < src.nbDims; ++j)
        {
            in[i].d[j] = eb.constant(src.d[j]);
        }
    }
    DimsExprs out[1];
    if (build(p)->getOutputShapes(in, 2, nullptr, 0, out, 1, eb) != 0)
    {
        return {};
    }
    std::vector<int64_t> shape;
    for (int j = 0; j < out[0].nbDims; ++j)
    {
        shape.push_back(out[0].d[j]->getConstantValue());
    }
    return shape;
}

// The attributes a plugin holds, read through its public interface (getFieldsToSerialize), as TensorRT reads them.
// Not a downcast to CarafePlugin: its typeinfo is hidden in the library, which -fsanitize=vptr cannot link against.
Attrs paramsOf(IPluginV3* p)
{
    Attrs a{-1, -1, -1, "?"};
    PluginFieldCollection const* fc = runtime(p)->getFieldsToSerialize();
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        std::string const name = f.name;
        if (f.type == PluginFieldType::kINT32 && (name == "kernel_size" || name == "group" || name == "group_size"
                                                   || name == "scale_factor"))
        {
            int32_t const v = *static_cast<int32_t const*>(f.data);
            (name == "kernel_size" ? a.k : name == "scale_factor" ? a.scale : a.group) = v;
        }
        else if (f.type == PluginFieldType::kFLOAT32 && name == "scale_factor")
        {
            a.scale = static_cast<int32_t>(*static_cast<float const*>(f.data));
        }
        else if (f.type == PluginFieldType::kCHAR && name == "mode")
        {
            a.mode.assign(static_cast<char const*>(f.data), static_cast<size_t>(f.length));
        }
    }
    if (std::strcmp(core(p)->getPluginName(), "MMCVCARAFE") == 0)
    {
        a.mode = "up"; // MMCVCARAFE has no mode field: it only up-samples
    }
    return a;
}

bool sameAttrs(Attrs const& a, Attrs const& b)
{
    return a.k == b.k && a.group == b.group && a.scale == b.scale && a.mode == b.mode;
}

// ---- host checks -----------------------------------------------------------------------------------------------
void hostChecks()
{
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    CHECK(n == 4); // CARAFE, MMCVCARAFE, MultiLevelRoIAlign, BatchedNMS
    for (char const* name : {"CARAFE", "MMCVCARAFE"})
    {
        IPluginCreatorV3One* c = creator(name);
        CHECK_MSG(c != nullptr, "%s", name);
        if (c == nullptr)
            return;
        CHECK(std::strcmp(c->getPluginVersion(), "1") == 0);
        CHECK(std::strcmp(c->getPluginNamespace(), "") == 0);
        CHECK(std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    }
    (void) creators;
    PluginFieldCollection const* names = creator("MMCVCARAFE")->getFieldNames();
    CHECK(names->nbFields == 3 && std::strcmp(names->fields[1].name, "group_size") == 0
        && names->fields[2].type == PluginFieldType::kFLOAT32);

    // Valid plugin, its interfaces and output types.
    Attrs up;
    auto p = makeCarafe(up);
    CHECK(p != nullptr);
    CHECK(std::strcmp(core(p.get())->getPluginName(), "CARAFE") == 0);
    CHECK(std::strcmp(core(p.get())->getPluginVersion(), "1") == 0);
    CHECK(build(p.get())->getNbOutputs() == 1);
    DataType inTypes[2] = {DataType::kHALF, DataType::kHALF};
    DataType outType = DataType::kFLOAT;
    CHECK(build(p.get())->getOutputDataTypes(&outType, 1, inTypes, 2) == 0 && outType == DataType::kHALF);

    // Field validation: a logged error naming the field and nullptr, never a crash.
    struct BadCase
    {
        Attrs a;
        char const* mention;
    };
    BadCase const bad[] = {{{4, 1, 2, "up"}, "kernel_size"}, {{0, 1, 2, "up"}, "kernel_size"},
        {{5, 0, 2, "up"}, "group"}, {{5, 1, 0, "up"}, "scale_factor"}, {{5, 1, 2, "sideways"}, "mode"}};
    for (BadCase const& b : bad)
    {
        size_t const before = gFinder.logger.errors.size();
        CHECK_MSG(makeCarafe(b.a) == nullptr, "%s accepted", b.mention);
        CHECK_MSG(gFinder.logger.errors.size() == before + 1 && lastErrorMentions(b.mention), "no error naming %s",
            b.mention);
    }
    float const frac = 1.5F;
    PluginField mf{"scale_factor", &frac, PluginFieldType::kFLOAT32, 1};
    PluginFieldCollection mfc{1, &mf};
    CHECK(creator("MMCVCARAFE")->createPlugin("m", &mfc, TensorRTPhase::kBUILD) == nullptr);
    CHECK(lastErrorMentions("scale_factor"));
    CHECK(creator("CARAFE")->createPlugin("m", nullptr, TensorRTPhase::kBUILD) == nullptr);
    int32_t const k5 = 5;
    PluginField typo{"kernal_size", &k5, PluginFieldType::kINT32, 1};
    PluginFieldCollection tfc{1, &typo};
    CHECK(creator("CARAFE")->createPlugin("m", &tfc, TensorRTPhase::kBUILD) == nullptr);
    CHECK(lastErrorMentions("kernal_size"));

    // kernel_size is required (no default), a field given twice is refused, strings are compared byte-exactly.
    for (char const* name : {"CARAFE", "MMCVCARAFE"})
    {
        int32_t const g1 = 1;
        PluginField noK{std::strcmp(name, "CARAFE") == 0 ? "group" : "group_size", &g1, PluginFieldType::kINT32, 1};
        PluginFieldCollection noKfc{1, &noK};
        CHECK_MSG(creator(name)->createPlugin("m", &noKfc, TensorRTPhase::kBUILD) == nullptr, "%s without kernel_size", name);
        CHECK(lastErrorMentions("required field 'kernel_size' is missing"));
        PluginFieldCollection empty{0, nullptr};
        CHECK(creator(name)->createPlugin("m", &empty, TensorRTPhase::kBUILD) == nullptr);
        CHECK(lastErrorMentions("kernel_size"));
    }
    {
        int32_t const k3 = 3, k7 = 7;
        PluginField twice[2] = {{"kernel_size", &k3, PluginFieldType::kINT32, 1},
            {"kernel_size", &k7, PluginFieldType::kINT32, 1}};
        PluginFieldCollection twiceFc{2, twice};
        CHECK(creator("CARAFE")->createPlugin("m", &twiceFc, TensorRTPhase::kBUILD) == nullptr);
        CHECK(lastErrorMentions("'kernel_size' is given twice"));

        char const garbage[] = {'u', 'p', '\0', 'g', 'a', 'r', 'b', 'a', 'g', 'e'};
        PluginField modeGarbage[2] = {{"kernel_size", &k3, PluginFieldType::kINT32, 1},
            {"mode", garbage, PluginFieldType::kCHAR, 10}};
        PluginFieldCollection garbageFc{2, modeGarbage};
        CHECK(creator("CARAFE")->createPlugin("m", &garbageFc, TensorRTPhase::kBUILD) == nullptr);
        CHECK(lastErrorMentions("up\\x00garbage"));

        char const upNul[] = "up"; // with its terminating NUL: length 3
        PluginField modeUp[2] = {{"kernel_size", &k3, PluginFieldType::kINT32, 1},
            {"mode", upNul, PluginFieldType::kCHAR, 3}};
        PluginFieldCollection upFc{2, modeUp};
        std::unique_ptr<IPluginV3> ok(creator("CARAFE")->createPlugin("m", &upFc, TensorRTPhase::kBUILD));
        CHECK(ok != nullptr && sameAttrs(paramsOf(ok.get()), Attrs{3, 1, 2, "up"}));
    }

    // Output shapes through IExprBuilder: s*H for up, ceil(H/s) for down.
    {
        TestExprBuilder eb;
        auto s = outputShape(p.get(), dims4(2, 64, 25, 42), dims4(2, 25, 50, 84), eb);
        CHECK((s == std::vector<int64_t>{2, 64, 50, 84}));
        CHECK(!eb.impl.ops.empty() && eb.impl.ops.back() == DimensionOperation::kPROD);
    }
    {
        auto d = makeCarafe({5, 1, 2, "down"});
        TestExprBuilder eb;
        auto s = outputShape(d.get(), dims4(1, 64, 25, 43), dims4(1, 25, 13, 22), eb);
        CHECK((s == std::vector<int64_t>{1, 64, 13, 22}));
        CHECK(!eb.impl.ops.empty() && eb.impl.ops.back() == DimensionOperation::kCEIL_DIV);
        auto d4 = makeCarafe({3, 1, 4, "down"});
        s = outputShape(d4.get(), dims4(1, 8, 7, 9), dims4(1, 9, 2, 3), eb);
        CHECK((s == std::vector<int64_t>{1, 8, 2, 3}));
        TestExprBuilder eb3;
        Dims three{};
        three.nbDims = 3;
        CHECK(outputShape(d.get(), three, dims4(1, 25, 13, 22), eb3).empty());
        CHECK(lastErrorMentions("4-D"));
    }

    // Format combinations: fp32/fp16/bf16 linear, every tensor the same type.
    {
        Dims const f = dims4(1, 8, 4, 4);
        auto combo = [&](DataType a, DataType b, DataType c, int32_t pos, TensorFormat fmt = TensorFormat::kLINEAR) {
            DynamicPluginTensorDesc io[3] = {dynDesc(f, a), dynDesc(f, b), dynDesc(f, c)};
            io[std::min(pos, int32_t{2})].desc.format = fmt; // pos 3 is out of range: the plugin must refuse it
            return build(p.get())->supportsFormatCombination(pos, io, 2, 1);
        };
        for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
            for (int32_t pos = 0; pos < 3; ++pos)
                CHECK(combo(t, t, t, pos));
        CHECK(!combo(DataType::kINT8, DataType::kINT8, DataType::kINT8, 0));
        CHECK(!combo(DataType::kFLOAT, DataType::kHALF, DataType::kHALF, 1));
        CHECK(!combo(DataType::kHALF, DataType::kHALF, DataType::kFLOAT, 2));
        CHECK(!combo(DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, 0, TensorFormat::kCHW32));
        CHECK(!combo(DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, 3));
    }

    // configurePlugin / onShapeChange: channel, group and kernel-channel consistency.
    {
        auto g4 = makeCarafe({5, 4, 2, "up"});
        auto cfg = [&](Dims f, Dims k, Dims o, DataType t = DataType::kFLOAT) {
            DynamicPluginTensorDesc in[2] = {dynDesc(f, t), dynDesc(k, t)};
            DynamicPluginTensorDesc out[1] = {dynDesc(o, t)};
            return build(g4.get())->configurePlugin(in, 2, out, 1);
        };
        CHECK(cfg(dims4(2, 64, 25, 42), dims4(2, 100, 50, 84), dims4(2, 64, 50, 84)) == 0);
        CHECK(cfg(dims4(-1, 64, -1, -1), dims4(-1, 100, -1, -1), dims4(-1, 64, -1, -1)) == 0);
        CHECK(cfg(dims4(2, 62, 25, 42), dims4(2, 100, 50, 84), dims4(2, 62, 50, 84)) == -1);
        CHECK(lastErrorMentions("divisible by group"));
        CHECK(cfg(dims4(2, 64, 25, 42), dims4(2, 25, 50, 84), dims4(2, 64, 50, 84)) == -1);
        CHECK(lastErrorMentions("channels, got 25"));
        CHECK(cfg(dims4(2, 64, 25, 42), dims4(2, 100, 50, 82), dims4(2, 64, 50, 84)) == -1);
        CHECK(lastErrorMentions("width"));
        CHECK(cfg(dims4(2, 64, 25, 42), dims4(2, 100, 50, 84), dims4(2, 64, 50, 84), DataType::kINT32) == -1);

        PluginTensorDesc rin[2] = {dynDesc(dims4(1, 8, 3, 3), DataType::kHALF).desc,
            dynDesc(dims4(1, 100, 6, 6), DataType::kHALF).desc};
        PluginTensorDesc rout[1] = {dynDesc(dims4(1, 8, 6, 6), DataType::kHALF).desc};
        CHECK(runtime(g4.get())->onShapeChange(rin, 2, rout, 1) == 0);
        rin[1].dims.d[1] = 99;
        CHECK(runtime(g4.get())->onShapeChange(rin, 2, rout, 1) == -1);
        rin[1].dims.d[1] = 100;
        rout[0].dims.d[3] = 7;
        CHECK(runtime(g4.get())->onShapeChange(rin, 2, rout, 1) == -1);

        // Absurd extents are refused with a message, never a signed overflow (UBSan builds abort on one).
        int64_t const huge = INT64_MAX / 2 + 1; // 2 * huge overflows
        CHECK(cfg(dims4(1, 64, huge, 4), dims4(1, 100, -1, -1), dims4(1, 64, -1, -1)) == -1);
        CHECK(lastErrorMentions("too large") && lastErrorMentions("int64"));
        CHECK(cfg(dims4(1 << 20, 1 << 20, 1 << 20, 1 << 20), dims4(-1, 100, -1, -1), dims4(-1, 64, -1, -1)) == -1);
        CHECK(lastErrorMentions("more elements than int64"));
        // A rank above Dims::MAX_DIMS is reported without reading past Dims::d.
        Dims nine{};
        nine.nbDims = 9;
        CHECK(cfg(nine, dims4(1, 100, 2, 2), dims4(1, 64, 2, 2)) == -1);
        CHECK(lastErrorMentions("invalid rank 9"));
        Dims negative{};
        negative.nbDims = -1;
        CHECK(cfg(dims4(1, 64, 1, 1), negative, dims4(1, 64, 2, 2)) == -1);
        CHECK(lastErrorMentions("invalid rank -1"));
        // -1 is "known at run time"; -7 is no extent at all
        CHECK(cfg(dims4(1, 64, -7, 4), dims4(1, 100, -1, -1), dims4(1, 64, -1, -1)) == -1);
        CHECK(lastErrorMentions("features dimension 2 is -7"));
        CHECK(cfg(dims4(1, 64, 4, 4), dims4(1, 100, 8, -3), dims4(1, 64, 8, 8)) == -1);
        CHECK(lastErrorMentions("kernels dimension 3 is -3"));

        // enqueue checks the dims it runs with before any index math (no launch happens: it fails first, so this
        // runs without a GPU): H = INT64_MAX / 2, whose element counts overflow int64, and H + 1, whose s*H does.
        int64_t const half = INT64_MAX / 2;
        PluginTensorDesc ein[2] = {dynDesc(dims4(1, 64, half, 4), DataType::kFLOAT).desc,
            dynDesc(dims4(1, 100, 2 * half, 8), DataType::kFLOAT).desc};
        PluginTensorDesc eout[1] = {dynDesc(dims4(1, 64, 2 * half, 8), DataType::kFLOAT).desc};
        float dummy = 0.0F;
        void const* eins[2] = {&dummy, &dummy};
        void* eouts[1] = {&dummy};
        CHECK(runtime(g4.get())->enqueue(ein, eout, eins, eouts, nullptr, nullptr) == -1);
        CHECK(lastErrorMentions("enqueue") && lastErrorMentions("more elements than int64"));
        ein[0].dims.d[2] = half + 1;
        CHECK(runtime(g4.get())->enqueue(ein, eout, eins, eouts, nullptr, nullptr) == -1);
        CHECK(lastErrorMentions("enqueue") && lastErrorMentions("too large"));
        ein[1].dims.d[2] = 7; // kernels that do not match the features: refused at run time too
        ein[0].dims.d[2] = 3;
        CHECK(runtime(g4.get())->enqueue(ein, eout, eins, eouts, nullptr, nullptr) == -1);
        CHECK(lastErrorMentions("height"));
    }

    // clone and serialization round trips, both node types.
    {
        Attrs const a{7, 2, 3, "down"};
        auto d = makeCarafe(a);
        std::unique_ptr<IPluginV3> c(d->clone());
        CHECK(c != nullptr && sameAttrs(paramsOf(c.get()), a));
        auto r = roundTrip(d.get());
        CHECK(r != nullptr && sameAttrs(paramsOf(r.get()), a));
        std::unique_ptr<IPluginV3> attached(runtime(d.get())->attachToContext(nullptr));
        CHECK(attached != nullptr && sameAttrs(paramsOf(attached.get()), a));

        int32_t const k = 3, g = 2;
        float const s = 4.0F;
        PluginField f[3] = {{"kernel_size", &k, PluginFieldType::kINT32, 1},
            {"group_size", &g, PluginFieldType::kINT32, 1}, {"scale_factor", &s, PluginFieldType::kFLOAT32, 1}};
        PluginFieldCollection fc{3, f};
        std::unique_ptr<IPluginV3> m(creator("MMCVCARAFE")->createPlugin("m", &fc, TensorRTPhase::kBUILD));
        CHECK(m != nullptr && std::strcmp(core(m.get())->getPluginName(), "MMCVCARAFE") == 0);
        CHECK(m != nullptr && sameAttrs(paramsOf(m.get()), Attrs{3, 2, 4, "up"}));
        auto mr = roundTrip(m.get());
        CHECK(mr != nullptr && std::strcmp(core(mr.get())->getPluginName(), "MMCVCARAFE") == 0);
        CHECK(mr != nullptr && sameAttrs(paramsOf(mr.get()), Attrs{3, 2, 4, "up"}));
    }
}

// ---- GPU checks ------------------------------------------------------------------------------------------------

using carafe_test::fromDouble;
using carafe_test::toDouble;

template <typename T>
void gpuCase(Attrs const& a, int n, int c, int h, int w, DataType type, double tol, std::mt19937& rng,
    cudaStream_t stream)
{
    carafe::Mode const mode = a.mode == "up" ? carafe::Mode::kUp : carafe::Mode::kDown;
    carafe::Geometry const g = carafe::makeGeometry(n, c, h, w, a.k, a.group, a.scale, mode);
    auto plugin = makeCarafe(a);
    CHECK(plugin != nullptr);
    if (!plugin)
        return;
    Dims const fd = dims4(n, c, h, w);
    Dims const kd = dims4(n, carafe::kernelChannels(g), g.ho, g.wo);
    TestExprBuilder eb;
    std::vector<int64_t> const os = outputShape(plugin.get(), fd, kd, eb);
    CHECK((os == std::vector<int64_t>{n, c, g.ho, g.wo}));
    Dims const od = dims4(n, c, g.ho, g.wo);
    DynamicPluginTensorDesc din[2] = {dynDesc(fd, type), dynDesc(kd, type)};
    DynamicPluginTensorDesc doutDesc[1] = {dynDesc(od, type)};
    CHECK(build(plugin.get())->configurePlugin(din, 2, doutDesc, 1) == 0);
    PluginTensorDesc rin[2] = {din[0].desc, din[1].desc};
    PluginTensorDesc rout[1] = {doutDesc[0].desc};
    CHECK(runtime(plugin.get())->onShapeChange(rin, 2, rout, 1) == 0);

    size_t const nx = static_cast<size_t>(carafe::featureCount(g));
    size_t const nk = static_cast<size_t>(carafe::kernelCount(g));
    size_t const no = static_cast<size_t>(carafe::outputCount(g));
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<T> x(nx), k(nk), out(no), out2(no);
    std::vector<double> xd(nx), kdv(nk), want(no);
    for (size_t i = 0; i < nx; ++i)
        xd[i] = toDouble(x[i] = fromDouble<T>(dist(rng)));
    for (size_t i = 0; i < nk; ++i)
        kdv[i] = toDouble(k[i] = fromDouble<T>(dist(rng) / (a.k * a.k)));
    carafe::reference::forward(g, xd.data(), kdv.data(), want.data());

    T *dx = nullptr, *dk = nullptr, *dout = nullptr;
    CUDA_OK(cudaMalloc(&dx, nx * sizeof(T)));
    CUDA_OK(cudaMalloc(&dk, nk * sizeof(T)));
    CUDA_OK(cudaMalloc(&dout, no * sizeof(T)));
    CUDA_OK(cudaMemcpy(dx, x.data(), nx * sizeof(T), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dk, k.data(), nk * sizeof(T), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(dout, 0xFF, no * sizeof(T))); // NaN poison
    void const* ins[2] = {dx, dk};
    void* outs[1] = {dout};
    CHECK(runtime(plugin.get())->enqueue(rin, rout, ins, outs, nullptr, stream) == 0);
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(out.data(), dout, no * sizeof(T), cudaMemcpyDeviceToHost));
    double worst = 0;
    for (size_t i = 0; i < no; ++i)
    {
        double const v = toDouble(out[i]);
        worst = std::fmax(worst, std::isfinite(v) ? std::fabs(v - want[i]) / (tol + tol * std::fabs(want[i])) : INFINITY);
    }
    std::printf("plugin %-4s k=%d G=%d s=%d %-4s (%d,%d,%d,%d) type=%d worst=%.3f\n", a.mode.c_str(), a.k, a.group,
        a.scale, "", n, c, h, w, static_cast<int>(type), worst);
    CHECK_MSG(worst <= 1.0, "plugin enqueue vs reference k=%d s=%d %s", a.k, a.scale, a.mode.c_str());

    auto restored = roundTrip(plugin.get());
    CHECK(restored != nullptr);
    if (restored)
    {
        CHECK(runtime(restored.get())->onShapeChange(rin, 2, rout, 1) == 0);
        CUDA_OK(cudaMemset(dout, 0xFF, no * sizeof(T)));
        CHECK(runtime(restored.get())->enqueue(rin, rout, ins, outs, nullptr, stream) == 0);
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaMemcpy(out2.data(), dout, no * sizeof(T), cudaMemcpyDeviceToHost));
        CHECK(std::memcmp(out.data(), out2.data(), no * sizeof(T)) == 0);
    }
    CUDA_OK(cudaFree(dx));
    CUDA_OK(cudaFree(dk));
    CUDA_OK(cudaFree(dout));
}

int gpuChecks()
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    {
        std::printf("no CUDA device: GPU checks skipped\n");
        return 77;
    }
    cudaStream_t stream = nullptr;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    std::mt19937 rng(7);
    Attrs const attrs[] = {{5, 1, 2, "up"}, {3, 4, 2, "up"}, {5, 1, 2, "down"}, {7, 2, 4, "down"}, {1, 1, 3, "up"}};
    for (Attrs const& a : attrs)
    {
        gpuCase<float>(a, 2, 16, 13, 21, DataType::kFLOAT, 1e-5, rng, stream);
        gpuCase<__half>(a, 2, 16, 13, 21, DataType::kHALF, 2e-3, rng, stream);
        gpuCase<__nv_bfloat16>(a, 1, 8, 9, 7, DataType::kBF16, 1.6e-2, rng, stream);
    }
    CUDA_OK(cudaStreamDestroy(stream));
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    setLoggerFinder(&gFinder);
    bool const gpu = argc > 1 && std::strcmp(argv[1], "--gpu") == 0;
    if (gpu)
    {
        int const rc = gpuChecks();
        if (rc == 77)
            return rc;
    }
    else
    {
        hostChecks();
    }
    return TEST_RESULT();
}
