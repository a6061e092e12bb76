// The entry points of one instruction-set build of the kernels: included by carafe_cpu_isa_*.cpp (after their
// target pragma) with CARAFE_CPU_ISA_NAMESPACE (the kernels' namespace) and CARAFE_CPU_ENTRY_NAMESPACE set.
#pragma once

#include "carafe_cpu_kernels.h"

#include <type_traits>

namespace carafe_cpu
{
namespace CARAFE_CPU_ENTRY_NAMESPACE
{
namespace
{

// carafe_cpu_kernels.h's Runner over the type-erased Parallel of the dispatcher
struct ParallelRunner
{
    Parallel const& parallel;

    int64_t threads() const
    {
        return parallel.run ? parallel.threads : 1;
    }
    template <typename F>
    void run(int64_t n, F&& f) const
    {
        using Fn = std::remove_reference_t<F>;
        parallel.run(parallel.ctx, n, [](void* c) { (*static_cast<Fn*>(c))(); }, &f);
    }
};

template <typename F>
void withTypes(DType dtype, F&& f)
{
    switch (dtype)
    {
    case DType::kFloat32: f(static_cast<float*>(nullptr), static_cast<float*>(nullptr)); break;
    case DType::kFloat64: f(static_cast<double*>(nullptr), static_cast<double*>(nullptr)); break;
    case DType::kFloat16: f(static_cast<Half*>(nullptr), static_cast<float*>(nullptr)); break;
    case DType::kBFloat16: f(static_cast<BFloat16*>(nullptr), static_cast<float*>(nullptr)); break;
    }
}

} // namespace

void forward(DType dtype, Parallel const& parallel, Geometry const& g, void const* features, void const* kernels,
    void* out)
{
    withTypes(dtype,
        [&](auto* s, auto* a)
        {
            using S = std::remove_pointer_t<decltype(s)>;
            using A = std::remove_pointer_t<decltype(a)>;
            forwardKernel<S, A>(ParallelRunner{parallel}, g, static_cast<S const*>(features),
                static_cast<S const*>(kernels), static_cast<S*>(out));
        });
}

void backward(DType dtype, Parallel const& parallel, Geometry const& g, void const* gradOut, void const* features,
    void const* kernels, void* gradFeatures, void* gradKernels)
{
    withTypes(dtype,
        [&](auto* s, auto* a)
        {
            using S = std::remove_pointer_t<decltype(s)>;
            using A = std::remove_pointer_t<decltype(a)>;
            backwardKernel<S, A>(ParallelRunner{parallel}, g, static_cast<S const*>(gradOut),
                static_cast<S const*>(features), static_cast<S const*>(kernels), static_cast<S*>(gradFeatures),
                static_cast<S*>(gradKernels));
        });
}

} // namespace CARAFE_CPU_ENTRY_NAMESPACE
} // namespace carafe_cpu
