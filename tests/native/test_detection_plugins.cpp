// Drives the detection plugins of libcarafe_trt_plugin.so (MultiLevelRoIAlign, BatchedNMS) through TensorRT's plugin
// interfaces, with TensorRT headers only (no libnvinfer):
//   --host  creators and their field lists, field errors through the logger (createPlugin returns nullptr), output
//           types and shapes (test IExprBuilder), format combinations, configurePlugin / onShapeChange checks, the
//           workspace size, clone, getFieldsToSerialize -> createPlugin round trip;
//   --gpu   enqueue on device buffers gives the bytes the kernels' launchers give (the launchers are checked against
//           the references by test_detection_kernels), for a plugin and for its serialized-and-recreated copy.
//           Exits 77 (CTest "skipped") when no GPU is present.
#include "batchedNMSKernels.h"
#include "check.h"
#include "device_values.h"
#include "roiAlignKernels.h"
#include "trt_test_support.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <random>

using namespace nvinfer1;
using namespace carafe_trt_test;

namespace
{

Dims dims(std::initializer_list<int64_t> extents)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(extents.size());
    int i = 0;
    for (int64_t e : extents)
        d.d[i++] = e;
    return d;
}

struct RoiAttrs
{
    int32_t oh{7}, ow{7}, sr{0};
    std::vector<float> strides{4, 8, 16, 32};
    float finest{56};
    std::string mode{"half_pixel"};
};

std::unique_ptr<IPluginV3> makeRoiAlign(RoiAttrs const& a)
{
    std::vector<PluginField> f{{"output_height", &a.oh, PluginFieldType::kINT32, 1},
        {"output_width", &a.ow, PluginFieldType::kINT32, 1}, {"sampling_ratio", &a.sr, PluginFieldType::kINT32, 1},
        {"featmap_strides", a.strides.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(a.strides.size())},
        {"finest_scale", &a.finest, PluginFieldType::kFLOAT32, 1},
        {"coordinate_transformation_mode", a.mode.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(a.mode.size())}};
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};
    return std::unique_ptr<IPluginV3>(creator("MultiLevelRoIAlign")->createPlugin("roi", &fc, TensorRTPhase::kBUILD));
}

struct NmsAttrs
{
    float score{0.05F}, iou{0.5F};
    int32_t perClass{-1}, perImage{100};
};

std::unique_ptr<IPluginV3> makeNms(NmsAttrs const& a)
{
    std::vector<PluginField> f{{"score_threshold", &a.score, PluginFieldType::kFLOAT32, 1},
        {"iou_threshold", &a.iou, PluginFieldType::kFLOAT32, 1},
        {"max_per_class", &a.perClass, PluginFieldType::kINT32, 1},
        {"max_per_image", &a.perImage, PluginFieldType::kINT32, 1}};
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};
    return std::unique_ptr<IPluginV3>(creator("BatchedNMS")->createPlugin("nms", &fc, TensorRTPhase::kBUILD));
}

