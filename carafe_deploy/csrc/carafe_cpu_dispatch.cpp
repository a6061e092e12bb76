// The run-time choice among the instruction-set builds of the CPU kernels (see carafe_cpu_dispatch.h).
#include "carafe_cpu_dispatch.h"

namespace carafe_cpu
{

char const* isaName(Isa isa)
{
    switch (isa)
    {
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kGeneric: break;
    }
    return "generic";
}

bool isaCompiled(Isa isa)
{
    return isa == Isa::kGeneric || CARAFE_CPU_X86_BUILDS;
}

bool isaSupported(Isa isa)
{
    if (!isaCompiled(isa))
    {
        return false;
    }
#if CARAFE_CPU_X86_BUILDS
    // __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0)
    __builtin_cpu_init();
    bool const avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    bool const avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    switch (isa)
    {
    case Isa::kAvx512Bf16: return avx512 && __builtin_cpu_supports("avx512bf16");
    case Isa::kAvx512: return avx512;
    case Isa::kAvx2: return avx2;
    case Isa::kGeneric: break;
    }
#endif
    return isa == Isa::kGeneric;
}

Isa bestIsa()
{
    static Isa const best = isaSupported(Isa::kAvx512Bf16) ? Isa::kAvx512Bf16
        : isaSupported(Isa::kAvx512)                        ? Isa::kAvx512
        : isaSupported(Isa::kAvx2)                          ? Isa::kAvx2
                                                            : Isa::kGeneric;
    return best;
}

void forward(Isa isa, DType dtype, Parallel const& parallel, Geometry const& g, void const* features,
    void const* kernels, void* out)
{
#if CARAFE_CPU_X86_BUILDS
    if (isa == Isa::kAvx512Bf16)
    {
        return isa_avx512bf16::forward(dtype, parallel, g, features, kernels, out);
    }
    if (isa == Isa::kAvx512)
    {
        return isa_avx512::forward(dtype, parallel, g, features, kernels, out);
    }
    if (isa == Isa::kAvx2)
    {
        return isa_avx2::forward(dtype, parallel, g, features, kernels, out);
    }
#endif
    (void)isa;
    isa_generic::forward(dtype, parallel, g, features, kernels, out);
}

void backward(Isa isa, DType dtype, Parallel const& parallel, Geometry const& g, void const* gradOut,
    void const* features, void const* kernels, void* gradFeatures, void* gradKernels)
{
#if CARAFE_CPU_X86_BUILDS
    if (isa == Isa::kAvx512Bf16)
    {
        return isa_avx512bf16::backward(dtype, parallel, g, gradOut, features, kernels, gradFeatures, gradKernels);
    }
    if (isa == Isa::kAvx512)
    {
        return isa_avx512::backward(dtype, parallel, g, gradOut, features, kernels, gradFeatures, gradKernels);
    }
    if (isa == Isa::kAvx2)
    {
        return isa_avx2::backward(dtype, parallel, g, gradOut, features, kernels, gradFeatures, gradKernels);
    }
#endif
    (void)isa;
    isa_generic::backward(dtype, parallel, g, gradOut, features, kernels, gradFeatures, gradKernels);
}

} // namespace carafe_cpu
