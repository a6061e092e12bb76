// Runs the CUDA kernels of carafe_kernels.cu on the CPU, for machines without a GPU (CI, dev boxes): every CUDA
// thread of a block is a std::thread, __syncthreads is a barrier across them, dynamic shared memory is a heap buffer
// of exactly the launch's size filled with NaN bytes, and blocks run one after another. Built with AddressSanitizer,
// an out-of-bounds global or shared-memory access is reported like compute-sanitizer memcheck would; reading shared
// memory no thread wrote shows up as NaN in the results.
//
// Include after carafe_cuda.h (the CUDA runtime types) and before carafe_kernels.cu; see test_kernels_emulated.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define CARAFE_HOST_EMULATION 1

namespace carafe_emulation
{

struct ThreadState
{
    uint3 threadIdx{};
    uint3 blockIdx{};
    dim3 blockDim{};
    dim3 gridDim{};
    void* shared{nullptr};
    struct Barrier* barrier{nullptr};
};

inline ThreadState& state()
{
    thread_local ThreadState s;
    return s;
}

// A reusable barrier (std::barrier needs C++20).
struct Barrier
{
    explicit Barrier(size_t count)
        : mCount(count)
    {
    }
    void arriveAndWait()
    {
        std::unique_lock<std::mutex> lock(mMutex);
        size_t const generation = mGeneration;
        if (++mArrived == mCount)
        {
            mArrived = 0;
            ++mGeneration;
            mCv.notify_all();
            return;
        }
        mCv.wait(lock, [&] { return generation != mGeneration; });
    }

private:
    std::mutex mMutex;
    std::condition_variable mCv;
    size_t mCount;
    size_t mArrived{0};
    size_t mGeneration{0};
};

inline void* sharedMemory()
{
    return state().shared;
}

inline void syncthreads()
{
    state().barrier->arriveAndWait();
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t sharedBytes, Args... args)
{
    size_t const threads = static_cast<size_t>(block.x) * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx)
            {
                std::vector<unsigned char> shared(sharedBytes, 0xFF); // NaN for float and double
                Barrier barrier(threads);
                std::vector<std::thread> pool;
                pool.reserve(threads);
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx)
                        {
                            pool.emplace_back([&, tx, ty, tz] {
                                ThreadState& s = state();
                                s.threadIdx = uint3{tx, ty, tz};
                                s.blockIdx = uint3{bx, by, bz};
                                s.blockDim = block;
                                s.gridDim = grid;
                                s.shared = sharedBytes ? shared.data() : nullptr;
                                s.barrier = &barrier;
                                kernel(args...);
                            });
                        }
                for (std::thread& t : pool)
                    t.join();
            }
}

inline cudaError_t getLastError()
{
    return cudaSuccess;
}
inline cudaError_t getDevice(int* device)
{
    *device = 0;
    return cudaSuccess;
}
// Few emulated SMs: the launch planner then still splits channels over several blocks, as it does on a real GPU for
// small shapes.
inline cudaError_t deviceGetAttribute(int* value, cudaDeviceAttr, int)
{
    *value = 2;
    return cudaSuccess;
}

template <typename T>
T ldg(T const* p)
{
    return *p;
}

} // namespace carafe_emulation

#define threadIdx (carafe_emulation::state().threadIdx)
#define blockIdx (carafe_emulation::state().blockIdx)
#define blockDim (carafe_emulation::state().blockDim)
#define gridDim (carafe_emulation::state().gridDim)
#define __syncthreads() carafe_emulation::syncthreads()
#define __ldg(p) carafe_emulation::ldg(p)
#define __launch_bounds__(...)
#define cudaGetLastError carafe_emulation::getLastError
#define cudaGetDevice carafe_emulation::getDevice
#define cudaDeviceGetAttribute carafe_emulation::deviceGetAttribute
#define CARAFE_LAUNCH(kernel, grid, block, shared, stream, ...)                                                        \
    ((void) (stream), carafe_emulation::launch(CARAFE_STRIP_PARENS kernel, dim3(grid), dim3(block), shared, __VA_ARGS__))

using std::fma;
using std::max;
using std::min;
