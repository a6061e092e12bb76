// TensorRT IPluginV3 plugin "BatchedNMS" (version "1", namespace ""), the ONNX node carafe::BatchedNMS: per-class
// non-maximum suppression of a batch of images with fixed-size outputs (boxes, scores, labels, valid count), as the
// detectors' test path does it. Semantics in batchedNMSParams.h, the contract in BatchedNMS_PluginConfig.yaml and
// README.md.
#pragma once

#include "batchedNMSParams.h"
#include "detectionPluginBase.h"

#include <string>
#include <vector>

namespace carafe
{
namespace trt
{

class BatchedNMSPlugin : public DetectionPlugin<BatchedNMSPlugin>
{
public:
    using Params = nms::Params;
    static char const* const kName; // "BatchedNMS"
    static std::string parse(std::vector<Field> const& fields, Params& params);
    static std::vector<nvinfer1::PluginField> fieldNames();

    explicit BatchedNMSPlugin(Params const& params);
    BatchedNMSPlugin(BatchedNMSPlugin const& other);
    ~BatchedNMSPlugin() override = default;

    Params const& params() const noexcept
    {
        return mParams;
    }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    // Checks boxes and scores (and the outputs' dims when given); logs and returns false when inconsistent.
    bool checkDims(nvinfer1::Dims const& boxes, nvinfer1::Dims const& scores, nvinfer1::Dims const* outputs) const;
    std::string where() const;

    Params mParams;
    float mSerialFloats[2]{};
    int32_t mSerialInts[2]{};
    std::vector<nvinfer1::PluginField> mSerialFields;
};

using BatchedNMSPluginCreator = DetectionPluginCreator<BatchedNMSPlugin>;

} // namespace trt
} // namespace carafe