std::vector<std::vector<int64_t>> outputShapes(IPluginV3* p, std::vector<Dims> const& inputs, int32_t nbOutputs)
{
    TestExprBuilder eb;
    std::vector<DimsExprs> in(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
    {
        in[i].nbDims = inputs[i].nbDims;
        for (int j = 0; j < inputs[i].nbDims; ++j)
            in[i].d[j] = eb.constant(inputs[i].d[j]);
    }
    std::vector<DimsExprs> out(static_cast<size_t>(nbOutputs));
    if (build(p)->getOutputShapes(in.data(), static_cast<int32_t>(in.size()), nullptr, 0, out.data(), nbOutputs, eb) != 0)
        return {};
    std::vector<std::vector<int64_t>> shapes;
    for (DimsExprs const& o : out)
    {
        shapes.emplace_back();
        for (int j = 0; j < o.nbDims; ++j)
            shapes.back().push_back(o.d[j]->getConstantValue());
    }
    return shapes;
}

bool sameFields(IPluginV3* a, IPluginV3* b)
{
    PluginFieldCollection const* fa = runtime(a)->getFieldsToSerialize();
    std::vector<std::string> flat;
    for (int32_t i = 0; i < fa->nbFields; ++i)
    {
        PluginField const& f = fa->fields[i];
        size_t const bytes = f.type == PluginFieldType::kCHAR ? 1 : 4;
        flat.emplace_back(f.name + std::string("=") + std::string(static_cast<char const*>(f.data), bytes * f.length));
    }
    PluginFieldCollection const* fb = runtime(b)->getFieldsToSerialize();
    bool same = fb->nbFields == fa->nbFields;
    for (int32_t i = 0; same && i < fb->nbFields; ++i)
    {
        PluginField const& f = fb->fields[i];
        size_t const bytes = f.type == PluginFieldType::kCHAR ? 1 : 4;
        same = flat[i] == f.name + std::string("=") + std::string(static_cast<char const*>(f.data), bytes * f.length);
    }
    return same;
}

void roiAlignHost()
{
    IPluginCreatorV3One* c = creator("MultiLevelRoIAlign");
    CHECK(c != nullptr);
    if (c == nullptr)
        return;
    CHECK(std::strcmp(c->getPluginVersion(), "1") == 0 && std::strcmp(c->getPluginNamespace(), "") == 0);
    PluginFieldCollection const* names = c->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 6);

    auto p = makeRoiAlign(RoiAttrs{});
    CHECK(p != nullptr);
    if (!p)
        return;
    CHECK(std::strcmp(core(p.get())->getPluginName(), "MultiLevelRoIAlign") == 0);
    std::vector<Dims> const in = {dims({1000, 4}), dims({1000}), dims({2, 256, 200, 304}), dims({2, 256, 100, 152}),
        dims({2, 256, 50, 76}), dims({2, 256, 25, 38})};
    auto shapes = outputShapes(p.get(), in, 1);
    CHECK(shapes.size() == 1 && shapes[0] == (std::vector<int64_t>{1000, 256, 7, 7}));
    DataType types[6] = {DataType::kHALF, DataType::kINT64, DataType::kHALF, DataType::kHALF, DataType::kHALF,
        DataType::kHALF};
    DataType outType = DataType::kFLOAT;
    CHECK(build(p.get())->getOutputDataTypes(&outType, 1, types, 6) == 0 && outType == DataType::kHALF);

    // formats: rois float/half, indices int32/int64, features and output the rois' type
    std::vector<DynamicPluginTensorDesc> io;
    for (Dims const& d : in)
        io.push_back(dynDesc(d, DataType::kFLOAT));
    io[1].desc.type = DataType::kINT64;
    io.push_back(dynDesc(dims({1000, 256, 7, 7}), DataType::kFLOAT));
    CHECK(build(p.get())->supportsFormatCombination(0, io.data(), 6, 1));
    CHECK(build(p.get())->supportsFormatCombination(1, io.data(), 6, 1));
    CHECK(build(p.get())->supportsFormatCombination(6, io.data(), 6, 1));
    io[1].desc.type = DataType::kFLOAT;
    CHECK(!build(p.get())->supportsFormatCombination(1, io.data(), 6, 1));
    io[1].desc.type = DataType::kINT32;
    io[3].desc.type = DataType::kHALF;
    CHECK(!build(p.get())->supportsFormatCombination(3, io.data(), 6, 1));
    io[3].desc.type = DataType::kFLOAT;
    io[0].desc.type = DataType::kBF16;
    CHECK(!build(p.get())->supportsFormatCombination(0, io.data(), 6, 1));
    io[0].desc.type = DataType::kFLOAT;

    // configure: good, then channels that differ between levels, a missing level, a wrong output
    CHECK(build(p.get())->configurePlugin(io.data(), 6, &io[6], 1) == 0);
    io[4].desc.dims = dims({2, 128, 50, 76});
    CHECK(build(p.get())->configurePlugin(io.data(), 6, &io[6], 1) != 0 && lastErrorMentions("the same channels"));
    io[4].desc.dims = dims({2, 256, 50, 76});
    CHECK(build(p.get())->configurePlugin(io.data(), 5, &io[6], 1) != 0 && lastErrorMentions("expects 6 inputs"));
    io[6].desc.dims = dims({1000, 256, 14, 14});
    CHECK(build(p.get())->configurePlugin(io.data(), 6, &io[6], 1) != 0 && lastErrorMentions("output"));
    io[6].desc.dims = dims({1000, 256, 7, 7});
    io[2].desc.type = DataType::kHALF;
    CHECK(build(p.get())->configurePlugin(io.data(), 6, &io[6], 1) != 0 && lastErrorMentions("share float32"));
    io[2].desc.type = DataType::kFLOAT;
    CHECK(build(p.get())->getWorkspaceSize(io.data(), 6, &io[6], 1) == 0);

    // field errors
    RoiAttrs bad;
    bad.mode = "half";
    CHECK(makeRoiAlign(bad) == nullptr && lastErrorMentions("coordinate_transformation_mode"));
    bad = RoiAttrs{};
    bad.strides = {};
    CHECK(makeRoiAlign(bad) == nullptr && lastErrorMentions("featmap_strides"));
    bad = RoiAttrs{};
    bad.oh = 0;
    CHECK(makeRoiAlign(bad) == nullptr && lastErrorMentions("output_height"));
    PluginFieldCollection none{0, nullptr};
    CHECK(c->createPlugin("x", &none, TensorRTPhase::kBUILD) == nullptr && lastErrorMentions("'output_height' is missing"));
    CHECK(c->createPlugin("x", nullptr, TensorRTPhase::kBUILD) == nullptr && lastErrorMentions("no field collection"));

    // clone and round trip keep every attribute
    RoiAttrs other;
    other.oh = 14;
    other.ow = 12;
    other.sr = 2;
    other.strides = {8, 16};
    other.finest = 28;
    other.mode = "output_half_pixel";
    auto q = makeRoiAlign(other);
    CHECK(q != nullptr);
    if (q)
    {
        std::unique_ptr<IPluginV3> cloned(q->clone());
        CHECK(cloned && sameFields(q.get(), cloned.get()));
        auto restored = roundTrip(q.get());
        CHECK(restored && sameFields(q.get(), restored.get()));
        CHECK(!sameFields(p.get(), q.get()));
    }
}

