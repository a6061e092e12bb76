// The library's entry points for IPluginRegistry::loadLibrary and `trtexec --dynamicPlugins`, and the one list of
// its creators: registration on load (carafePluginRegistration.cpp) walks the same list. Nothing here needs
// libnvinfer.
#include "carafePluginLibrary.h"
#include "batchedNMSPlugin.h"
#include "carafePluginCreator.h"
#include "carafePluginLogging.h"
#include "multiLevelRoIAlignPlugin.h"

#define CARAFE_EXPORT extern "C" __attribute__((visibility("default")))

namespace carafe
{
namespace trt
{
nvinfer1::IPluginCreatorInterface* const* pluginCreators(int32_t& nbCreators)
{
    static carafe::trt::CarafePluginCreator carafeCreator(carafe::FieldSet::kCarafe);
    static carafe::trt::CarafePluginCreator mmcvCreator(carafe::FieldSet::kMmcv);
    static carafe::trt::MultiLevelRoIAlignPluginCreator roiAlignCreator;
    static carafe::trt::BatchedNMSPluginCreator nmsCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&carafeCreator, &mmcvCreator, &roiAlignCreator,
        &nmsCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}
} // namespace trt
} // namespace carafe

CARAFE_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    // loadLibrary registers what this returns and fails on any creator already registered: take back the ones
    // registered on load, so that loadLibrary owns them from here on
    carafe::trt::releaseCreatorsRegisteredOnLoad();
    return carafe::trt::pluginCreators(nbCreators);
}

CARAFE_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    carafe::trt::setLoggerFinder(finder);
}
