// CPU kernels of carafe_deploy::carafe (forward and backward), JIT-compiled by carafe_deploy/ops/_cpu.py and
// registered as carafe_deploy_cpu::forward / carafe_deploy_cpu::backward. The Python op (carafe_deploy/ops/carafe.py)
// validates the arguments with messages for the user; the checks here only keep the memory accesses in bounds.
//
// Layout of the work (CONTRACT §1 semantics; N C H W, kernels N (G k k) Ho Wo):
// - Output rows are split into bands; one band of one (image, group) is one work item. The items are taken from an
//   atomic counter inside a single at::parallel_for region, so a descheduled thread never holds up the others and a
//   call opens exactly one parallel section (torch's own thread pool: torch.set_num_threads applies).
// - Each source row of a channel is "expanded" once per band into a buffer in which every tap column kx is a
//   contiguous run of Wo values (mode up: the nearest-upsampled row, tap kx starts at s·kx; mode down: the row split
//   into its s phases, tap kx starts at phase kx%s, column kx/s). The inner loops are then plain contiguous FMAs over
//   output columns, with the kernel weights of a tap loaded once per vector and reused across a block of channels.
// - Half types accumulate in float (at::opmath_type), float64 in float64.
// - The backward has the same structure: grad_kernels of a band is owned by it (summed over the group's channels);
//   grad_features of the source rows a band owns are gathered from every output row that reads them, so no two
//   items write the same memory and no atomics are needed.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "carafe_cpu_kernels.h"

namespace
{

using carafe_cpu::Geometry;

// at::parallel_for over n chunks of one: one OpenMP region on torch's pool, each of its threads runs f() once
struct AtenRunner
{
    int64_t threads() const
    {
        return std::max<int64_t>(1, at::get_num_threads());
    }
    template <typename F>
    void run(int64_t n, F&& f) const
    {
        at::parallel_for(0, n, 1, [&](int64_t, int64_t) { f(); });
    }
};

// ------------------------------------------------------------------------------------------------------------------
// Entry points.

Geometry checkedGeometry(at::Tensor const& features, at::Tensor const& kernels, int64_t kernelSize, int64_t group,
    int64_t scale, std::string const& mode)
{
    TORCH_CHECK(
        features.device().is_cpu() && kernels.device().is_cpu(), "carafe CPU kernel: tensors must be on the CPU");
    TORCH_CHECK(features.dim() == 4 && kernels.dim() == 4, "carafe CPU kernel: features and kernels must be 4-D");
    TORCH_CHECK(features.scalar_type() == kernels.scalar_type(), "carafe CPU kernel: dtypes differ");
    TORCH_CHECK(mode == "up" || mode == "down", "carafe CPU kernel: mode must be 'up' or 'down', got ", mode);
    TORCH_CHECK(kernelSize >= 1 && kernelSize % 2 == 1, "carafe CPU kernel: kernel_size must be odd and >= 1");
    TORCH_CHECK(group >= 1 && scale >= 1, "carafe CPU kernel: group and scale_factor must be >= 1");
    TORCH_CHECK(features.size(1) % group == 0, "carafe CPU kernel: channels must be divisible by group");
    Geometry const g = carafe_cpu::makeGeometry(features.size(0), features.size(1), features.size(2),
        features.size(3), kernelSize, group, scale, mode == "up");
    TORCH_CHECK(kernels.size(0) == g.n && kernels.size(1) == group * g.taps && kernels.size(2) == g.ho
            && kernels.size(3) == g.wo,
        "carafe CPU kernel: kernels shape ", kernels.sizes(), " does not match features ", features.sizes());
    return g;
}

at::Tensor forward(at::Tensor const& features, at::Tensor const& kernels, int64_t kernelSize, int64_t group,
    int64_t scale, std::string const& mode)
{
    Geometry const g = checkedGeometry(features, kernels, kernelSize, group, scale, mode);
    at::Tensor const x = features.contiguous();
    at::Tensor const k = kernels.contiguous();
    at::Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, x.options().memory_format(at::MemoryFormat::Contiguous));
    if (out.numel() == 0)
    {
        return out;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "carafe_cpu_forward",
        [&]
        {
            carafe_cpu::forwardKernel<scalar_t, at::opmath_type<scalar_t>>(AtenRunner{}, g,
                x.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
        });
    return out;
}

std::tuple<at::Tensor, at::Tensor> backward(at::Tensor const& gradOutput, at::Tensor const& features,
    at::Tensor const& kernels, int64_t kernelSize, int64_t group, int64_t scale, std::string const& mode)
{
    Geometry const g = checkedGeometry(features, kernels, kernelSize, group, scale, mode);
    TORCH_CHECK(gradOutput.dim() == 4 && gradOutput.size(0) == g.n && gradOutput.size(1) == g.c
            && gradOutput.size(2) == g.ho && gradOutput.size(3) == g.wo,
        "carafe CPU kernel: grad_output shape ", gradOutput.sizes(), " is not the output shape");
    at::Tensor const go = gradOutput.to(features.scalar_type()).contiguous();
    at::Tensor const x = features.contiguous();
    at::Tensor const k = kernels.contiguous();
    auto const contiguous = x.options().memory_format(at::MemoryFormat::Contiguous);
    at::Tensor gradX = at::empty({g.n, g.c, g.h, g.w}, contiguous); // the kernel writes every element
    if (go.numel() == 0)
    {
        return {gradX, at::zeros(k.sizes(), contiguous)}; // C = 0 leaves kernels with no gradient: zero
    }
    at::Tensor gradK = at::empty(k.sizes(), contiguous);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "carafe_cpu_backward",
        [&]
        {
            carafe_cpu::backwardKernel<scalar_t, at::opmath_type<scalar_t>>(AtenRunner{}, g,
                go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
                gradX.mutable_data_ptr<scalar_t>(), gradK.mutable_data_ptr<scalar_t>());
        });
    return {gradX, gradK};
}

} // namespace

TORCH_LIBRARY(carafe_deploy_cpu, m)
{
    m.def("forward(Tensor features, Tensor kernels, int kernel_size, int group, int scale_factor, str mode) -> Tensor");
    m.def("backward(Tensor grad_output, Tensor features, Tensor kernels, int kernel_size, int group, int scale_factor, "
          "str mode) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(carafe_deploy_cpu, CPU, m)
{
    m.impl("forward", &forward);
    m.impl("backward", &backward);
}