void nmsHost()
{
    IPluginCreatorV3One* c = creator("BatchedNMS");
    CHECK(c != nullptr);
    if (c == nullptr)
        return;
    CHECK(c->getFieldNames() != nullptr && c->getFieldNames()->nbFields == 4);
    auto p = makeNms(NmsAttrs{});
    CHECK(p != nullptr);
    if (!p)
        return;
    CHECK(build(p.get())->getNbOutputs() == 4);
    auto shapes = outputShapes(p.get(), {dims({2, 1000, 80, 4}), dims({2, 1000, 80})}, 4);
    CHECK(shapes.size() == 4);
    if (shapes.size() == 4)
    {
        CHECK(shapes[0] == (std::vector<int64_t>{2, 100, 4}));
        CHECK(shapes[1] == (std::vector<int64_t>{2, 100}));
        CHECK(shapes[2] == (std::vector<int64_t>{2, 100}));
        CHECK(shapes[3] == (std::vector<int64_t>{2}));
    }
    DataType in[2] = {DataType::kHALF, DataType::kHALF};
    DataType out[4] = {};
    CHECK(build(p.get())->getOutputDataTypes(out, 4, in, 2) == 0);
    CHECK(out[0] == DataType::kHALF && out[1] == DataType::kHALF && out[2] == DataType::kINT32
        && out[3] == DataType::kINT32);

    std::vector<DynamicPluginTensorDesc> io = {dynDesc(dims({2, 1000, 80, 4}), DataType::kFLOAT),
        dynDesc(dims({2, 1000, 80}), DataType::kFLOAT), dynDesc(dims({2, 100, 4}), DataType::kFLOAT),
        dynDesc(dims({2, 100}), DataType::kFLOAT), dynDesc(dims({2, 100}), DataType::kINT32),
        dynDesc(dims({2}), DataType::kINT32)};
    for (int32_t pos = 0; pos < 6; ++pos)
        CHECK_MSG(build(p.get())->supportsFormatCombination(pos, io.data(), 2, 4), "pos %d", pos);
    io[4].desc.type = DataType::kINT64;
    CHECK(!build(p.get())->supportsFormatCombination(4, io.data(), 2, 4));
    io[4].desc.type = DataType::kINT32;
    io[1].desc.type = DataType::kHALF;
    CHECK(!build(p.get())->supportsFormatCombination(1, io.data(), 2, 4));
    io[1].desc.type = DataType::kFLOAT;

    CHECK(build(p.get())->configurePlugin(io.data(), 2, &io[2], 4) == 0);
    size_t const ws = build(p.get())->getWorkspaceSize(io.data(), 2, &io[2], 4);
    CHECK(ws == carafe::nms::workspaceSize(carafe::nms::Shape{2, 1000, 80, 80}) && ws > 2 * 1000 * 80 * 33);
    io[0].desc.dims = dims({2, 1000, 3, 4});
    CHECK(build(p.get())->configurePlugin(io.data(), 2, &io[2], 4) != 0 && lastErrorMentions("1 or C = 80"));
    io[0].desc.dims = dims({2, 1000, 1, 4}); // one box per row shared by the classes
    CHECK(build(p.get())->configurePlugin(io.data(), 2, &io[2], 4) == 0);
    io[2].desc.dims = dims({2, 50, 4});
    CHECK(build(p.get())->configurePlugin(io.data(), 2, &io[2], 4) != 0 && lastErrorMentions("output 0"));
    io[2].desc.dims = dims({2, 100, 4});
    io[4].desc.type = DataType::kFLOAT;
    CHECK(build(p.get())->configurePlugin(io.data(), 2, &io[2], 4) != 0 && lastErrorMentions("int32"));
    io[4].desc.type = DataType::kINT32;

    NmsAttrs bad;
    bad.iou = 2.0F;
    CHECK(makeNms(bad) == nullptr && lastErrorMentions("iou_threshold"));
    bad = NmsAttrs{};
    bad.perClass = 0;
    CHECK(makeNms(bad) == nullptr && lastErrorMentions("max_per_class"));
    int32_t const k = 10;
    PluginField one{"max_per_image", &k, PluginFieldType::kINT32, 1};
    PluginFieldCollection fc{1, &one};
    CHECK(c->createPlugin("x", &fc, TensorRTPhase::kBUILD) == nullptr && lastErrorMentions("'score_threshold' is missing"));

    NmsAttrs other{-1.0F, 0.7F, 300, 1000};
    auto q = makeNms(other);
    CHECK(q != nullptr);
    if (q)
    {
        auto restored = roundTrip(q.get());
        CHECK(restored && sameFields(q.get(), restored.get()));
        CHECK(!sameFields(p.get(), q.get()));
    }
}

