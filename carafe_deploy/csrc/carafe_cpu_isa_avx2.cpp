// The kernels for AVX2 + FMA + F16C (Haswell, Zen and later), selected at run time by carafe_cpu_dispatch.cpp.
// A target pragma rather than -m flags: the library is built with the platform's baseline flags, and only the code
// below may use these instructions. The standard headers come first so that their code stays baseline (it is shared
// by every build), and the kernels live in their own namespace (no template of this build can stand in for another's).
#include "carafe_cpu_dispatch.h"

#if CARAFE_CPU_X86_BUILDS

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#define CARAFE_CPU_VEC_BYTES 32
#define CARAFE_CPU_F16C 1
#define CARAFE_CPU_ISA_NAMESPACE kernels_avx2
#define CARAFE_CPU_ENTRY_NAMESPACE isa_avx2
#include "carafe_cpu_isa_entry.h"
#pragma GCC pop_options

#endif
