// The CUDA kernels of the detection plugins (MultiLevelRoIAlign, BatchedNMS) compiled for the CPU through
// cuda_host_emulation.h and run against the references of detection_kernel_cases.h. Built with AddressSanitizer and
// UBSan (CTest label "sanitized"), so every global and shared-memory access of the kernels is also checked for
// bounds, and their integer math for overflow: the buffers are malloc'ed at exactly their size. No GPU, no TensorRT.
#include "carafe_cuda.h"
#include "device_values.h" // cuda_runtime.h, before the emulation's threadIdx/blockIdx macros
#include "cuda_host_emulation.h"

#include "batchedNMSKernels.cu"
#include "roiAlignKernels.cu"

#include "detection_kernel_cases.h"

#include <cstdlib>

namespace detection_test
{
void* deviceAlloc(size_t bytes)
{
    return std::malloc(bytes);
}
void deviceFree(void* p)
{
    std::free(p);
}
void copyIn(void* device, void const* host, size_t bytes)
{
    if (bytes)
        std::memcpy(device, host, bytes);
}
void copyOut(void* host, void const* device, size_t bytes)
{
    if (bytes)
        std::memcpy(host, device, bytes);
}
} // namespace detection_test

int main()
{
    detection_test::runAll();
    return TEST_RESULT();
}
