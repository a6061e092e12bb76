// ONNX Runtime custom-op library for carafe::CARAFE (CONTRACT §2, the plugin form), computed by the op's native CPU
// kernels through their run-time dispatch (carafe_cpu_dispatch.h: makeGeometry, forward, the widest instruction set
// this CPU runs). Built on first use by carafe_deploy/onnxruntime.py;
// sessions load it with SessionOptions.register_custom_ops_library(carafe_deploy.onnxruntime.library_path()).
//
// Compiled against any onnxruntime_c_api.h from 1.16 on, it runs in ONNX Runtime 1.16 and every later version: it asks
// for C API version 16 (the OrtApi table only grows, so an older request is served by a newer runtime), declares its
// OrtCustomOp as version 16 (CreateKernelV2/KernelComputeV2, which report errors as a status) and uses nothing newer,
// except KernelContext_ParallelFor (1.17), taken from a second table only where the runtime has it: there the
// kernel's work items run on the session's intra-op threads; on 1.16 on the calling thread.
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "carafe_cpu_dispatch.h"

namespace
{

constexpr uint32_t kApiVersion = 16;         // the oldest ONNX Runtime the project supports
constexpr uint32_t kParallelForVersion = 17; // OrtApi::KernelContext_ParallelFor
constexpr char const* kDomain = "carafe";
constexpr char const* kOpName = "CARAFE";

OrtApi const* gApi = nullptr;
OrtApi const* gApiParallel = nullptr; // the same table when the runtime is 1.17 or newer, else nullptr

OrtStatus* fail(std::string const& message)
{
    return gApi->CreateStatus(ORT_INVALID_ARGUMENT, ("carafe::CARAFE: " + message).c_str());
}

#define CARAFE_ORT_TRY(expr)                                                                                           \
    do                                                                                                                 \
    {                                                                                                                  \
        if (OrtStatus* status_ = (expr))                                                                               \
        {                                                                                                              \
            return status_;                                                                                            \
        }                                                                                                              \
    } while (0)

struct Attributes
{
    int64_t kernelSize = 0, group = 1, scale = 2;
    bool up = true;
};

OrtStatus* readAttributes(OrtKernelInfo const* info, Attributes& a)
{
    if (OrtStatus* missing = gApi->KernelInfoGetAttribute_int64(info, "kernel_size", &a.kernelSize))
    {
        gApi->ReleaseStatus(missing);
        return fail("the kernel_size attribute is required");
    }
    // group, scale_factor and mode have schema defaults (1, 2, "up"); a node may leave them out
    for (auto [name, value] : {std::pair<char const*, int64_t*>{"group", &a.group}, {"scale_factor", &a.scale}})
    {
        if (OrtStatus* absent = gApi->KernelInfoGetAttribute_int64(info, name, value))
        {
            gApi->ReleaseStatus(absent);
        }
    }
    size_t size = 0;
    if (OrtStatus* absent = gApi->KernelInfoGetAttribute_string(info, "mode", nullptr, &size))
    {
        gApi->ReleaseStatus(absent);
    }
    else
    {
        std::string mode(size, '\0');
        CARAFE_ORT_TRY(gApi->KernelInfoGetAttribute_string(info, "mode", mode.data(), &size));
        mode.resize(std::strlen(mode.c_str()));
        if (mode != "up" && mode != "down")
        {
            return fail("mode must be \"up\" or \"down\", got \"" + mode + "\"");
        }
        a.up = mode == "up";
    }
    if (a.kernelSize < 1 || a.kernelSize % 2 == 0)
    {
        return fail("kernel_size must be odd and >= 1, got " + std::to_string(a.kernelSize));
    }
    if (a.group < 1 || a.scale < 1)
    {
        return fail("group and scale_factor must be >= 1, got " + std::to_string(a.group) + " and "
            + std::to_string(a.scale));
    }
    return nullptr;
}

struct Tensor
{
    std::vector<int64_t> dims;
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};

OrtStatus* describe(OrtValue const* value, Tensor& t)
{
    OrtTensorTypeAndShapeInfo* info = nullptr;
    CARAFE_ORT_TRY(gApi->GetTensorTypeAndShape(value, &info));
    size_t rank = 0;
    OrtStatus* status = gApi->GetTensorElementType(info, &t.type);
    if (status == nullptr)
    {
        status = gApi->GetDimensionsCount(info, &rank);
    }
    if (status == nullptr)
    {
        t.dims.resize(rank);
        status = gApi->GetDimensions(info, t.dims.data(), rank);
    }
    gApi->ReleaseTensorTypeAndShapeInfo(info);
    return status;
}

std::string shapeText(std::vector<int64_t> const& dims)
{
    std::string s = "(";
    for (size_t i = 0; i < dims.size(); ++i)
    {
        s += (i ? ", " : "") + std::to_string(dims[i]);
    }
    return s + ")";
}

// The dispatcher's threads: its work items on ONNX Runtime's intra-op threads where the runtime offers them. The
// kernels take items from a shared counter, so a body that runs alone (ParallelFor failed, or ONNX Runtime 1.16)
// does all that is left.
struct ParallelCall
{
    void (*body)(void*);
    void* bodyCtx;
};

void ortRun(void* context, int64_t n, void (*body)(void*), void* bodyCtx)
{
    ParallelCall call{body, bodyCtx};
    auto trampoline = [](void* data, size_t)
    {
        auto const* c = static_cast<ParallelCall const*>(data);
        c->body(c->bodyCtx);
    };
    OrtStatus* status = gApiParallel->KernelContext_ParallelFor(
        static_cast<OrtKernelContext*>(context), trampoline, static_cast<size_t>(n), 0, &call);
    if (status != nullptr)
    {
        gApi->ReleaseStatus(status);
        body(bodyCtx);
    }
}

carafe_cpu::Parallel ortParallel(OrtKernelContext* context)
{
    if (gApiParallel == nullptr)
    {
        return {};
    }
    return {std::max<int64_t>(1, std::thread::hardware_concurrency()), &ortRun, context};
}

struct Kernel
{
    Attributes attributes;

