#include "carafePlugin.h"

#include "carafePluginLogging.h"
#include "carafe_cuda.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>

using namespace nvinfer1;

namespace carafe
{
namespace trt
{

char const* const kCarafeName = "CARAFE";
char const* const kMmcvCarafeName = "MMCVCARAFE";
char const* const kPluginVersion = "1";

// ------------------------------------------------------------------------------------------------------------------
// Logging

namespace
{
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

char const* severityName(ILogger::Severity s)
{
    switch (s)
    {
    case ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case ILogger::Severity::kERROR: return "ERROR";
    case ILogger::Severity::kWARNING: return "WARNING";
    case ILogger::Severity::kINFO: return "INFO";
    case ILogger::Severity::kVERBOSE: return "VERBOSE";
    }
    return "LOG";
}
} // namespace

void setLoggerFinder(ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void log(ILogger::Severity severity, std::string const& message) noexcept
{
    ILoggerFinder* finder = gLoggerFinder.load();
    ILogger* logger = nullptr;
    if (finder != nullptr)
    {
        try
        {
            logger = finder->findLogger();
        }
        catch (...)
        {
            logger = nullptr;
        }
    }
    if (logger != nullptr)
    {
        logger->log(severity, message.c_str());
    }
    else
    {
        std::fprintf(stderr, "[carafe_trt_plugin] %s: %s\n", severityName(severity), message.c_str());
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Plugin

namespace
{

constexpr int32_t kNbInputs = 2;
constexpr int32_t kNbOutputs = 1;

bool supportedType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

DType toDType(DataType t)
{
    return t == DataType::kHALF ? DType::kFloat16 : t == DataType::kBF16 ? DType::kBFloat16 : DType::kFloat32;
}

void dims4(Dims const& d, int64_t out[4])
{
    for (int i = 0; i < 4; ++i)
    {
        out[i] = d.d[i];
    }
}

std::string dimsString(Dims const& d)
{
    if (d.nbDims < 0 || d.nbDims > Dims::MAX_DIMS) // never read past Dims::d
    {
        return "(invalid rank " + std::to_string(d.nbDims) + ")";
    }
    std::string s = "(";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    }
    return s + ")";
}

} // namespace

CarafePlugin::CarafePlugin(FieldSet fieldSet, Params const& params)
    : mFieldSet(fieldSet)
    , mParams(params)
{
}

CarafePlugin::CarafePlugin(CarafePlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mFieldSet(other.mFieldSet)
    , mParams(other.mParams)
{
    // The serialization storage is rebuilt on demand: copying it would leave pointers into `other`.
}

std::string CarafePlugin::where() const
{
    return std::string(getPluginName()) + " plugin (kernel_size=" + std::to_string(mParams.kernelSize)
        + ", group=" + std::to_string(mParams.group) + ", scale_factor=" + std::to_string(mParams.scale)
        + ", mode=" + modeName(mParams.mode) + ")";
}

IPluginCapability* CarafePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    }
    return nullptr;
}

IPluginV3* CarafePlugin::clone() noexcept
{
    try
    {
        return new CarafePlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string("CARAFE clone failed: ") + e.what());
    }
    return nullptr;
}

char const* CarafePlugin::getPluginName() const noexcept
{
    return mFieldSet == FieldSet::kCarafe ? kCarafeName : kMmcvCarafeName;
}

char const* CarafePlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* CarafePlugin::getPluginNamespace() const noexcept
{
    return "";
}

int32_t CarafePlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t CarafePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || outputTypes == nullptr || inputTypes == nullptr)
    {
        logError(where() + ": expects 2 inputs (features, kernels) and 1 output");
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t CarafePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs == nullptr || outputs == nullptr)
    {
        logError(where() + ": expects 2 inputs (features, kernels) and 1 output");
        return -1;
    }
    if (inputs[0].nbDims != 4 || inputs[1].nbDims != 4)
    {
        logError(where() + ": features and kernels must be 4-D NCHW, got ranks " + std::to_string(inputs[0].nbDims)
            + " and " + std::to_string(inputs[1].nbDims));
        return -1;
    }
    DimsExprs& out = outputs[0];
    out.nbDims = 4;
    out.d[0] = inputs[0].d[0];
    out.d[1] = inputs[0].d[1];
    IDimensionExpr const* s = exprBuilder.constant(mParams.scale);
    if (s == nullptr)
    {
        logError(where() + ": could not build the output shape expression");
        return -1;
    }
    DimensionOperation const op = mParams.mode == Mode::kUp ? DimensionOperation::kPROD : DimensionOperation::kCEIL_DIV;
    for (int i = 2; i < 4; ++i)
    {
        out.d[i] = exprBuilder.operation(op, *inputs[0].d[i], *s);
        if (out.d[i] == nullptr)
        {
            logError(where() + ": could not build the output shape expression");
            return -1;
        }
    }
    return 0;
}

