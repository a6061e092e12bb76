// Registration on load (CONTRACT §3): the creators of pluginCreators() -- the list getCreators() returns -- are put
// into the plugin registry of the TensorRT in the process when this library is loaded, as REGISTER_TENSORRT_PLUGIN
// does for a library linked against libnvinfer. So `ctypes.CDLL(lib)` (polygraphy --plugins), `trtexec
// --staticPlugins`, Triton's `--backend-config=tensorrt,plugins=...` and LD_PRELOAD find CARAFE without
// loadLibrary. The library still links no libnvinfer: the registry is found at run time, in the TensorRT libraries
// already mapped (full TensorRT's libnvinfer*.so*, TensorRT-RTX's libtensorrt_rtx.so*, whose C entry point has the
// one name `getPluginRegistry` in both), by handle, since Python loads them RTLD_LOCAL (RTLD_DEFAULT misses them).
//
// * Once per registry: a registry that already holds a creator of the same name/version/namespace is left alone.
// * getCreators() (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins) hands over the same creator objects, and
//   loadLibrary fails when any of them is registered already; so getCreators() first takes back those registered
//   here (deregisterCreator), and loadLibrary owns them from then on (deregisterLibrary works as usual).
// * Loaded before any TensorRT (LD_PRELOAD into Python; polygraphy, which loads plugins before it imports
//   TensorRT): nothing to register into yet. The library then defines the three TensorRT entry points that every
//   user goes through first -- getPluginRegistry, createInferBuilder_INTERNAL, createInferRuntime_INTERNAL -- and
//   makes itself global (dlopen RTLD_NOLOAD | RTLD_GLOBAL; LD_PRELOAD is global already), so that the TensorRT
//   loaded later binds them here: each registers the creators and calls TensorRT's own function, looked up in the
//   caller's own dependencies. When TensorRT was loaded first, these definitions stay out of the global scope and
//   are never called.
#include "carafePluginLibrary.h"
#include "carafePluginLogging.h"

#include "NvInferRuntime.h"

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace
{

using nvinfer1::IPluginCreatorInterface;
using nvinfer1::IPluginRegistry;

std::mutex gMutex; // constant-initialized: usable from the load-time constructor below

// (registry, creator) pairs registered here and still owned here. A function-local static: the constructor that
// registers on load may run before this file's dynamic initializers.
std::vector<std::pair<IPluginRegistry*, IPluginCreatorInterface*>>& registered()
{
    static std::vector<std::pair<IPluginRegistry*, IPluginCreatorInterface*>> pairs;
    return pairs;
}

bool isTensorRtLibrary(char const* path)
{
    char const* slash = std::strrchr(path, '/');
    char const* base = slash != nullptr ? slash + 1 : path;
    return std::strncmp(base, "libnvinfer", 10) == 0 || std::strncmp(base, "libtensorrt_rtx", 15) == 0;
}

bool isOurs(void* address)
{
    Dl_info self{}, where{};
    dladdr(reinterpret_cast<void*>(&isOurs), &self);
    return dladdr(address, &where) != 0 && where.dli_fbase == self.dli_fbase;
}

int collectTensorRt(dl_phdr_info* info, size_t /*size*/, void* data)
{
    if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0' && isTensorRtLibrary(info->dlpi_name))
    {
        static_cast<std::vector<std::string>*>(data)->emplace_back(info->dlpi_name);
    }
    return 0;
}

// `symbol` as defined by each TensorRT library mapped in this process (never this library's own definition): the
// handle lookup finds libraries that Python loaded with RTLD_LOCAL, which RTLD_DEFAULT does not see.
std::vector<void*> tensorRtSymbols(char const* symbol)
{
    std::vector<std::string> paths;
    dl_iterate_phdr(collectTensorRt, &paths); // no dlopen inside the callback: the loader lock is held there
    std::vector<void*> found;
    for (std::string const& path : paths)
    {
        void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
        if (handle == nullptr)
        {
            continue;
        }
        void* sym = dlsym(handle, symbol);
        dlclose(handle); // NOLOAD took a reference; the library stays mapped by its owner
        if (sym != nullptr && !isOurs(sym))
        {
            bool const seen = std::find(found.begin(), found.end(), sym) != found.end();
            if (!seen)
            {
                found.push_back(sym);
            }
        }
    }
    return found;
}

using GetRegistryFn = IPluginRegistry* (*) ();

bool sameName(char const* a, char const* b)
{
    return std::strcmp(a != nullptr ? a : "", b != nullptr ? b : "") == 0;
}

// whether `registry` holds a creator of this name/version/namespace (not through getCreator, which logs an error
// for every name it does not find)
bool holds(IPluginRegistry* registry, nvinfer1::IPluginCreatorV3One const& creator)
{
    int32_t count = 0;
    IPluginCreatorInterface* const* all = registry->getAllCreators(&count);
    for (int32_t i = 0; all != nullptr && i < count; ++i)
    {
        char const *name = nullptr, *version = nullptr, *ns = nullptr;
        if (auto const* v3 = dynamic_cast<nvinfer1::IPluginCreatorV3One const*>(all[i]))
        {
            name = v3->getPluginName();
            version = v3->getPluginVersion();
            ns = v3->getPluginNamespace();
        }
        else if (auto const* v2 = dynamic_cast<nvinfer1::IPluginCreator const*>(all[i]))
        {
            name = v2->getPluginName();
            version = v2->getPluginVersion();
            ns = v2->getPluginNamespace();
        }
        if (name != nullptr && sameName(name, creator.getPluginName())
            && sameName(version, creator.getPluginVersion()) && sameName(ns, creator.getPluginNamespace()))
        {
            return true;
        }
    }
    return false;
}

void registerInto(IPluginRegistry* registry)
{
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = carafe::trt::pluginCreators(count);
    for (int32_t i = 0; i < count; ++i)
    {
        IPluginCreatorInterface* creator = creators[i];
        bool const mine = std::find(registered().begin(), registered().end(), std::make_pair(registry, creator))
            != registered().end();
        if (mine)
        {
            continue;
        }
        auto* v3 = dynamic_cast<nvinfer1::IPluginCreatorV3One*>(creator);
        // registered by someone else already (loadLibrary, another copy of this library): theirs stays
        if (v3 == nullptr || holds(registry, *v3))
        {
            continue;
        }
        if (registry->registerCreator(*creator, v3->getPluginNamespace()))
        {
            registered().emplace_back(registry, creator);
        }
    }
}

void registerWithLoadedTensorRt() noexcept
{
    try
    {
        std::lock_guard<std::mutex> lock(gMutex);
        std::vector<IPluginRegistry*> registries;
        for (void* sym : tensorRtSymbols("getPluginRegistry"))
        {
            IPluginRegistry* registry = reinterpret_cast<GetRegistryFn>(sym)();
            if (registry != nullptr && std::find(registries.begin(), registries.end(), registry) == registries.end())
            {
                registries.push_back(registry);
            }
        }
        for (IPluginRegistry* registry : registries)
        {
            registerInto(registry);
        }
    }
    catch (std::exception const& e)
    {
        carafe::trt::logError(std::string("registering the CARAFE plugin creators on load failed: ") + e.what());
    }
}

// TensorRT's own `symbol` for a call from `caller` (a return address): first the definition that the caller's own
// library and its dependencies hold (the TensorRT it was linked with, when several are loaded), else the first
// TensorRT library mapped that defines it.
template <typename Fn>
Fn realEntry(char const* symbol, void* caller)
{
    Dl_info where{};
    if (caller != nullptr && dladdr(caller, &where) != 0 && where.dli_fname != nullptr && !isOurs(caller))
    {
        if (void* handle = dlopen(where.dli_fname, RTLD_LAZY | RTLD_NOLOAD))
        {
            void* sym = dlsym(handle, symbol); // the handle's own scope: never the global one this library is in
            dlclose(handle);
            if (sym != nullptr && !isOurs(sym))
            {
                return reinterpret_cast<Fn>(sym);
            }
        }
    }
    std::vector<void*> const found = tensorRtSymbols(symbol);
    return found.empty() ? nullptr : reinterpret_cast<Fn>(found.front());
}

// Into the global scope, so that a TensorRT loaded after this library binds the entry points below to it.
void makeGlobal()
{
    Dl_info self{};
    if (dladdr(reinterpret_cast<void*>(&makeGlobal), &self) != 0 && self.dli_fname != nullptr)
    {
        dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_GLOBAL); // kept open: the library stays loaded
    }
}

