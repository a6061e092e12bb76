#include "batchedNMSPlugin.h"

#include "batchedNMSKernels.h"

#include <sstream>

using namespace nvinfer1;

namespace carafe
{
namespace trt
{

char const* const BatchedNMSPlugin::kName = "BatchedNMS";

namespace
{

constexpr int32_t kNbInputs = 2;
constexpr int32_t kNbOutputs = 4; // boxes, scores, labels, valid

bool floatType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

} // namespace

std::string BatchedNMSPlugin::parse(std::vector<Field> const& fields, Params& params)
{
    return nms::parseFields(fields, params);
}

std::vector<PluginField> BatchedNMSPlugin::fieldNames()
{
    return {
        PluginField("score_threshold", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("iou_threshold", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("max_per_class", nullptr, PluginFieldType::kINT32, 1),
        PluginField("max_per_image", nullptr, PluginFieldType::kINT32, 1),
    };
}

BatchedNMSPlugin::BatchedNMSPlugin(Params const& params)
    : mParams(params)
{
}

BatchedNMSPlugin::BatchedNMSPlugin(BatchedNMSPlugin const& other)
    : DetectionPlugin(other)
    , mParams(other.mParams)
{
    // the serialization storage is rebuilt on demand: copying it would leave pointers into `other`
}

std::string BatchedNMSPlugin::where() const
{
    std::ostringstream s;
    s << kName << " plugin (score_threshold " << mParams.scoreThreshold << ", iou_threshold " << mParams.iouThreshold
      << ", max_per_class " << mParams.maxPerClass << ", max_per_image " << mParams.maxPerImage << ")";
    return s.str();
}

int32_t BatchedNMSPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t BatchedNMSPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || outputTypes == nullptr || inputTypes == nullptr)
    {
        logError(where() + ": expects 2 inputs (boxes, scores) and 4 outputs (boxes, scores, labels, valid)");
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    outputTypes[1] = inputTypes[0];
    outputTypes[2] = DataType::kINT32;
    outputTypes[3] = DataType::kINT32;
    return 0;
}

int32_t BatchedNMSPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs == nullptr || outputs == nullptr)
    {
        logError(where() + ": expects 2 inputs (boxes, scores) and 4 outputs (boxes, scores, labels, valid)");
        return -1;
    }
    if (inputs[0].nbDims != 4 || inputs[1].nbDims != 3)
    {
        logError(where() + ": boxes must be 4-D (N, M, 1 or C, 4) and scores 3-D (N, M, C), got ranks "
            + std::to_string(inputs[0].nbDims) + " and " + std::to_string(inputs[1].nbDims));
        return -1;
    }
    IDimensionExpr const* n = inputs[1].d[0];
    IDimensionExpr const* k = exprBuilder.constant(mParams.maxPerImage);
    IDimensionExpr const* four = exprBuilder.constant(4);
    if (k == nullptr || four == nullptr)
    {
        logError(where() + ": could not build the output shape expression");
        return -1;
    }
    outputs[0].nbDims = 3;
    outputs[0].d[0] = n;
    outputs[0].d[1] = k;
    outputs[0].d[2] = four;
    for (int i = 1; i < 3; ++i)
    {
        outputs[i].nbDims = 2;
        outputs[i].d[0] = n;
        outputs[i].d[1] = k;
    }
    outputs[3].nbDims = 1;
    outputs[3].d[0] = n;
    return 0;
}

bool BatchedNMSPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs)
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
    if (pos >= 4)
    {
        return desc.type == DataType::kINT32; // labels, valid
    }
    return desc.type == inOut[0].desc.type; // scores, output boxes and scores
}

