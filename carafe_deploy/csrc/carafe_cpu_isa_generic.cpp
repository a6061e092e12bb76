// The kernels for the compiler's baseline of the platform (SSE2 on x86-64, NEON on AArch64): any CPU runs them.
#include "carafe_cpu_dispatch.h"

#define CARAFE_CPU_VEC_BYTES 16
#define CARAFE_CPU_F16C 0
#define CARAFE_CPU_ISA_NAMESPACE kernels_generic
#define CARAFE_CPU_ENTRY_NAMESPACE isa_generic
#include "carafe_cpu_isa_entry.h"