    OrtStatus* compute(OrtKernelContext* context) const
    {
        OrtValue const* inputs[2] = {nullptr, nullptr};
        Tensor x, k;
        CARAFE_ORT_TRY(gApi->KernelContext_GetInput(context, 0, &inputs[0]));
        CARAFE_ORT_TRY(gApi->KernelContext_GetInput(context, 1, &inputs[1]));
        CARAFE_ORT_TRY(describe(inputs[0], x));
        CARAFE_ORT_TRY(describe(inputs[1], k));
        Attributes const& a = attributes;
        if (x.dims.size() != 4 || k.dims.size() != 4)
        {
            return fail("features and kernels must be 4-D, got " + shapeText(x.dims) + " and " + shapeText(k.dims));
        }
        if (x.type != k.type)
        {
            return fail("features and kernels must have one element type");
        }
        if (x.dims[1] % a.group != 0)
        {
            return fail("the features' " + std::to_string(x.dims[1]) + " channels are not divisible by group "
                + std::to_string(a.group));
        }
        carafe_cpu::Geometry const g
            = carafe_cpu::makeGeometry(x.dims[0], x.dims[1], x.dims[2], x.dims[3], a.kernelSize, a.group, a.scale, a.up);
        std::vector<int64_t> const want{g.n, a.group * g.taps, g.ho, g.wo};
        if (k.dims != want)
        {
            return fail("kernels of shape " + shapeText(k.dims) + " do not fit features " + shapeText(x.dims)
                + " (expected " + shapeText(want) + ")");
        }
        int64_t const outDims[4] = {g.n, g.c, g.ho, g.wo};
        OrtValue* output = nullptr;
        CARAFE_ORT_TRY(gApi->KernelContext_GetOutput(context, 0, outDims, 4, &output));
        if (g.n * g.c * g.ho * g.wo == 0)
        {
            return nullptr;
        }
        void* xData = nullptr;
        void* kData = nullptr;
        void* outData = nullptr;
        CARAFE_ORT_TRY(gApi->GetTensorMutableData(const_cast<OrtValue*>(inputs[0]), &xData));
        CARAFE_ORT_TRY(gApi->GetTensorMutableData(const_cast<OrtValue*>(inputs[1]), &kData));
        CARAFE_ORT_TRY(gApi->GetTensorMutableData(output, &outData));
        carafe_cpu::DType dtype;
        switch (x.type)
        {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: dtype = carafe_cpu::DType::kFloat32; break;
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: dtype = carafe_cpu::DType::kFloat64; break;
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: dtype = carafe_cpu::DType::kFloat16; break; // accumulated in float
        default: return fail("element type " + std::to_string(static_cast<int>(x.type)) + " is not supported");
        }
        carafe_cpu::forward(carafe_cpu::bestIsa(), dtype, ortParallel(context), g, xData, kData, outData);
        return nullptr;
    }
};

// One OrtCustomOp per element type: ONNX Runtime picks the kernel by the inputs' type.
struct CarafeOp : OrtCustomOp
{
    ONNXTensorElementDataType type;