bool BatchedNMSPlugin::checkDims(Dims const& boxes, Dims const& scores, Dims const* outputs) const
{
    std::string const err = nms::checkShapes(extents(boxes), extents(scores));
    if (!err.empty())
    {
        logError(where() + ": " + err);
        return false;
    }
    if (outputs != nullptr)
    {
        int64_t const n = scores.d[0];
        int64_t const k = mParams.maxPerImage;
        std::vector<int64_t> const want[4] = {{n, k, 4}, {n, k}, {n, k}, {n}};
        for (int i = 0; i < 4; ++i)
        {
            bool ok = outputs[i].nbDims == static_cast<int32_t>(want[i].size());
            for (size_t j = 0; ok && j < want[i].size(); ++j)
            {
                ok = want[i][j] < 0 || outputs[i].d[j] < 0 || outputs[i].d[j] == want[i][j];
            }
            if (!ok)
            {
                logError(where() + ": output " + std::to_string(i) + "'s dims do not match the contract");
                return false;
            }
        }
    }
    return true;
}

int32_t BatchedNMSPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        logError(where() + ": expects 2 inputs (boxes, scores) and 4 outputs (boxes, scores, labels, valid)");
        return -1;
    }
    DataType const t = in[0].desc.type;
    if (!floatType(t) || in[1].desc.type != t || out[0].desc.type != t || out[1].desc.type != t
        || out[2].desc.type != DataType::kINT32 || out[3].desc.type != DataType::kINT32)
    {
        logError(where() + ": boxes, scores and the box and score outputs must share float32 or float16; labels and "
                           "valid are int32");
        return -1;
    }
    Dims const outDims[4] = {out[0].desc.dims, out[1].desc.dims, out[2].desc.dims, out[3].desc.dims};
    return checkDims(in[0].desc.dims, in[1].desc.dims, outDims) ? 0 : -1;
}

size_t BatchedNMSPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (inputs == nullptr || nbInputs != kNbInputs || inputs[0].max.nbDims != 4 || inputs[1].max.nbDims != 3)
    {
        return 0;
    }
    Dims const& b = inputs[0].max;
    Dims const& s = inputs[1].max;
    return nms::workspaceSize(nms::Shape{s.d[0], s.d[1], s.d[2], b.d[2]});
}

int32_t BatchedNMSPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        logError(where() + ": expects 2 inputs (boxes, scores) and 4 outputs (boxes, scores, labels, valid)");
        return -1;
    }
    Dims const outDims[4] = {out[0].dims, out[1].dims, out[2].dims, out[3].dims};
    return checkDims(in[0].dims, in[1].dims, outDims) ? 0 : -1;
}

int32_t BatchedNMSPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    Dims const& s = inputDesc[1].dims;
    nms::Shape const shape{s.d[0], s.d[1], s.d[2], inputDesc[0].dims.d[2]};
    DType const type = inputDesc[0].type == DataType::kHALF ? DType::kFloat16 : DType::kFloat32;
    cudaError_t const err = nms::launchBatchedNms(mParams, shape, type, inputs[0], inputs[1], outputs[0], outputs[1],
        static_cast<int32_t*>(outputs[2]), static_cast<int32_t*>(outputs[3]), workspace, stream);
    if (err != cudaSuccess)
    {
        logError(where() + ": kernel launch failed: " + cudaGetErrorString(err));
        return -1;
    }
    return 0;
}

PluginFieldCollection const* BatchedNMSPlugin::getFieldsToSerialize() noexcept
{
    mSerialFloats[0] = mParams.scoreThreshold;
    mSerialFloats[1] = mParams.iouThreshold;
    mSerialInts[0] = mParams.maxPerClass;
    mSerialInts[1] = mParams.maxPerImage;
    mSerialFields = {
        PluginField("score_threshold", &mSerialFloats[0], PluginFieldType::kFLOAT32, 1),
        PluginField("iou_threshold", &mSerialFloats[1], PluginFieldType::kFLOAT32, 1),
        PluginField("max_per_class", &mSerialInts[0], PluginFieldType::kINT32, 1),
        PluginField("max_per_image", &mSerialInts[1], PluginFieldType::kINT32, 1),
    };
    return collection(mSerialFields);
}

} // namespace trt
} // namespace carafe
