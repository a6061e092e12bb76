// What the detection plugins (MultiLevelRoIAlign, BatchedNMS) share: the IPluginV3 plumbing (capabilities, clone,
// version "1", namespace "") and a creator that validates every field through the plugin's TensorRT-independent
// parser, logging one line that names the problem and returning nullptr instead of throwing.
//
// A plugin class P derives from DetectionPlugin<P> and provides:
//   using Params = ...;                                      its attributes
//   static char const* const kName;                          plugin name = ONNX op type
//   static std::string parse(std::vector<Field> const&, Params&);  empty on success, else the message
//   static std::vector<PluginField> fieldNames();            what getFieldNames() reports (types as ONNX-TensorRT
//                                                            passes the attributes)
//   P(Params const&);
#pragma once

#include "NvInferRuntime.h"
#include "carafePluginCreator.h"
#include "carafePluginLogging.h"

#include <exception>
#include <string>
#include <vector>

namespace carafe
{
namespace trt
{

template <typename Derived>
class DetectionPlugin : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Derived(static_cast<Derived const&>(*this));
        }
        catch (std::exception const& e)
        {
            logError(std::string(Derived::kName) + " clone failed: " + e.what());
        }
        return nullptr;
    }

    char const* getPluginName() const noexcept override
    {
        return Derived::kName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return "1";
    }
    char const* getPluginNamespace() const noexcept override
    {
        return "";
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

protected:
    DetectionPlugin() = default;
    DetectionPlugin(DetectionPlugin const&) = default;
    DetectionPlugin& operator=(DetectionPlugin const&) = delete;

    // Serialization storage: getFieldsToSerialize() fills `fields` and returns the collection over them.
    nvinfer1::PluginFieldCollection const* collection(std::vector<nvinfer1::PluginField> const& fields) noexcept
    {
        mSerialCollection.nbFields = static_cast<int32_t>(fields.size());
        mSerialCollection.fields = fields.data();
        return &mSerialCollection;
    }

private:
    nvinfer1::PluginFieldCollection mSerialCollection{};
};

template <typename Plugin>
class DetectionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    DetectionPluginCreator()
        : mFieldNames(Plugin::fieldNames())
    {
        mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
        mFieldCollection.fields = mFieldNames.data();
    }

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            std::string const layer
                = std::string(Plugin::kName) + " plugin" + (name != nullptr ? std::string(" '") + name + "'" : "");
            if (fc == nullptr || fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
            {
                logError(layer + ": no field collection given");
                return nullptr;
            }
            std::vector<Field> fields;
            for (int32_t i = 0; i < fc->nbFields; ++i)
            {
                fields.push_back(toField(fc->fields[i]));
            }
            typename Plugin::Params params;
            std::string const err = Plugin::parse(fields, params);
            if (!err.empty())
            {
                logError(layer + ": " + err);
                return nullptr;
            }
            return new Plugin(params);
        }
        catch (std::exception const& e)
        {
            logError(std::string(Plugin::kName) + " createPlugin failed: " + e.what());
        }
        return nullptr;
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFieldCollection;
    }
    char const* getPluginName() const noexcept override
    {
        return Plugin::kName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return "1";
    }
    char const* getPluginNamespace() const noexcept override
    {
        return "";
    }

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

// The extents of `d` as a vector (rank outside 0..MAX_DIMS: empty, reported by the shape checks as a wrong rank).
inline std::vector<int64_t> extents(nvinfer1::Dims const& d)
{
    if (d.nbDims < 0 || d.nbDims > nvinfer1::Dims::MAX_DIMS)
    {
        return std::vector<int64_t>(static_cast<size_t>(nvinfer1::Dims::MAX_DIMS) + 1, -1);
    }
    return std::vector<int64_t>(d.d, d.d + d.nbDims);
}

} // namespace trt
} // namespace carafe
