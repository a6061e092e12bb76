// The CPU kernels behind one entry point that picks the instruction set at run time (no torch dependency).
//
// carafe_cpu_kernels.h is compiled four times into one library: carafe_cpu_isa_generic.cpp (the compiler's baseline
// for the platform), carafe_cpu_isa_avx2.cpp (AVX2 + FMA + F16C), carafe_cpu_isa_avx512.cpp (AVX-512 F/BW/DQ/VL) and
// carafe_cpu_isa_avx512bf16.cpp (the same and AVX512_BF16, whose one-instruction rounding to bf16 the others lack);
// the x86 builds use a target pragma, so the library needs no -m flags and runs on any CPU of its platform.
// carafe_cpu_dispatch.cpp chooses the widest one this CPU runs, unless told otherwise (tests force each one).
#pragma once

#include "carafe_cpu_geometry.h"

#include <cstdint>

// The AVX2 and AVX-512 builds need GCC's target pragma; other compilers (and other platforms) build only the generic
// kernels, which then run on every CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CARAFE_CPU_X86_BUILDS 1
#else
#define CARAFE_CPU_X86_BUILDS 0
#endif

namespace carafe_cpu
{

enum class Isa : int
{
    kGeneric = 0,
    kAvx2 = 1,
    kAvx512 = 2,
    kAvx512Bf16 = 3,
};

enum class DType : int
{
    kFloat32,
    kFloat64,
    kFloat16,
    kBFloat16,
};

// The threads a call may use: run(ctx, n, body, bodyCtx) calls body(bodyCtx) on n threads at once and returns when
// all have returned (the torch binding: at::parallel_for). run may be null when threads is 1.
struct Parallel
{
    int64_t threads = 1;
    void (*run)(void* ctx, int64_t n, void (*body)(void*), void* bodyCtx) = nullptr;
    void* ctx = nullptr;
};

char const* isaName(Isa isa);
bool isaCompiled(Isa isa);  // this build of the library has it (x86-64 with GCC: all four)
bool isaSupported(Isa isa); // compiled, and this CPU runs it
Isa bestIsa();              // the widest supported one

// Contiguous N C H W features, N (G k k) Ho Wo kernels and outputs of the geometry's shapes, all of one dtype;
// float16 and bfloat16 accumulate in float32.
void forward(Isa isa, DType dtype, Parallel const& parallel, Geometry const& g, void const* features,
    void const* kernels, void* out);
void backward(Isa isa, DType dtype, Parallel const& parallel, Geometry const& g, void const* gradOut,
    void const* features, void const* kernels, void* gradFeatures, void* gradKernels);

// One instruction set's entry points (defined by carafe_cpu_isa_entry.h in each carafe_cpu_isa_*.cpp).
#define CARAFE_CPU_DECLARE_ISA(ns)                                                                                     \
    namespace ns                                                                                                       \
    {                                                                                                                  \
    void forward(DType dtype, Parallel const& parallel, Geometry const& g, void const* features, void const* kernels,  \
        void* out);                                                                                                    \
    void backward(DType dtype, Parallel const& parallel, Geometry const& g, void const* gradOut, void const* features, \
        void const* kernels, void* gradFeatures, void* gradKernels);                                                  \
    }
CARAFE_CPU_DECLARE_ISA(isa_generic)
CARAFE_CPU_DECLARE_ISA(isa_avx2)
CARAFE_CPU_DECLARE_ISA(isa_avx512)
CARAFE_CPU_DECLARE_ISA(isa_avx512bf16)
#undef CARAFE_CPU_DECLARE_ISA

} // namespace carafe_cpu
