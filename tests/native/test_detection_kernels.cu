// The CUDA kernels of the detection plugins (MultiLevelRoIAlign, BatchedNMS) on a GPU, against the references of
// detection_kernel_cases.h (the same cases the CPU emulation runs). Exits 77 (CTest "skipped") without a GPU.
#include "detection_kernel_cases.h"
#include "device_values.h"

#include <cuda_runtime.h>

namespace detection_test
{
void* deviceAlloc(size_t bytes)
{
    void* p = nullptr;
    CUDA_OK(cudaMalloc(&p, bytes));
    return p;
}
void deviceFree(void* p)
{
    CUDA_OK(cudaFree(p));
}
void copyIn(void* device, void const* host, size_t bytes)
{
    CUDA_OK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
}
void copyOut(void* host, void const* device, size_t bytes)
{
    CUDA_OK(cudaDeviceSynchronize()); // the launches run on the default stream
    CUDA_OK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
}
} // namespace detection_test

int main()
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    {
        std::printf("no CUDA device: the detection kernels' GPU checks are skipped\n");
        return 77;
    }
    detection_test::runAll();
    CUDA_OK(cudaDeviceSynchronize());
    return TEST_RESULT();
}
