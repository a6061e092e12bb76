// IPluginCreatorV3One for "CARAFE" and "MMCVCARAFE" (version "1", namespace ""). createPlugin validates every field
// and returns nullptr after logging an error that names the field; it never throws or crashes on bad input.
#pragma once

#include "NvInferRuntime.h"
#include "carafe_params.h"

#include <string>
#include <vector>

namespace carafe
{
namespace trt
{

class CarafePluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    explicit CarafePluginCreator(FieldSet fieldSet);
    ~CarafePluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    FieldSet mFieldSet;
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

// Maps TensorRT's PluginField onto the TensorRT-independent carafe::Field (tested without TensorRT).
Field toField(nvinfer1::PluginField const& f);

} // namespace trt
} // namespace carafe
