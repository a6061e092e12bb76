// TensorRT IPluginV3 plugin "MultiLevelRoIAlign" (version "1", namespace ""), the ONNX node carafe::MultiLevelRoIAlign:
// mmdetection's SingleRoIExtractor (FPN level mapping + mmcv RoIAlign) in one layer. Semantics in roiAlignParams.h,
// the contract in MultiLevelRoIAlign_PluginConfig.yaml and README.md.
#pragma once

#include "detectionPluginBase.h"
#include "roiAlignParams.h"

#include <string>
#include <vector>

namespace carafe
{
namespace trt
{

class MultiLevelRoIAlignPlugin : public DetectionPlugin<MultiLevelRoIAlignPlugin>
{
public:
    using Params = roialign::Params;
    static char const* const kName; // "MultiLevelRoIAlign"
    static std::string parse(std::vector<Field> const& fields, Params& params);
    static std::vector<nvinfer1::PluginField> fieldNames();

    explicit MultiLevelRoIAlignPlugin(Params const& params);
    MultiLevelRoIAlignPlugin(MultiLevelRoIAlignPlugin const& other);
    ~MultiLevelRoIAlignPlugin() override = default;

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
    int32_t nbInputs() const noexcept
    {
        return 2 + mParams.numLevels;
    }
    // Checks the input (and output) dims; logs and returns false when inconsistent.
    bool checkDims(nvinfer1::Dims const* inputs, int32_t nbInputs, nvinfer1::Dims const* output) const;
    std::string where() const;

    Params mParams;
    std::vector<float> mSerialStrides;
    float mSerialFinestScale{};
    int32_t mSerialInts[3]{};
    std::string mSerialMode;
    std::vector<nvinfer1::PluginField> mSerialFields;
};

using MultiLevelRoIAlignPluginCreator = DetectionPluginCreator<MultiLevelRoIAlignPlugin>;

} // namespace trt
} // namespace carafe
