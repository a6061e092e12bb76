// CUDA kernels of the CARAFE / CARAFE++ operator.
//
// The forward pass is memory-bound: per output element it reads k*k kernel weights that all C/G channels of a group
// share, and k*k features that neighbouring outputs share. The fast kernels therefore
//   * give each thread one source position and a run of channels, load that position's k*k (times s*s for "up")
//     weights into registers once and reuse them for every channel of the run;
//   * stage each channel's feature tile (block area plus halo) in shared memory as float, so a feature is read from
//     DRAM once per block, converted to float once, and every tap reads shared memory without bank conflicts;
//   * write outputs coalesced along W (for "up", the s=2 horizontal pair as one vector store).
// Configurations without a fast path ("up" unless s = 2 and k is 3 or 5; "down" unless k is 3, 5 or 7; tiles that do
// not fit 48 KiB of shared memory) use a one-thread-per-output kernel that reads through the read-only cache. All
// index math comes from carafe_geometry.h.

#include "carafe_cuda.h"
#include "kernel_support.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>

// Kernel launches go through CARAFE_LAUNCH (kernel_support.cuh) so that tests/native/cuda_host_emulation.h can run
// these same kernels on the CPU (one std::thread per CUDA thread) under AddressSanitizer, where no GPU is available.
// `kernel` is parenthesized at the call sites (template arguments contain commas).

