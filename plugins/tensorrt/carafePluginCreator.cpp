#include "carafePluginCreator.h"

#include "carafePlugin.h"
#include "carafePluginLogging.h"

#include <exception>

using namespace nvinfer1;

namespace carafe
{
namespace trt
{

Field toField(PluginField const& f)
{
    FieldKind kind = FieldKind::kOther;
    switch (f.type)
    {
    case PluginFieldType::kINT8: kind = FieldKind::kInt8; break;
    case PluginFieldType::kINT16: kind = FieldKind::kInt16; break;
    case PluginFieldType::kINT32: kind = FieldKind::kInt32; break;
    case PluginFieldType::kINT64: kind = FieldKind::kInt64; break;
    case PluginFieldType::kFLOAT32: kind = FieldKind::kFloat32; break;
    case PluginFieldType::kFLOAT64: kind = FieldKind::kFloat64; break;
    case PluginFieldType::kCHAR: kind = FieldKind::kChar; break;
    default: kind = FieldKind::kOther; break;
    }
    return Field{f.name != nullptr ? f.name : "", kind, f.data, f.length};
}

CarafePluginCreator::CarafePluginCreator(FieldSet fieldSet)
    : mFieldSet(fieldSet)
{
    mFieldNames.emplace_back("kernel_size", nullptr, PluginFieldType::kINT32, 1);
    if (fieldSet == FieldSet::kCarafe)
    {
        mFieldNames.emplace_back("group", nullptr, PluginFieldType::kINT32, 1);
        mFieldNames.emplace_back("scale_factor", nullptr, PluginFieldType::kINT32, 1);
        mFieldNames.emplace_back("mode", nullptr, PluginFieldType::kCHAR, 0);
    }
    else
    {
        mFieldNames.emplace_back("group_size", nullptr, PluginFieldType::kINT32, 1);
        mFieldNames.emplace_back("scale_factor", nullptr, PluginFieldType::kFLOAT32, 1);
    }
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

IPluginV3* CarafePluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::string const layer = std::string(getPluginName()) + " plugin" + (name != nullptr ? std::string(" '") + name + "'" : "");
        if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr) || fc->nbFields < 0)
        {
            logError(layer + ": no field collection given");
            return nullptr;
        }
        std::vector<Field> fields;
        fields.reserve(static_cast<size_t>(fc->nbFields));
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            fields.push_back(toField(fc->fields[i]));
        }
        Params params;
        std::string const err = parseFields(fields, mFieldSet, params);
        if (!err.empty())
        {
            logError(layer + ": " + err);
            return nullptr;
        }
        return new CarafePlugin(mFieldSet, params);
    }
    catch (std::exception const& e)
    {
        logError(std::string(getPluginName()) + " createPlugin failed: " + e.what());
    }
    return nullptr;
}

PluginFieldCollection const* CarafePluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

char const* CarafePluginCreator::getPluginName() const noexcept
{
    return mFieldSet == FieldSet::kCarafe ? kCarafeName : kMmcvCarafeName;
}

char const* CarafePluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* CarafePluginCreator::getPluginNamespace() const noexcept
{
    return "";
}

} // namespace trt
} // namespace carafe
