// The AVX-512 kernels once more with AVX512_BF16 (Cooper Lake, Sapphire Rapids, Zen 4 and later), selected at run time
// by carafe_cpu_dispatch.cpp where the CPU has it. Only bf16 outputs differ: the tiles round their fp32 results with
// one instruction (vcvtneps2bf16) and store them converted, where the AVX-512 build rounds with a dozen integer
// instructions and so stages fp32 rows for a separate pass (carafe_cpu_kernels.h, forwardKernel).
// The target pragma and header order are the AVX-512 build's (carafe_cpu_isa_avx512.cpp says why).
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
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c,bmi,bmi2")
#define CARAFE_CPU_VEC_BYTES 64
#define CARAFE_CPU_F16C 1
#define CARAFE_CPU_BF16 1
#define CARAFE_CPU_ISA_NAMESPACE kernels_avx512bf16
#define CARAFE_CPU_ENTRY_NAMESPACE isa_avx512bf16
#include "carafe_cpu_isa_entry.h"
#pragma GCC pop_options

#endif
