// Exposes mmcv's CARAFEForwardCUDAKernelLauncher (its NCHW->NHWC transposes, CARAFEForward, NHWC->NCHW transpose)
// to Python for the side-by-side benchmark. Buffers are allocated by the caller, once, as mmcv's CARAFEFunction does,
// so only mmcv's kernels are timed.
#include <torch/extension.h>

using at::Tensor;

void CARAFEForwardCUDAKernelLauncher(const Tensor features, const Tensor masks, Tensor rfeatures, Tensor routput,
    Tensor rmasks, Tensor output, const int kernel_size, const int group_size, const int scale_factor);

void forward(Tensor features, Tensor masks, Tensor rfeatures, Tensor routput, Tensor rmasks, Tensor output,
    int64_t kernel_size, int64_t group_size, int64_t scale_factor)
{
    CARAFEForwardCUDAKernelLauncher(features, masks, rfeatures, routput, rmasks, output, static_cast<int>(kernel_size),
        static_cast<int>(group_size), static_cast<int>(scale_factor));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("forward", &forward, "mmcv CARAFE forward on preallocated buffers");
}
