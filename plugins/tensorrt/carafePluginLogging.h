// Logging through the logger TensorRT hands over with setLoggerFinder(); stderr before that happens (e.g. when the
// library is driven directly by a test).
#pragma once

#include "NvInferRuntime.h"

#include <string>

namespace carafe
{
namespace trt
{

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

} // namespace trt
} // namespace carafe