// ---- GPU: the plugin's enqueue against its launcher ---------------------------------------------------------------
using carafe_test::download;
using carafe_test::upload;

PluginTensorDesc desc(Dims const& d, DataType t)
{
    PluginTensorDesc x{};
    x.dims = d;
    x.type = t;
    x.format = TensorFormat::kLINEAR;
    return x;
}

void roiAlignGpu(std::mt19937& rng)
{
    RoiAttrs a;
    a.strides = {4, 8};
    auto p = makeRoiAlign(a);
    CHECK(p != nullptr);
    if (!p)
        return;
    std::uniform_real_distribution<float> u(0.0F, 1.0F);
    int const k = 50, n = 2, c = 8;
    std::vector<float> rois(4 * k), f0(n * c * 32 * 40), f1(n * c * 16 * 20);
    std::vector<int64_t> batch(k);
    for (int i = 0; i < k; ++i)
    {
        float const x = u(rng) * 150, y = u(rng) * 120, s = 4 + u(rng) * 150;
        float const box[4] = {x, y, x + s, y + s * (0.5F + u(rng))};
        std::copy(box, box + 4, &rois[4 * i]);
        batch[i] = i % n;
    }
    for (float& v : f0)
        v = u(rng);
    for (float& v : f1)
        v = u(rng);
    float* dRois = upload(rois);
    int64_t* dBatch = upload(batch);
    float* dF0 = upload(f0);
    float* dF1 = upload(f1);
    size_t const outCount = static_cast<size_t>(k) * c * 7 * 7;
    float* dOut = upload(std::vector<float>(outCount, NAN));
    PluginTensorDesc const in[4] = {desc(dims({k, 4}), DataType::kFLOAT), desc(dims({k}), DataType::kINT64),
        desc(dims({n, c, 32, 40}), DataType::kFLOAT), desc(dims({n, c, 16, 20}), DataType::kFLOAT)};
    PluginTensorDesc const out[1] = {desc(dims({k, c, 7, 7}), DataType::kFLOAT)};
    void const* ins[4] = {dRois, dBatch, dF0, dF1};
    void* outs[1] = {dOut};
    CHECK(runtime(p.get())->onShapeChange(in, 4, out, 1) == 0);
    CHECK(runtime(p.get())->enqueue(in, out, ins, outs, nullptr, nullptr) == 0);
    std::vector<float> got = download(dOut, outCount);

    carafe::roialign::Params params;
    params.outputHeight = params.outputWidth = 7;
    params.numLevels = 2;
    params.strides[0] = 4;
    params.strides[1] = 8;
    carafe::roialign::Shape s{k, n, c, {{dF0, 32, 40}, {dF1, 16, 20}}};
    CUDA_OK(cudaMemset(dOut, 0xFF, outCount * sizeof(float)));
    CHECK(carafe::roialign::launchMultiLevelRoiAlign(params, s, carafe::DType::kFloat32, dRois, dBatch, true, dOut,
              nullptr) == cudaSuccess);
    std::vector<float> want = download(dOut, outCount);
    CHECK(std::memcmp(got.data(), want.data(), outCount * sizeof(float)) == 0);

    auto restored = roundTrip(p.get());
    CHECK(restored != nullptr);
    if (restored)
    {
        CUDA_OK(cudaMemset(dOut, 0xFF, outCount * sizeof(float)));
        CHECK(runtime(restored.get())->onShapeChange(in, 4, out, 1) == 0);
        CHECK(runtime(restored.get())->enqueue(in, out, ins, outs, nullptr, nullptr) == 0);
        std::vector<float> again = download(dOut, outCount);
        CHECK(std::memcmp(again.data(), want.data(), outCount * sizeof(float)) == 0);
    }
    std::printf("MultiLevelRoIAlign plugin enqueue: %zu outputs, same bytes as the launcher\n", outCount);
    for (void* ptr : {static_cast<void*>(dRois), static_cast<void*>(dBatch), static_cast<void*>(dF0),
             static_cast<void*>(dF1), static_cast<void*>(dOut)})
        CUDA_OK(cudaFree(ptr));
}

