// TensorRT IPluginV3 plugin of the CARAFE / CARAFE++ operator (CONTRACT §3).
//
// One class serves both node types: "CARAFE" (carafe domain: kernel_size, group, scale_factor, mode) and
// "MMCVCARAFE" (mmcv's export: kernel_size, group_size, scale_factor as float, always "up"). The creator validates
// the fields; shapes and types are checked again in configurePlugin / onShapeChange, where they become known.
#pragma once

#include "NvInferRuntime.h"
#include "carafe_params.h"

#include <string>
#include <vector>

namespace carafe
{
namespace trt
{

extern char const* const kCarafeName;     // "CARAFE"
extern char const* const kMmcvCarafeName; // "MMCVCARAFE"
extern char const* const kPluginVersion;  // "1"

class CarafePlugin : public nvinfer1::IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime
{
public:
    CarafePlugin(FieldSet fieldSet, Params const& params);
    CarafePlugin(CarafePlugin const& other);
    CarafePlugin& operator=(CarafePlugin const&) = delete;
    ~CarafePlugin() override = default;

    Params const& params() const noexcept
    {
        return mParams;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

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
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    // Checks a features/kernels/output dims triple (-1 extents allowed); logs and returns false when inconsistent.
    bool checkDims(nvinfer1::Dims const& features, nvinfer1::Dims const& kernels, nvinfer1::Dims const* output) const;
    std::string where() const;

    FieldSet mFieldSet;
    Params mParams;

    // Storage behind getFieldsToSerialize(): the PluginFields point into these members.
    int32_t mSerialKernelSize{};
    int32_t mSerialGroup{};
    int32_t mSerialScale{};
    float mSerialScaleFloat{};
    std::string mSerialMode;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{};
};

} // namespace trt
} // namespace carafe