bool CarafePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR || !supportedType(desc.type))
    {
        return false;
    }
    return pos == 0 || desc.type == inOut[0].desc.type;
}

bool CarafePlugin::checkDims(Dims const& features, Dims const& kernels, Dims const* output) const
{
    if (features.nbDims != 4 || kernels.nbDims != 4)
    {
        logError(where() + ": features and kernels must be 4-D NCHW, got " + dimsString(features) + " and "
            + dimsString(kernels));
        return false;
    }
    int64_t fd[4];
    int64_t kd[4];
    dims4(features, fd);
    dims4(kernels, kd);
    std::string const err = checkShapes(mParams, fd, kd);
    if (!err.empty())
    {
        logError(where() + ": " + err);
        return false;
    }
    if (output != nullptr)
    {
        bool ok = output->nbDims == 4;
        for (int i = 0; ok && i < 4; ++i)
        {
            int64_t const want = i < 2 ? fd[i] : (fd[i] < 0 ? -1 : outputExtent(fd[i], mParams.scale, mParams.mode));
            ok = want < 0 || output->d[i] < 0 || output->d[i] == want;
        }
        if (!ok)
        {
            logError(where() + ": output " + dimsString(*output) + " does not match features " + dimsString(features));
            return false;
        }
    }
    return true;
}

int32_t CarafePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        logError(where() + ": expects 2 inputs (features, kernels) and 1 output");
        return -1;
    }
    if (in[0].desc.type != in[1].desc.type || out[0].desc.type != in[0].desc.type || !supportedType(in[0].desc.type))
    {
        logError(where() + ": features, kernels and output must share one type among float32, float16, bfloat16");
        return -1;
    }
    return checkDims(in[0].desc.dims, in[1].desc.dims, &out[0].desc.dims) ? 0 : -1;
}

size_t CarafePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t CarafePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        logError(where() + ": expects 2 inputs (features, kernels) and 1 output");
        return -1;
    }
    return checkDims(in[0].dims, in[1].dims, &out[0].dims) ? 0 : -1;
}

int32_t CarafePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    Dims const& f = inputDesc[0].dims;
    Dims const& k = inputDesc[1].dims;
    if (f.nbDims != 4 || k.nbDims != 4)
    {
        logError(where() + ": enqueue got features " + dimsString(f) + " and kernels " + dimsString(k) + ", not 4-D");
        return -1;
    }
    int64_t fd[4];
    int64_t kd[4];
    dims4(f, fd);
    dims4(k, kd);
    Geometry g{};
    std::string const bad = launchGeometry(mParams, fd, kd, g); // never index math on extents that overflow
    if (!bad.empty())
    {
        logError(where() + ": enqueue: " + bad);
        return -1;
    }
    cudaError_t const err = launchForward(g, toDType(inputDesc[0].type), inputs[0], inputs[1], outputs[0], stream);
    if (err != cudaSuccess)
    {
        logError(where() + ": kernel launch failed: " + cudaGetErrorString(err));
        return -1;
    }
    return 0;
}

IPluginV3* CarafePlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* CarafePlugin::getFieldsToSerialize() noexcept
{
    mSerialKernelSize = mParams.kernelSize;
    mSerialGroup = mParams.group;
    mSerialScale = mParams.scale;
    mSerialScaleFloat = static_cast<float>(mParams.scale);
    mSerialFields.clear();
    mSerialFields.emplace_back("kernel_size", &mSerialKernelSize, PluginFieldType::kINT32, 1);
    if (mFieldSet == FieldSet::kCarafe)
    {
        mSerialMode = modeName(mParams.mode);
        mSerialFields.emplace_back("group", &mSerialGroup, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back("scale_factor", &mSerialScale, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(
            "mode", mSerialMode.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(mSerialMode.size()));
    }
    else
    {
        mSerialFields.emplace_back("group_size", &mSerialGroup, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back("scale_factor", &mSerialScaleFloat, PluginFieldType::kFLOAT32, 1);
    }
    mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialCollection.fields = mSerialFields.data();
    return &mSerialCollection;
}

} // namespace trt
} // namespace carafe
