// PyTorch binding of the CUDA kernels in plugins/common (JIT-compiled by carafe_deploy/ops/_cuda.py). Argument
// checking happens in Python (carafe_deploy.ops.carafe.check_carafe_args); here only what the kernels need is checked.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "carafe_cuda.h"

#include <string>
#include <vector>

namespace
{

carafe::DType dtypeOf(at::Tensor const& t)
{
    switch (t.scalar_type())
    {
    case at::kFloat: return carafe::DType::kFloat32;
    case at::kHalf: return carafe::DType::kFloat16;
    case at::kBFloat16: return carafe::DType::kBFloat16;
    case at::kDouble: return carafe::DType::kFloat64;
    default: TORCH_CHECK(false, "carafe CUDA kernels take float16, bfloat16, float32 or float64, got ", t.scalar_type());
    }
    return carafe::DType::kFloat32;
}

carafe::Geometry geometry(at::Tensor const& features, at::Tensor const& kernels, int64_t kernelSize, int64_t group,
    int64_t scale, std::string const& mode)
{
    TORCH_CHECK(features.is_cuda() && kernels.is_cuda(), "carafe CUDA kernels need CUDA tensors");
    TORCH_CHECK(features.dim() == 4 && kernels.dim() == 4, "features and kernels must be 4-D");
    TORCH_CHECK(features.scalar_type() == kernels.scalar_type(), "features and kernels must share a dtype");
    TORCH_CHECK(mode == "up" || mode == "down", "mode must be \"up\" or \"down\", got ", mode);
    carafe::Geometry const g = carafe::makeGeometry(features.size(0), features.size(1), features.size(2),
        features.size(3), static_cast<int32_t>(kernelSize), static_cast<int32_t>(group), static_cast<int32_t>(scale),
        mode == "up" ? carafe::Mode::kUp : carafe::Mode::kDown);
    TORCH_CHECK(kernels.size(0) == g.n && kernels.size(1) == carafe::kernelChannels(g) && kernels.size(2) == g.ho
            && kernels.size(3) == g.wo,
        "kernels shape ", kernels.sizes(), " does not match features ", features.sizes());
    return g;
}

void check(cudaError_t err, char const* what)
{
    TORCH_CHECK(err == cudaSuccess, "carafe ", what, " kernel failed: ", cudaGetErrorString(err));
}

at::Tensor forward(at::Tensor const& features, at::Tensor const& kernels, int64_t kernelSize, int64_t group,
    int64_t scale, std::string const& mode)
{
    carafe::Geometry const g = geometry(features, kernels, kernelSize, group, scale, mode);
    c10::cuda::CUDAGuard const guard(features.device());
    at::Tensor const f = features.contiguous();
    at::Tensor const k = kernels.contiguous();
    at::Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, f.options());
    check(carafe::launchForward(g, dtypeOf(f), f.data_ptr(), k.data_ptr(), out.data_ptr(),
              c10::cuda::getCurrentCUDAStream().stream()),
        "forward");
    return out;
}

std::vector<at::Tensor> backward(at::Tensor const& gradOutput, at::Tensor const& features, at::Tensor const& kernels,
    int64_t kernelSize, int64_t group, int64_t scale, std::string const& mode)
{
    carafe::Geometry const g = geometry(features, kernels, kernelSize, group, scale, mode);
    c10::cuda::CUDAGuard const guard(features.device());
    at::Tensor const go = gradOutput.to(features.scalar_type()).contiguous();
    at::Tensor const f = features.contiguous();
    at::Tensor const k = kernels.contiguous();
    at::Tensor gradFeatures = at::empty_like(f);
    at::Tensor gradKernels = at::empty_like(k);
    check(carafe::launchBackward(g, dtypeOf(f), go.data_ptr(), f.data_ptr(), k.data_ptr(), gradFeatures.data_ptr(),
              gradKernels.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
        "backward");
    return {gradFeatures, gradKernels};
}

std::string variant(at::Tensor const& features, at::Tensor const& kernels, int64_t kernelSize, int64_t group,
    int64_t scale, std::string const& mode)
{
    return carafe::forwardVariant(geometry(features, kernels, kernelSize, group, scale, mode), dtypeOf(features));
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("forward", &forward, "CARAFE forward (CUDA)");
    m.def("backward", &backward, "CARAFE backward (CUDA): (grad_features, grad_kernels)");
    m.def("variant", &variant, "name of the forward kernel used for these arguments");
}