    explicit CarafeOp(ONNXTensorElementDataType t)
        : OrtCustomOp{}
        , type(t)
    {
        version = kApiVersion;
        GetName = [](OrtCustomOp const*) { return kOpName; };
        GetExecutionProviderType = [](OrtCustomOp const*) -> char const* { return nullptr; }; // the CPU provider
        GetInputType = [](OrtCustomOp const* op, size_t) { return static_cast<CarafeOp const*>(op)->type; };
        GetInputTypeCount = [](OrtCustomOp const*) -> size_t { return 2; };
        GetOutputType = [](OrtCustomOp const* op, size_t) { return static_cast<CarafeOp const*>(op)->type; };
        GetOutputTypeCount = [](OrtCustomOp const*) -> size_t { return 1; };
        GetInputCharacteristic
            = [](OrtCustomOp const*, size_t) { return OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED; };
        GetOutputCharacteristic
            = [](OrtCustomOp const*, size_t) { return OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED; };
        GetInputMemoryType = [](OrtCustomOp const*, size_t) { return OrtMemTypeDefault; };
        KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
        CreateKernelV2 = [](OrtCustomOp const*, OrtApi const*, OrtKernelInfo const* info, void** kernel) -> OrtStatus*
        {
            Attributes a;
            CARAFE_ORT_TRY(readAttributes(info, a));
            *kernel = new (std::nothrow) Kernel{a};
            return *kernel != nullptr ? nullptr : gApi->CreateStatus(ORT_FAIL, "carafe::CARAFE: out of memory");
        };
        KernelComputeV2 = [](void* kernel, OrtKernelContext* context) -> OrtStatus*
        {
            try
            {
                return static_cast<Kernel const*>(kernel)->compute(context);
            }
            catch (std::exception const& e) // std::bad_alloc from the kernels' scratch buffers
            {
                return gApi->CreateStatus(ORT_FAIL, (std::string("carafe::CARAFE: ") + e.what()).c_str());
            }
        };
    }
};

} // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(
    OrtSessionOptions* options, OrtApiBase const* base)
{
    gApi = base->GetApi(kApiVersion);
    if (gApi == nullptr)
    {
        return nullptr; // older than 1.16: no status can be made; the session reports the unknown op
    }
    gApiParallel = base->GetApi(kParallelForVersion);
    static CarafeOp ops[] = {CarafeOp(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT), CarafeOp(ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE),
        CarafeOp(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)};
    OrtCustomOpDomain* domain = nullptr;
    CARAFE_ORT_TRY(gApi->CreateCustomOpDomain(kDomain, &domain));
    for (CarafeOp& op : ops)
    {
        if (OrtStatus* status = gApi->CustomOpDomain_Add(domain, &op))
        {
            gApi->ReleaseCustomOpDomain(domain);
            return status;
        }
    }
    // the session options keep the domain for the sessions made with them; it is not released here
    return gApi->AddCustomOpDomain(options, domain);
}
