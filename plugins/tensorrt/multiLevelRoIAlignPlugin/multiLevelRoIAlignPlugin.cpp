#include "multiLevelRoIAlignPlugin.h"

#include "roiAlignKernels.h"

#include <sstream>

using namespace nvinfer1;

namespace carafe
{
namespace trt
{

char const* const MultiLevelRoIAlignPlugin::kName = "MultiLevelRoIAlign";

namespace
{

bool floatType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

bool indexType(DataType t)
{
    return t == DataType::kINT32 || t == DataType::kINT64;
}

} // namespace

std::string MultiLevelRoIAlignPlugin::parse(std::vector<Field> const& fields, Params& params)
{
    return roialign::parseFields(fields, params);
}

std::vector<PluginField> MultiLevelRoIAlignPlugin::fieldNames()
{
    return {
        PluginField("output_height", nullptr, PluginFieldType::kINT32, 1),
        PluginField("output_width", nullptr, PluginFieldType::kINT32, 1),
        PluginField("featmap_strides", nullptr, PluginFieldType::kFLOAT32, 0),
        PluginField("sampling_ratio", nullptr, PluginFieldType::kINT32, 1),
        PluginField("finest_scale", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("coordinate_transformation_mode", nullptr, PluginFieldType::kCHAR, 0),
    };
}

MultiLevelRoIAlignPlugin::MultiLevelRoIAlignPlugin(Params const& params)
    : mParams(params)
{
}

MultiLevelRoIAlignPlugin::MultiLevelRoIAlignPlugin(MultiLevelRoIAlignPlugin const& other)
    : DetectionPlugin(other)
    , mParams(other.mParams)
{
    // the serialization storage is rebuilt on demand: copying it would leave pointers into `other`
}

std::string MultiLevelRoIAlignPlugin::where() const
{
    std::ostringstream s;
    s << kName << " plugin (output " << mParams.outputHeight << "x" << mParams.outputWidth << ", sampling_ratio "
      << mParams.samplingRatio << ", " << mParams.numLevels << " levels, "
      << roialign::coordinateModeName(mParams.aligned) << ")";
    return s.str();
}

int32_t MultiLevelRoIAlignPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t MultiLevelRoIAlignPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != this->nbInputs() || nbOutputs != 1 || outputTypes == nullptr || inputTypes == nullptr)
    {
        logError(where() + ": expects " + std::to_string(this->nbInputs())
            + " inputs (rois, batch_indices, one feature map per level) and 1 output");
        return -1;
    }
    outputTypes[0] = inputTypes[2];
    return 0;
}

int32_t MultiLevelRoIAlignPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != this->nbInputs() || nbOutputs != 1 || inputs == nullptr || outputs == nullptr)
    {
        logError(where() + ": expects " + std::to_string(this->nbInputs()) + " inputs and 1 output");
        return -1;
    }
    if (inputs[0].nbDims != 2 || inputs[2].nbDims != 4)
    {
        logError(where() + ": rois must be 2-D (K, 4) and features 4-D (N, C, H, W), got ranks "
            + std::to_string(inputs[0].nbDims) + " and " + std::to_string(inputs[2].nbDims));
        return -1;
    }
    DimsExprs& out = outputs[0];
    out.nbDims = 4;
    out.d[0] = inputs[0].d[0];
    out.d[1] = inputs[2].d[1];
    out.d[2] = exprBuilder.constant(mParams.outputHeight);
    out.d[3] = exprBuilder.constant(mParams.outputWidth);
    if (out.d[2] == nullptr || out.d[3] == nullptr)
    {
        logError(where() + ": could not build the output shape expression");
        return -1;
    }
    return 0;
}

bool MultiLevelRoIAlignPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != this->nbInputs() || nbOutputs != 1 || pos < 0 || pos > nbInputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return floatType(desc.type);
    }
    if (pos == 1)
    {
        return indexType(desc.type);
    }
    return desc.type == inOut[0].desc.type; // features and output share the RoIs' float type
}

