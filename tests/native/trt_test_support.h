// What the plugin host tests share (test_trt_plugin.cpp for CARAFE, test_detection_plugins.cpp for the detection
// plugins): the library's entry points, a logger that records the plugins' errors, a small IExprBuilder over constant
// dimensions, and the plugin's capabilities. TensorRT headers only (no libnvinfer).
#pragma once

#include "NvInferRuntime.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

namespace carafe_trt_test
{

using namespace nvinfer1;

// ---- a logger that records what the plugin reports -------------------------------------------------------------
class RecordingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            errors.emplace_back(msg);
        }
    }
    std::vector<std::string> errors;
};

class TestLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &logger;
    }
    RecordingLogger logger;
};

inline TestLoggerFinder gFinder;

inline bool lastErrorMentions(char const* part)
{
    auto const& e = gFinder.logger.errors;
    return !e.empty() && e.back().find(part) != std::string::npos;
}

// ---- a small IExprBuilder over constant dimensions ---------------------------------------------------------------
class ConstantExprImpl : public apiv::VDimensionExpr
{
public:
    explicit ConstantExprImpl(int64_t v)
        : mValue(v)
    {
    }
    bool isConstant() const override
    {
        return true;
    }
    int64_t getConstantValue() const override
    {
        return mValue;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    int64_t mValue;
};

class ConstantExpr : public IDimensionExpr
{
public:
    explicit ConstantExpr(int64_t v)
        : mExpr(v)
    {
        mImpl = &mExpr;
    }
    ~ConstantExpr() noexcept override = default;

private:
    ConstantExprImpl mExpr;
};

class TestExprBuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        mExprs.push_back(std::make_unique<ConstantExpr>(value));
        return mExprs.back().get();
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        ops.push_back(op);
        int64_t const x = a.getConstantValue();
        int64_t const y = b.getConstantValue();
        switch (op)
        {
        case DimensionOperation::kSUM: return constant(x + y);
        case DimensionOperation::kPROD: return constant(x * y);
        case DimensionOperation::kMAX: return constant(std::max(x, y));
        case DimensionOperation::kMIN: return constant(std::min(x, y));
        case DimensionOperation::kSUB: return constant(x - y);
        case DimensionOperation::kFLOOR_DIV: return constant(x / y);
        case DimensionOperation::kCEIL_DIV: return constant((x + y - 1) / y);
        default: return nullptr;
        }
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }
    std::vector<DimensionOperation> ops;

private:
    std::vector<std::unique_ptr<ConstantExpr>> mExprs;
};

class TestExprBuilder : public IExprBuilder
{
public:
    TestExprBuilder()
    {
        mImpl = &impl;
    }
    ~TestExprBuilder() noexcept override = default;
    TestExprBuilderImpl impl;
};

// ---- helpers ---------------------------------------------------------------------------------------------------
inline IPluginCreatorV3One* creator(char const* name)
{
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), name) == 0)
        {
            return c;
        }
    }
    return nullptr;
}

inline IPluginV3OneBuild* build(IPluginV3* p)
{
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
inline IPluginV3OneRuntime* runtime(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}
inline IPluginV3OneCore* core(IPluginV3* p)
{
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}

inline DynamicPluginTensorDesc dynDesc(Dims const& d, DataType t)
{
    DynamicPluginTensorDesc x{};
    x.desc.dims = d;
    x.desc.type = t;
    x.desc.format = TensorFormat::kLINEAR;
    x.min = d;
    x.max = d;
    x.opt = d;
    return x;
}

// Recreates a plugin from its getFieldsToSerialize() output, as the runtime does when deserializing an engine.
inline std::unique_ptr<IPluginV3> roundTrip(IPluginV3* p)
{
    PluginFieldCollection const* fc = runtime(p)->getFieldsToSerialize();
    return std::unique_ptr<IPluginV3>(
        creator(core(p)->getPluginName())->createPlugin("restored", fc, TensorRTPhase::kRUNTIME));
}

} // namespace carafe_trt_test