void nmsGpu(std::mt19937& rng)
{
    NmsAttrs a{0.1F, 0.5F, -1, 30};
    auto p = makeNms(a);
    CHECK(p != nullptr);
    if (!p)
        return;
    std::uniform_real_distribution<float> u(0.0F, 1.0F);
    int const n = 2, m = 200, c = 5;
    std::vector<__half> boxes(n * m * c * 4), scores(n * m * c);
    for (size_t i = 0; i < boxes.size() / 4; ++i)
    {
        float const x = u(rng) * 100, y = u(rng) * 100, s = 10 + u(rng) * 30;
        boxes[4 * i] = __float2half(x);
        boxes[4 * i + 1] = __float2half(y);
        boxes[4 * i + 2] = __float2half(x + s);
        boxes[4 * i + 3] = __float2half(y + s);
    }
    for (__half& v : scores)
        v = __float2half(u(rng));
    std::vector<DynamicPluginTensorDesc> io = {dynDesc(dims({n, m, c, 4}), DataType::kHALF),
        dynDesc(dims({n, m, c}), DataType::kHALF), dynDesc(dims({n, 30, 4}), DataType::kHALF),
        dynDesc(dims({n, 30}), DataType::kHALF), dynDesc(dims({n, 30}), DataType::kINT32),
        dynDesc(dims({n}), DataType::kINT32)};
    CHECK(build(p.get())->configurePlugin(io.data(), 2, &io[2], 4) == 0);
    size_t const wsBytes = build(p.get())->getWorkspaceSize(io.data(), 2, &io[2], 4);
    void* ws = nullptr;
    CUDA_OK(cudaMalloc(&ws, wsBytes));
    __half* dBoxes = upload(boxes);
    __half* dScores = upload(scores);
    __half* oBoxes = upload(std::vector<__half>(n * 30 * 4));
    __half* oScores = upload(std::vector<__half>(n * 30));
    int32_t* oLabels = upload(std::vector<int32_t>(n * 30));
    int32_t* oValid = upload(std::vector<int32_t>(n));
    PluginTensorDesc in[2], out[4];
    for (int i = 0; i < 2; ++i)
        in[i] = io[i].desc;
    for (int i = 0; i < 4; ++i)
        out[i] = io[2 + i].desc;
    void const* ins[2] = {dBoxes, dScores};
    void* outs[4] = {oBoxes, oScores, oLabels, oValid};
    CHECK(runtime(p.get())->onShapeChange(in, 2, out, 4) == 0);
    CHECK(runtime(p.get())->enqueue(in, out, ins, outs, ws, nullptr) == 0);
    auto gotLabels = download(oLabels, n * 30);
    auto gotValid = download(oValid, n);
    auto gotBoxes = download(oBoxes, n * 30 * 4);
    carafe::nms::Params params;
    params.scoreThreshold = 0.1F;
    params.iouThreshold = 0.5F;
    params.maxPerImage = 30;
    CHECK(carafe::nms::launchBatchedNms(params, carafe::nms::Shape{n, m, c, c}, carafe::DType::kFloat16, dBoxes,
              dScores, oBoxes, oScores, oLabels, oValid, ws, nullptr) == cudaSuccess);
    CHECK(download(oLabels, n * 30) == gotLabels && download(oValid, n) == gotValid);
    auto wantBoxes = download(oBoxes, n * 30 * 4);
    CHECK(std::memcmp(wantBoxes.data(), gotBoxes.data(), wantBoxes.size() * sizeof(__half)) == 0);
    std::printf("BatchedNMS plugin enqueue: valid %d and %d, same outputs as the launcher\n", gotValid[0], gotValid[1]);
    for (void* ptr : {ws, static_cast<void*>(dBoxes), static_cast<void*>(dScores), static_cast<void*>(oBoxes),
             static_cast<void*>(oScores), static_cast<void*>(oLabels), static_cast<void*>(oValid)})
        CUDA_OK(cudaFree(ptr));
}

} // namespace

int main(int argc, char** argv)
{
    setLoggerFinder(&gFinder);
    if (argc > 1 && std::strcmp(argv[1], "--gpu") == 0)
    {
        int devices = 0;
        if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
        {
            std::printf("no CUDA device: GPU checks skipped\n");
            return 77;
        }
        std::mt19937 rng(5);
        roiAlignGpu(rng);
        nmsGpu(rng);
    }
    else
    {
        roiAlignHost();
        nmsHost();
    }
    return TEST_RESULT();
}