// No destructor deregisters them: at exit TensorRT's registries may be destroyed before this library's finalizer
// runs (always so under LD_PRELOAD), and the one unload that happens in practice, deregisterLibrary after
// loadLibrary, finds them owned by TensorRT already (getCreators handed them over).
__attribute__((constructor)) void registerOnLoad()
{
    if (tensorRtSymbols("getPluginRegistry").empty())
    {
        makeGlobal();
        return;
    }
    registerWithLoadedTensorRt();
}

} // namespace

namespace carafe
{
namespace trt
{

// Called by getCreators(): loadLibrary is about to register these creators itself.
void releaseCreatorsRegisteredOnLoad() noexcept
{
    std::lock_guard<std::mutex> lock(gMutex);
    for (auto const& entry : registered())
    {
        entry.first->deregisterCreator(*entry.second);
    }
    registered().clear();
}

} // namespace trt
} // namespace carafe

// ---------------------------------------------------------------------------------------------------------------------
// TensorRT's entry points, bound here only when this library precedes TensorRT in the global scope (see the top).

#define CARAFE_EXPORT extern "C" __attribute__((visibility("default")))

CARAFE_EXPORT nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    auto real = realEntry<GetRegistryFn>("getPluginRegistry", __builtin_return_address(0));
    if (real == nullptr)
    {
        return nullptr;
    }
    registerWithLoadedTensorRt();
    return real();
}

namespace
{
// createInferBuilder_INTERNAL / createInferRuntime_INTERNAL: register, then TensorRT's own
void* createThroughTensorRt(char const* symbol, void* caller, void* logger, int32_t version) noexcept
{
    using Fn = void* (*) (void*, int32_t);
    auto real = realEntry<Fn>(symbol, caller);
    if (real == nullptr)
    {
        return nullptr;
    }
    registerWithLoadedTensorRt();
    return real(logger, version);
}
} // namespace

CARAFE_EXPORT void* createInferBuilder_INTERNAL(void* logger, int32_t version) noexcept
{
    return createThroughTensorRt("createInferBuilder_INTERNAL", __builtin_return_address(0), logger, version);
}

CARAFE_EXPORT void* createInferRuntime_INTERNAL(void* logger, int32_t version) noexcept
{
    return createThroughTensorRt("createInferRuntime_INTERNAL", __builtin_return_address(0), logger, version);
}
