// The library's entry points for IPluginRegistry::loadLibrary, `trtexec --dynamicPlugins` and
// `polygraphy --plugins`. Nothing else is exported, and nothing here needs libnvinfer.
#include "batchedNMSPlugin.h"
#include "carafePluginCreator.h"
#include "carafePluginLogging.h"
#include "multiLevelRoIAlignPlugin.h"

#define CARAFE_EXPORT extern "C" __attribute__((visibility("default")))

CARAFE_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
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

CARAFE_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    carafe::trt::setLoggerFinder(finder);
}