namespace carafe
{
namespace
{

constexpr int kThreads = 256;
constexpr int kUpThreads = 128; // see tiledBlock
constexpr int kChannelsPerRound = 4; // channels staged in shared memory between two barriers
constexpr size_t kMaxSharedBytes = 48 * 1024;

// Arithmetic type: float32 for the float types (CONTRACT §1: fp32 accumulation), float64 for double (used by gradcheck).
template <typename T>
struct Cvt;

template <>
struct Cvt<double>
{
    using Acc = double;
    static __device__ __forceinline__ double toFloat(double v)
    {
        return v;
    }
    static __device__ __forceinline__ double fromFloat(double v)
    {
        return v;
    }
    static __device__ __forceinline__ void storePair(double* p, double a, double b)
    {
        *reinterpret_cast<double2*>(p) = make_double2(a, b);
    }
};

template <>
struct Cvt<float>
{
    using Acc = float;
    static __device__ __forceinline__ float toFloat(float v)
    {
        return v;
    }
    static __device__ __forceinline__ float fromFloat(float v)
    {
        return v;
    }
    static __device__ __forceinline__ void storePair(float* p, float a, float b)
    {
        *reinterpret_cast<float2*>(p) = make_float2(a, b);
    }
};

template <>
struct Cvt<__half>
{
    using Acc = float;
    static __device__ __forceinline__ float toFloat(__half v)
    {
        return __half2float(v);
    }
    static __device__ __forceinline__ __half fromFloat(float v)
    {
        return __float2half_rn(v);
    }
    static __device__ __forceinline__ void storePair(__half* p, float a, float b)
    {
        *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
    }
};

template <>
struct Cvt<__nv_bfloat16>
{
    using Acc = float;
    static __device__ __forceinline__ float toFloat(__nv_bfloat16 v)
    {
        return __bfloat162float(v);
    }
    static __device__ __forceinline__ __nv_bfloat16 fromFloat(float v)
    {
        return __float2bfloat16_rn(v);
    }
    static __device__ __forceinline__ void storePair(__nv_bfloat16* p, float a, float b)
    {
        *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
    }
};

template <typename T>
using AccOf = typename Cvt<T>::Acc;

template <typename T>
__device__ __forceinline__ AccOf<T> load(T const* p)
{
    return Cvt<T>::toFloat(__ldg(p));
}

// Decomposes a block-uniform work index z into (n, group, channel range) for channel chunks of `chunk` channels.
struct ChannelRun
{
    int64_t n;
    int32_t grp;
    int64_t c0, c1;
};

__device__ __forceinline__ ChannelRun channelRun(Geometry const& g, int64_t z, int64_t chunk, int64_t chunksPerGroup)
{
    ChannelRun run;
    int64_t const perSample = g.group * chunksPerGroup;
    run.n = z / perSample;
    int64_t const rem = z - run.n * perSample;
    run.grp = static_cast<int32_t>(rem / chunksPerGroup);
    int64_t const ch = rem - run.grp * chunksPerGroup;
    int64_t const cg = channelsPerGroup(g);
    run.c0 = run.grp * cg + ch * chunk;
    run.c1 = min(run.c0 + chunk, (run.grp + 1) * cg);
    return run;
}

// ---------------------------------------------------------------------------------------------------------------
// "up" with s = 2: a thread owns source pixel (sy, sx) and its 2x2 output block (4*K*K weights in registers).
// Block: TX x TY source pixels (128 threads); shared tile per channel: (TY + K - 1) x (TX + K - 1) values.
template <typename T, int K>
__global__ void __launch_bounds__(kUpThreads, 3) upS2Kernel(Geometry g, T const* __restrict__ features,
    T const* __restrict__ kernels, T* __restrict__ output, int64_t chunk, int64_t chunksPerGroup, bool pairAligned)
{
    constexpr int S = 2;
    constexpr int R = K / 2;
    constexpr int KK = K * K;
    using A = AccOf<T>;
    A* const tile = kernels::sharedBuffer<A>();

    int const tx = threadIdx.x;
    int const ty = threadIdx.y;
    int const TX = blockDim.x;
    int const TY = blockDim.y;
    int const TW = TX + K - 1;
    int const TH = TY + K - 1;
    int64_t const sx0 = static_cast<int64_t>(blockIdx.x) * TX;
    int64_t const sy0 = static_cast<int64_t>(blockIdx.y) * TY;
    int64_t const sx = sx0 + tx;
    int64_t const sy = sy0 + ty;
    bool const active = sx < g.w && sy < g.h;
    int64_t const work = g.n * g.group * chunksPerGroup;

    for (int64_t z = blockIdx.z; z < work; z += gridDim.z)
    {
        ChannelRun const run = channelRun(g, z, chunk, chunksPerGroup);
        A w[S * S][KK];
        if (active)
        {
#pragma unroll
            for (int t = 0; t < KK; ++t)
            {
                int64_t const kc = kernelChannel(run.grp, t / K, t % K, K);
#pragma unroll
                for (int a = 0; a < S; ++a)
                {
#pragma unroll
                    for (int b = 0; b < S; ++b)
                    {
                        w[a * S + b][t] = load(kernels + kernelIndex(g, run.n, kc, sy * S + a, sx * S + b));
                    }
                }
            }
        }
        for (int64_t cb = run.c0; cb < run.c1; cb += kChannelsPerRound)
        {
            int const nc = static_cast<int>(min(static_cast<int64_t>(kChannelsPerRound), run.c1 - cb));
            __syncthreads(); // the previous round's readers are done with the tile
            for (int row = ty; row < nc * TH; row += TY)
            {
                int const cc = row / TH;
                int64_t const y = sy0 - R + (row - cc * TH);
                for (int col = tx; col < TW; col += TX)
                {
                    int64_t const x = sx0 - R + col;
                    tile[row * TW + col]
                        = inside(y, x, g.h, g.w) ? load(features + featureIndex(g, run.n, cb + cc, y, x)) : A(0);
                }
            }
            __syncthreads();
            if (!active)
            {
                continue;
            }
            for (int cc = 0; cc < nc; ++cc)
            {
                A acc[S * S];
#pragma unroll
                for (int q = 0; q < S * S; ++q)
                {
                    acc[q] = A(0);
                }
                A const* tp = tile + (cc * TH + ty) * TW + tx;
#pragma unroll
                for (int ky = 0; ky < K; ++ky)
                {
#pragma unroll
                    for (int kx = 0; kx < K; ++kx)
                    {
                        A const f = tp[ky * TW + kx];
#pragma unroll
                        for (int q = 0; q < S * S; ++q)
                        {
                            acc[q] = fma(w[q][ky * K + kx], f, acc[q]);
                        }
                    }
                }
#pragma unroll
                for (int a = 0; a < S; ++a)
                {
                    T* o = output + outputIndex(g, run.n, cb + cc, sy * S + a, sx * S);
                    if (pairAligned)
                    {
                        Cvt<T>::storePair(o, acc[a * S], acc[a * S + 1]);
                    }
                    else
                    {
                        o[0] = Cvt<T>::fromFloat(acc[a * S]);
                        o[1] = Cvt<T>::fromFloat(acc[a * S + 1]);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// "down" (any s): a thread owns output (yo, xo), centred on source (s*yo, s*xo); K*K weights in registers.
// The shared tile stores each row's columns phase by phase (all x = 0 mod s, then 1 mod s, ...) so that the threads
// of a warp, whose taps are s columns apart in the source, read consecutive shared-memory words.
template <typename T, int K>
__global__ void __launch_bounds__(kThreads) downKernel(Geometry g, T const* __restrict__ features,
    T const* __restrict__ kernels, T* __restrict__ output, int64_t chunk, int64_t chunksPerGroup)
{
    constexpr int R = K / 2;
    constexpr int KK = K * K;
    using A = AccOf<T>;
    A* const tile = kernels::sharedBuffer<A>();

    int const S = g.scale;
    int const tx = threadIdx.x;
    int const ty = threadIdx.y;
    int const TX = blockDim.x;
    int const TY = blockDim.y;
    int const TW = (TX - 1) * S + K;
    int const TH = (TY - 1) * S + K;
    int const P = (TW + S - 1) / S; // columns per phase
    int const rowStride = P * S;
    int64_t const xo = static_cast<int64_t>(blockIdx.x) * TX + tx;
    int64_t const yo = static_cast<int64_t>(blockIdx.y) * TY + ty;
    int64_t const x0 = static_cast<int64_t>(blockIdx.x) * TX * S - R;
    int64_t const y0 = static_cast<int64_t>(blockIdx.y) * TY * S - R;
    bool const active = xo < g.wo && yo < g.ho;
    int64_t const work = g.n * g.group * chunksPerGroup;

    int colOffset[K];
#pragma unroll
    for (int kx = 0; kx < K; ++kx)
    {
        colOffset[kx] = (kx % S) * P + kx / S + tx;
    }

    for (int64_t z = blockIdx.z; z < work; z += gridDim.z)
    {
        ChannelRun const run = channelRun(g, z, chunk, chunksPerGroup);
        A w[KK];
        if (active)
        {
#pragma unroll
            for (int t = 0; t < KK; ++t)
            {
                w[t] = load(kernels + kernelIndex(g, run.n, kernelChannel(run.grp, t / K, t % K, K), yo, xo));
            }
        }
        for (int64_t cb = run.c0; cb < run.c1; cb += kChannelsPerRound)
        {
            int const nc = static_cast<int>(min(static_cast<int64_t>(kChannelsPerRound), run.c1 - cb));
            __syncthreads();
            for (int row = ty; row < nc * TH; row += TY)
            {
                int const cc = row / TH;
                int64_t const y = y0 + (row - cc * TH);
                A* dst = tile + row * rowStride;
                for (int phase = 0; phase < S; ++phase)
                {
                    for (int q = tx; q < P; q += TX)
                    {
                        int const col = q * S + phase;
                        int64_t const x = x0 + col;
                        dst[phase * P + q] = (col < TW && inside(y, x, g.h, g.w))
                            ? load(features + featureIndex(g, run.n, cb + cc, y, x))
                            : A(0);
                    }
                }
            }
            __syncthreads();
            if (!active)
            {
                continue;
            }
            for (int cc = 0; cc < nc; ++cc)
            {
                A acc = A(0);
                A const* tp = tile + (cc * TH + ty * S) * rowStride;
#pragma unroll
                for (int ky = 0; ky < K; ++ky)
                {
#pragma unroll
                    for (int kx = 0; kx < K; ++kx)
                    {
                        acc = fma(w[ky * K + kx], tp[ky * rowStride + colOffset[kx]], acc);
                    }
                }
                output[outputIndex(g, run.n, cb + cc, yo, xo)] = Cvt<T>::fromFloat(acc);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fallback: one thread per output element, any k and s, reads through the read-only cache.
template <typename T>
__global__ void __launch_bounds__(kThreads) genericForwardKernel(Geometry g, T const* __restrict__ features,
    T const* __restrict__ kernels, T* __restrict__ output)
{
    int64_t const total = outputCount(g);
    int32_t const r = g.k / 2;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int64_t const xo = i % g.wo;
        int64_t const yo = (i / g.wo) % g.ho;
        int64_t const c = (i / (g.wo * g.ho)) % g.c;
        int64_t const n = i / (g.wo * g.ho * g.c);
        int32_t const grp = groupOfChannel(g, c);
        int64_t const cy = windowCentre(yo, g.scale, g.mode);
        int64_t const cx = windowCentre(xo, g.scale, g.mode);
        AccOf<T> acc = 0;
        for (int32_t ky = 0; ky < g.k; ++ky)
        {
            int64_t const y = cy + ky - r;
            for (int32_t kx = 0; kx < g.k; ++kx)
            {
                int64_t const x = cx + kx - r;
                if (inside(y, x, g.h, g.w))
                {
                    acc = fma(load(kernels + kernelIndex(g, n, kernelChannel(grp, ky, kx, g.k), yo, xo)),
                        load(features + featureIndex(g, n, c, y, x)), acc);
                }
            }
        }
        output[i] = Cvt<T>::fromFloat(acc);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward. grad_features gathers (no atomics, deterministic): source pixel (y, x) received tap (ky, kx) from every
// output whose window centre is (y - dy, x - dx).
template <typename T>
__global__ void __launch_bounds__(kThreads) gradFeaturesKernel(Geometry g, T const* __restrict__ gradOutput,
    T const* __restrict__ kernels, T* __restrict__ gradFeatures)
{
    int64_t const total = featureCount(g);
    int32_t const r = g.k / 2;
    // Window centres exist on the source grid for "up" and on the stride grid (inside the output) for "down".
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int64_t const x = i % g.w;
        int64_t const y = (i / g.w) % g.h;
        int64_t const c = (i / (g.w * g.h)) % g.c;
        int64_t const n = i / (g.w * g.h * g.c);
        int32_t const grp = groupOfChannel(g, c);
        AccOf<T> acc = 0;
        for (int32_t ky = 0; ky < g.k; ++ky)
        {
            int64_t const cy = y - (ky - r);
            if (cy < 0 || cy >= g.h)
            {
                continue;
            }
            int64_t oy0 = 0;
            int64_t ny = 0;
            outputsOfCentre(cy, g.scale, g.mode, g.ho, oy0, ny);
            for (int32_t kx = 0; kx < g.k; ++kx)
            {
                int64_t const cx = x - (kx - r);
                if (cx < 0 || cx >= g.w)
                {
                    continue;
                }
                int64_t ox0 = 0;
                int64_t nx = 0;
                outputsOfCentre(cx, g.scale, g.mode, g.wo, ox0, nx);
                int64_t const kc = kernelChannel(grp, ky, kx, g.k);
                for (int64_t oy = oy0; oy < oy0 + ny; ++oy)
                {
                    for (int64_t ox = ox0; ox < ox0 + nx; ++ox)
                    {
                        acc = fma(load(kernels + kernelIndex(g, n, kc, oy, ox)),
                            load(gradOutput + outputIndex(g, n, c, oy, ox)), acc);
                    }
                }
            }
        }
        gradFeatures[i] = Cvt<T>::fromFloat(acc);
    }
}

// grad_kernels[n, g*k*k + t, yo, xo] = sum over the group's channels of grad_output * the feature tap t reads.
template <typename T>
__global__ void __launch_bounds__(kThreads) gradKernelsKernel(Geometry g, T const* __restrict__ gradOutput,
    T const* __restrict__ features, T* __restrict__ gradKernels)
{
    int64_t const total = kernelCount(g);
    int32_t const r = g.k / 2;
    int64_t const kk = static_cast<int64_t>(g.k) * g.k;
    int64_t const cg = channelsPerGroup(g);
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int64_t const xo = i % g.wo;
        int64_t const yo = (i / g.wo) % g.ho;
        int64_t const kc = (i / (g.wo * g.ho)) % kernelChannels(g);
        int64_t const n = i / (g.wo * g.ho * kernelChannels(g));
        int64_t const grp = kc / kk;
        int32_t const t = static_cast<int32_t>(kc - grp * kk);
        int64_t const y = windowCentre(yo, g.scale, g.mode) + t / g.k - r;
        int64_t const x = windowCentre(xo, g.scale, g.mode) + t % g.k - r;
        AccOf<T> acc = 0;
        if (inside(y, x, g.h, g.w))
        {
            for (int64_t c = grp * cg; c < (grp + 1) * cg; ++c)
            {
                acc = fma(load(gradOutput + outputIndex(g, n, c, yo, xo)), load(features + featureIndex(g, n, c, y, x)),
                    acc);
            }
        }
        gradKernels[i] = Cvt<T>::fromFloat(acc);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Launch planning.

int multiprocessorCount()
{
    static std::atomic<int> cached[64] = {};
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64)
    {
        return 108;
    }
    int v = cached[device].load(std::memory_order_relaxed);
    if (v == 0)
    {
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || v <= 0)
        {
            v = 108;
        }
        cached[device].store(v, std::memory_order_relaxed);
    }
    return v;
}

int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

enum class Variant
{
    kUpS2K3,
    kUpS2K5,
    kDownK3,
    kDownK5,
    kDownK7,
    kGeneric,
};

struct TiledPlan
{
    dim3 block;
    size_t sharedBytes;
};

// Block shape for the tiled kernels, 32 positions wide (16 when the tiled extent is narrow). The "up" kernel keeps
// 4*k*k weights in registers (about 166 registers at k = 5), so its blocks are 128 threads: three fit on an SM and
// one block's tile loads overlap another's arithmetic. The "down" kernel (about 64 registers) uses 256 threads.
dim3 tiledBlock(int64_t width, bool up)
{
    if (up)
    {
        return width <= 16 ? dim3(16, 8, 1) : dim3(32, 4, 1);
    }
    return width <= 16 ? dim3(16, 16, 1) : dim3(32, 8, 1);
}

size_t tileBytesPerChannel(Variant v, Geometry const& g, dim3 block, size_t accBytes)
{
    int64_t const k = g.k;
    if (v == Variant::kUpS2K3 || v == Variant::kUpS2K5)
    {
        return static_cast<size_t>((block.y + k - 1) * (block.x + k - 1)) * accBytes;
    }
    int64_t const s = g.scale;
    int64_t const tw = (block.x - 1) * s + k;
    int64_t const th = (block.y - 1) * s + k;
    return static_cast<size_t>(th * ceilDiv(tw, s) * s) * accBytes;
}

Variant chooseVariant(Geometry const& g, size_t accBytes)
{
    Variant v = Variant::kGeneric;
    if (g.mode == Mode::kUp && g.scale == 2)
    {
        v = g.k == 3 ? Variant::kUpS2K3 : g.k == 5 ? Variant::kUpS2K5 : Variant::kGeneric;
    }
    else if (g.mode == Mode::kDown || g.scale == 1) // s = 1 is the same operator in both modes
    {
        v = g.k == 3 ? Variant::kDownK3 : g.k == 5 ? Variant::kDownK5 : g.k == 7 ? Variant::kDownK7 : Variant::kGeneric;
    }
    if (v != Variant::kGeneric)
    {
        bool const up = v == Variant::kUpS2K3 || v == Variant::kUpS2K5;
        if (tileBytesPerChannel(v, g, tiledBlock(up ? g.w : g.wo, up), accBytes) * kChannelsPerRound > kMaxSharedBytes)
        {
            v = Variant::kGeneric;
        }
    }
    return v;
}

template <typename T>
cudaError_t forwardTyped(Geometry const& g, T const* features, T const* kernels, T* output, cudaStream_t stream)
{
    if (outputCount(g) == 0)
    {
        return cudaSuccess;
    }
    Variant const v = chooseVariant(g, sizeof(AccOf<T>));
    int const sms = multiprocessorCount();
    if (v == Variant::kGeneric)
    {
        int64_t const blocks = std::min<int64_t>(ceilDiv(outputCount(g), kThreads), static_cast<int64_t>(sms) * 64);
        CARAFE_LAUNCH((genericForwardKernel<T>), static_cast<unsigned>(blocks), kThreads, 0, stream,
            g, features, kernels, output);
        return cudaGetLastError();
    }
    bool const up = v == Variant::kUpS2K3 || v == Variant::kUpS2K5;
    // Up: one thread per source pixel. Down (and s = 1): one thread per output pixel.
    int64_t const tiledH = up ? g.h : g.ho;
    int64_t const tiledW = up ? g.w : g.wo;
    dim3 const block = tiledBlock(tiledW, up);
    int64_t const gx = ceilDiv(tiledW, block.x);
    int64_t const gy = ceilDiv(tiledH, block.y);
    // chooseVariant guarantees that one round of kChannelsPerRound channel tiles fits in shared memory.
    size_t const shared = tileBytesPerChannel(v, g, block, sizeof(AccOf<T>)) * kChannelsPerRound;
    if (gx > 0x7fffffff || gy > 65535)
    {
        int64_t const blocks = std::min<int64_t>(ceilDiv(outputCount(g), kThreads), static_cast<int64_t>(sms) * 64);
        CARAFE_LAUNCH((genericForwardKernel<T>), static_cast<unsigned>(blocks), kThreads, 0, stream,
            g, features, kernels, output);
        return cudaGetLastError();
    }
    // Channels per block: as many as possible (weights are loaded once per block) while still giving every SM
    // several blocks; never below one shared-memory round.
    int64_t const cg = channelsPerGroup(g);
    int64_t chunk = cg;
    int64_t const planes = gx * gy * g.n * g.group;
    while (chunk > kChannelsPerRound && planes * ceilDiv(cg, chunk) < static_cast<int64_t>(sms) * 4)
    {
        chunk = std::max<int64_t>(kChannelsPerRound, ceilDiv(chunk, 2));
    }
    int64_t const chunksPerGroup = ceilDiv(cg, chunk);
    int64_t const work = g.n * g.group * chunksPerGroup;
    dim3 const grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy),
        static_cast<unsigned>(std::min<int64_t>(work, 65535)));
    bool const pairAligned = reinterpret_cast<uintptr_t>(output) % (2 * sizeof(T)) == 0;
    switch (v)
    {
    case Variant::kUpS2K3:
        CARAFE_LAUNCH((upS2Kernel<T, 3>), grid, block, shared, stream,
            g, features, kernels, output, chunk, chunksPerGroup, pairAligned);
        break;
    case Variant::kUpS2K5:
        CARAFE_LAUNCH((upS2Kernel<T, 5>), grid, block, shared, stream,
            g, features, kernels, output, chunk, chunksPerGroup, pairAligned);
        break;
    case Variant::kDownK3:
        CARAFE_LAUNCH((downKernel<T, 3>), grid, block, shared, stream,
            g, features, kernels, output, chunk, chunksPerGroup);
        break;
    case Variant::kDownK5:
        CARAFE_LAUNCH((downKernel<T, 5>), grid, block, shared, stream,
            g, features, kernels, output, chunk, chunksPerGroup);
        break;
    case Variant::kDownK7:
        CARAFE_LAUNCH((downKernel<T, 7>), grid, block, shared, stream,
            g, features, kernels, output, chunk, chunksPerGroup);
        break;
    case Variant::kGeneric: break;
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t backwardTyped(Geometry const& g, T const* gradOutput, T const* features, T const* kernels,
    T* gradFeatures, T* gradKernels, cudaStream_t stream)
{
    int64_t const cap = static_cast<int64_t>(multiprocessorCount()) * 64;
    if (gradFeatures != nullptr && featureCount(g) > 0)
    {
        int64_t const blocks = std::min<int64_t>(ceilDiv(featureCount(g), kThreads), cap);
        CARAFE_LAUNCH((gradFeaturesKernel<T>), static_cast<unsigned>(blocks), kThreads, 0, stream,
            g, gradOutput, kernels, gradFeatures);
        cudaError_t const e = cudaGetLastError();
        if (e != cudaSuccess)
        {
            return e;
        }
    }
    if (gradKernels != nullptr && kernelCount(g) > 0)
    {
        int64_t const blocks = std::min<int64_t>(ceilDiv(kernelCount(g), kThreads), cap);
        CARAFE_LAUNCH((gradKernelsKernel<T>), static_cast<unsigned>(blocks), kThreads, 0, stream,
            g, gradOutput, features, gradKernels);
        return cudaGetLastError();
    }
    return cudaSuccess;
}

} // namespace

cudaError_t launchForward(Geometry const& g, DType type, void const* features, void const* kernels, void* output,
    cudaStream_t stream) noexcept
{
    switch (type)
    {
    case DType::kFloat32:
        return forwardTyped(g, static_cast<float const*>(features), static_cast<float const*>(kernels),
            static_cast<float*>(output), stream);
    case DType::kFloat16:
        return forwardTyped(g, static_cast<__half const*>(features), static_cast<__half const*>(kernels),
            static_cast<__half*>(output), stream);
    case DType::kFloat64:
        return forwardTyped(g, static_cast<double const*>(features), static_cast<double const*>(kernels),
            static_cast<double*>(output), stream);
    case DType::kBFloat16:
        return forwardTyped(g, static_cast<__nv_bfloat16 const*>(features),
            static_cast<__nv_bfloat16 const*>(kernels), static_cast<__nv_bfloat16*>(output), stream);
    }
    return cudaErrorInvalidValue;
}

cudaError_t launchBackward(Geometry const& g, DType type, void const* gradOutput, void const* features,
    void const* kernels, void* gradFeatures, void* gradKernels, cudaStream_t stream) noexcept
{
    switch (type)
    {
    case DType::kFloat32:
        return backwardTyped(g, static_cast<float const*>(gradOutput), static_cast<float const*>(features),
            static_cast<float const*>(kernels), static_cast<float*>(gradFeatures), static_cast<float*>(gradKernels),
            stream);
    case DType::kFloat16:
        return backwardTyped(g, static_cast<__half const*>(gradOutput), static_cast<__half const*>(features),
            static_cast<__half const*>(kernels), static_cast<__half*>(gradFeatures), static_cast<__half*>(gradKernels),
            stream);
    case DType::kFloat64:
        return backwardTyped(g, static_cast<double const*>(gradOutput), static_cast<double const*>(features),
            static_cast<double const*>(kernels), static_cast<double*>(gradFeatures), static_cast<double*>(gradKernels),
            stream);
    case DType::kBFloat16:
        return backwardTyped(g, static_cast<__nv_bfloat16 const*>(gradOutput),
            static_cast<__nv_bfloat16 const*>(features), static_cast<__nv_bfloat16 const*>(kernels),
            static_cast<__nv_bfloat16*>(gradFeatures), static_cast<__nv_bfloat16*>(gradKernels), stream);
    }
    return cudaErrorInvalidValue;
}

char const* forwardVariant(Geometry const& g, DType type) noexcept
{
    switch (chooseVariant(g, type == DType::kFloat64 ? sizeof(double) : sizeof(float)))
    {
    case Variant::kUpS2K3: return "up_s2_k3";
    case Variant::kUpS2K5: return "up_s2_k5";
    case Variant::kDownK3: return "down_k3";
    case Variant::kDownK5: return "down_k5";
    case Variant::kDownK7: return "down_k7";
    case Variant::kGeneric: return "generic";
    }
    return "generic";
}

} // namespace carafe