bool MultiLevelRoIAlignPlugin::checkDims(Dims const* inputs, int32_t nbInputs, Dims const* output) const
{
    std::vector<std::vector<int64_t>> shapes;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        shapes.push_back(extents(inputs[i]));
    }
    std::string const err = roialign::checkShapes(mParams, shapes);
    if (!err.empty())
    {
        logError(where() + ": " + err);
        return false;
    }
    if (output != nullptr)
    {
        int64_t const want[4] = {inputs[0].d[0], inputs[2].d[1], mParams.outputHeight, mParams.outputWidth};
        bool ok = output->nbDims == 4;
        for (int i = 0; ok && i < 4; ++i)
        {
            ok = want[i] < 0 || output->d[i] < 0 || output->d[i] == want[i];
        }
        if (!ok)
        {
            logError(where() + ": the output's dims do not match (K, C, output_height, output_width)");
            return false;
        }
    }
    return true;
}

int32_t MultiLevelRoIAlignPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != this->nbInputs() || nbOutputs != 1)
    {
        logError(where() + ": expects " + std::to_string(this->nbInputs()) + " inputs and 1 output");
        return -1;
    }
    DataType const t = in[0].desc.type;
    bool typesOk = floatType(t) && indexType(in[1].desc.type) && out[0].desc.type == t;
    for (int32_t i = 2; i < nbInputs; ++i)
    {
        typesOk = typesOk && in[i].desc.type == t;
    }
    if (!typesOk)
    {
        logError(where() + ": rois, features and output must share float32 or float16, batch_indices int32 or int64");
        return -1;
    }
    std::vector<Dims> dims;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims.push_back(in[i].desc.dims);
    }
    return checkDims(dims.data(), nbInputs, &out[0].desc.dims) ? 0 : -1;
}

size_t MultiLevelRoIAlignPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t MultiLevelRoIAlignPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != this->nbInputs() || nbOutputs != 1)
    {
        logError(where() + ": expects " + std::to_string(this->nbInputs()) + " inputs and 1 output");
        return -1;
    }
    std::vector<Dims> dims;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims.push_back(in[i].dims);
    }
    return checkDims(dims.data(), nbInputs, &out[0].dims) ? 0 : -1;
}

int32_t MultiLevelRoIAlignPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    roialign::Shape s{};
    s.numRois = inputDesc[0].dims.d[0];
    s.batch = inputDesc[2].dims.d[0];
    s.channels = inputDesc[2].dims.d[1];
    for (int32_t l = 0; l < mParams.numLevels; ++l)
    {
        Dims const& d = inputDesc[2 + l].dims;
        s.levels[l] = roialign::Level{inputs[2 + l], d.d[2], d.d[3]};
    }
    DType const type = inputDesc[0].type == DataType::kHALF ? DType::kFloat16 : DType::kFloat32;
    cudaError_t const err = roialign::launchMultiLevelRoiAlign(mParams, s, type, inputs[0], inputs[1],
        inputDesc[1].type == DataType::kINT64, outputs[0], stream);
    if (err != cudaSuccess)
    {
        logError(where() + ": kernel launch failed: " + cudaGetErrorString(err));
        return -1;
    }
    return 0;
}

PluginFieldCollection const* MultiLevelRoIAlignPlugin::getFieldsToSerialize() noexcept
{
    mSerialStrides.assign(mParams.strides, mParams.strides + mParams.numLevels);
    mSerialFinestScale = mParams.finestScale;
    mSerialInts[0] = mParams.outputHeight;
    mSerialInts[1] = mParams.outputWidth;
    mSerialInts[2] = mParams.samplingRatio;
    mSerialMode = roialign::coordinateModeName(mParams.aligned);
    mSerialFields = {
        PluginField("output_height", &mSerialInts[0], PluginFieldType::kINT32, 1),
        PluginField("output_width", &mSerialInts[1], PluginFieldType::kINT32, 1),
        PluginField("sampling_ratio", &mSerialInts[2], PluginFieldType::kINT32, 1),
        PluginField("featmap_strides", mSerialStrides.data(), PluginFieldType::kFLOAT32,
            static_cast<int32_t>(mSerialStrides.size())),
        PluginField("finest_scale", &mSerialFinestScale, PluginFieldType::kFLOAT32, 1),
        PluginField("coordinate_transformation_mode", mSerialMode.c_str(), PluginFieldType::kCHAR,
            static_cast<int32_t>(mSerialMode.size())),
    };
    return collection(mSerialFields);
}

} // namespace trt
} // namespace carafe
