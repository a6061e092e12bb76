// The library's creator list and its registration on load, shared by carafePluginLibrary.cpp (getCreators) and
// carafePluginRegistration.cpp.
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>

namespace carafe
{
namespace trt
{

// Every creator of the library, in one place: getCreators() and the registration on load both walk this list.
nvinfer1::IPluginCreatorInterface* const* pluginCreators(int32_t& nbCreators);

// Deregisters the creators that the registration on load put into TensorRT's registries (getCreators() calls it:
// IPluginRegistry::loadLibrary fails on a creator that is already registered).
void releaseCreatorsRegisteredOnLoad() noexcept;

} // namespace trt
} // namespace carafe
