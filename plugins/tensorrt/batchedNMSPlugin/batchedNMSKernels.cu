// CUDA kernels of BatchedNMS, in four launches on one stream, without atomics (the result is deterministic):
//   1. fill: every output slot gets its "empty" value (box 0, score 0, label -1);
//   2. per (image, class), one block: compact the candidates (score > threshold) with a block-wide scan, sort them by
//      (score desc, row asc) by counting for each how many others come first, then the greedy sweep: the block walks
//      the sorted candidates and, for each one still standing, keeps it and lets its threads strike the later ones
//      it overlaps (one barrier per kept box); the kept rows are written in order;
//   3. per (image, class) again: each kept box finds its place among all classes' kept boxes of the image, its own
//      position plus, for every other class, a binary search in that class's sorted kept list; places below
//      max_per_image are written;
//   4. valid[n] = min(kept boxes of image n, max_per_image).
// The work is O(M^2 / threads) per class in the worst case (every row a candidate) and O(K log K) per kept box in 3.
#include "batchedNMSKernels.h"
#include "kernel_support.cuh"

namespace carafe
{
namespace nms
{
namespace
{

constexpr int kThreads = 256;
constexpr size_t kAlign = 256;

struct Box
{
    float x0, y0, x1, y1; // min / max corners
};

// Where each part of the workspace starts; every (image, class) segment has room for all M rows.
struct Workspace
{
    Box* sortedBoxes;
    float* candidateScores; // compacted candidates, later the kept ones
    int32_t* candidateRows;
    float* sortedScores;
    int32_t* sortedRows;
    uint8_t* removed;
    int32_t* keptCount; // per segment

    __host__ __device__ Workspace() {}
    __host__ __device__ Workspace(void* base, int64_t segments, int64_t m)
    {
        char* p = static_cast<char*>(base);
        size_t const slots = static_cast<size_t>(segments) * static_cast<size_t>(m);
        sortedBoxes = reinterpret_cast<Box*>(p);
        p += alignedSize(slots * sizeof(Box));
        candidateScores = reinterpret_cast<float*>(p);
        p += alignedSize(slots * sizeof(float));
        candidateRows = reinterpret_cast<int32_t*>(p);
        p += alignedSize(slots * sizeof(int32_t));
        sortedScores = reinterpret_cast<float*>(p);
        p += alignedSize(slots * sizeof(float));
        sortedRows = reinterpret_cast<int32_t*>(p);
        p += alignedSize(slots * sizeof(int32_t));
        removed = reinterpret_cast<uint8_t*>(p);
        p += alignedSize(slots);
        keptCount = reinterpret_cast<int32_t*>(p);
    }
    __host__ __device__ static size_t alignedSize(size_t bytes)
    {
        return (bytes + kAlign - 1) / kAlign * kAlign;
    }
    static size_t bytes(int64_t segments, int64_t m)
    {
        size_t const slots = static_cast<size_t>(segments) * static_cast<size_t>(m);
        return alignedSize(slots * sizeof(Box)) + 2 * alignedSize(slots * sizeof(float))
            + 2 * alignedSize(slots * sizeof(int32_t)) + alignedSize(slots)
            + alignedSize(static_cast<size_t>(segments) * sizeof(int32_t));
    }
};

// ONNX Runtime's NonMaxSuppression test: IoU > threshold, 0 when an area, the intersection or the union is not positive.
__device__ __forceinline__ bool suppresses(Box const& a, Box const& b, float threshold)
{
    float const areaA = kernels::mulRn(a.x1 - a.x0, a.y1 - a.y0);
    float const areaB = kernels::mulRn(b.x1 - b.x0, b.y1 - b.y0);
    float const iw = fmaxf(fminf(a.x1, b.x1) - fmaxf(a.x0, b.x0), 0.0F);
    float const ih = fmaxf(fminf(a.y1, b.y1) - fmaxf(a.y0, b.y0), 0.0F);
    float const inter = kernels::mulRn(ih, iw);
    float const uni = areaA + areaB - inter;
    if (!(inter > 0.0F) || !(areaA > 0.0F) || !(areaB > 0.0F) || !(uni > 0.0F))
    {
        return false;
    }
    return inter / uni > threshold;
}

template <typename T>
__device__ __forceinline__ Box loadBox(T const* p)
{
    float const x1 = kernels::toFloat(p[0]);
    float const y1 = kernels::toFloat(p[1]);
    float const x2 = kernels::toFloat(p[2]);
    float const y2 = kernels::toFloat(p[3]);
    return Box{fminf(x1, x2), fminf(y1, y2), fmaxf(x1, x2), fmaxf(y1, y2)};
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fillKernel(int64_t slots, T* outBoxes, T* outScores, int32_t* outLabels)
{
    int64_t const stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < slots; i += stride)
    {
        for (int q = 0; q < 4; ++q)
        {
            outBoxes[4 * i + q] = kernels::fromFloat<T>(0.0F);
        }
        outScores[i] = kernels::fromFloat<T>(0.0F);
        outLabels[i] = -1;
    }
}

// Inclusive block-wide sum of `value` (Hillis-Steele over two halves of `buffer`, 2 * blockDim ints); `total` gets
// the block's sum. Every thread must call it.
__device__ __forceinline__ int32_t blockScan(int32_t value, int32_t* buffer, int32_t& total)
{
    unsigned const tid = threadIdx.x;
    unsigned const n = blockDim.x;
    int in = 0;
    buffer[tid] = value;
    __syncthreads();
    for (unsigned offset = 1; offset < n; offset <<= 1)
    {
        int32_t v = buffer[in * n + tid];
        if (tid >= offset)
        {
            v += buffer[in * n + tid - offset];
        }
        buffer[(1 - in) * n + tid] = v;
        __syncthreads();
        in = 1 - in;
    }
    int32_t const mine = buffer[in * n + tid];
    total = buffer[in * n + n - 1];
    __syncthreads(); // the next call overwrites the buffer
    return mine;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) classNmsKernel(Params p, Shape s, T const* __restrict__ boxes,
    T const* __restrict__ scores, Workspace ws)
{
    int32_t* scan = kernels::sharedBuffer<int32_t>();
    unsigned const tid = threadIdx.x;
    int64_t const m = s.numBoxes;
    int64_t const segments = s.batch * s.numClasses;
    for (int64_t seg = blockIdx.x; seg < segments; seg += gridDim.x)
    {
        int64_t const n = seg / s.numClasses;
        int64_t const c = seg % s.numClasses;
        int64_t const base = seg * m;
        float* const candScores = ws.candidateScores + base;
        int32_t* const candRows = ws.candidateRows + base;
        float* const sortScores = ws.sortedScores + base;
        int32_t* const sortRows = ws.sortedRows + base;
        Box* const sortBoxes = ws.sortedBoxes + base;
        uint8_t* const removed = ws.removed + base;

        // 1. candidates, compacted in row order
        int32_t count = 0;
        for (int64_t start = 0; start < m; start += blockDim.x)
        {
            int64_t const row = start + tid;
            float const score = row < m ? kernels::toFloat(scores[(n * m + row) * s.numClasses + c]) : 0.0F;
            bool const candidate = row < m && score > p.scoreThreshold;
            int32_t total = 0;
            int32_t const position = blockScan(candidate ? 1 : 0, scan, total) - (candidate ? 1 : 0);
            if (candidate)
            {
                candScores[count + position] = score;
                candRows[count + position] = static_cast<int32_t>(row);
            }
            count += total;
        }
        __syncthreads();

        // 2. sorted by (score desc, row asc): each candidate's place is the number of candidates before it
        for (int32_t i = static_cast<int32_t>(tid); i < count; i += static_cast<int32_t>(blockDim.x))
        {
            float const si = candScores[i];
            int32_t const ri = candRows[i];
            int32_t rank = 0;
            for (int32_t j = 0; j < count; ++j)
            {
                float const sj = candScores[j];
                rank += (sj > si || (sj == si && candRows[j] < ri)) ? 1 : 0;
            }
            sortScores[rank] = si;
            sortRows[rank] = ri;
            int64_t const boxColumn = s.boxesPerRow == 1 ? 0 : c;
            sortBoxes[rank] = loadBox(boxes + ((n * m + ri) * s.boxesPerRow + boxColumn) * 4);
            removed[rank] = 0;
        }
        __syncthreads();

        // 3. greedy sweep; the kept rows overwrite the (now unused) candidate arrays, in order
        int32_t const limit = p.maxPerClass < 0 ? count : (p.maxPerClass < count ? p.maxPerClass : count);
        int32_t kept = 0;
        for (int32_t i = 0; i < count && kept < limit; ++i)
        {
            if (removed[i])
            {
                continue; // every thread reads the same flag: it was written before the last barrier
            }
            if (tid == 0)
            {
                candScores[kept] = sortScores[i];
                candRows[kept] = sortRows[i];
            }
            ++kept;
            Box const keptBox = sortBoxes[i];
            for (int32_t j = i + 1 + static_cast<int32_t>(tid); j < count; j += static_cast<int32_t>(blockDim.x))
            {
                if (!removed[j] && suppresses(keptBox, sortBoxes[j], p.iouThreshold))
                {
                    removed[j] = 1;
                }
            }
            __syncthreads();
        }
        if (tid == 0)
        {
            ws.keptCount[seg] = kept;
        }
        __syncthreads(); // the next segment reuses the shared scan buffer
    }
}

// How many of the kept boxes of segment `other` (sorted by score desc, row asc) come before (score, key) in the
// image's order (score desc, row * C + class asc).
__device__ __forceinline__ int32_t placesBefore(
    float const* keptScores, int32_t const* keptRows, int32_t keptCount, int64_t otherClass, int64_t classes,
    float score, int64_t key)
{
    int32_t lo = 0;
    int32_t hi = keptCount;
    while (lo < hi)
    {
        int32_t const mid = lo + (hi - lo) / 2;
        float const sm = keptScores[mid];
        bool const before = sm > score || (sm == score && keptRows[mid] * classes + otherClass < key);
        if (before)
        {
            lo = mid + 1;
        }
        else
        {
            hi = mid;
        }
    }
    return lo;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) mergeKernel(Params p, Shape s, T const* __restrict__ boxes,
    T const* __restrict__ scores, Workspace ws, T* outBoxes, T* outScores, int32_t* outLabels)
{
    int64_t const m = s.numBoxes;
    int64_t const classes = s.numClasses;
    int64_t const segments = s.batch * classes;
    for (int64_t seg = blockIdx.x; seg < segments; seg += gridDim.x)
    {
        int64_t const n = seg / classes;
        int64_t const c = seg % classes;
        int32_t const kept = ws.keptCount[seg];
        for (int32_t e = static_cast<int32_t>(threadIdx.x); e < kept; e += static_cast<int32_t>(blockDim.x))
        {
            float const score = ws.candidateScores[seg * m + e];
            int64_t const row = ws.candidateRows[seg * m + e];
            int64_t const key = row * classes + c;
            int64_t place = e;
            for (int64_t other = 0; other < classes && place < p.maxPerImage; ++other)
            {
                if (other != c)
                {
                    int64_t const o = n * classes + other;
                    place += placesBefore(ws.candidateScores + o * m, ws.candidateRows + o * m, ws.keptCount[o], other,
                        classes, score, key);
                }
            }
            if (place >= p.maxPerImage)
            {
                continue;
            }
            int64_t const slot = n * p.maxPerImage + place;
            int64_t const boxColumn = s.boxesPerRow == 1 ? 0 : c;
            T const* box = boxes + ((n * m + row) * s.boxesPerRow + boxColumn) * 4;
            for (int q = 0; q < 4; ++q)
            {
                outBoxes[4 * slot + q] = box[q];
            }
            outScores[slot] = scores[(n * m + row) * classes + c];
            outLabels[slot] = static_cast<int32_t>(c);
        }
    }
}

__global__ void __launch_bounds__(kThreads) validKernel(Params p, Shape s, Workspace ws, int32_t* outValid)
{
    int64_t const stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; n < s.batch; n += stride)
    {
        int64_t total = 0;
        for (int64_t c = 0; c < s.numClasses; ++c)
        {
            total += ws.keptCount[n * s.numClasses + c];
        }
        outValid[n] = static_cast<int32_t>(total < p.maxPerImage ? total : p.maxPerImage);
    }
}

template <typename T>
cudaError_t launchTyped(Params const& p, Shape const& s, void const* boxes, void const* scores, void* outBoxes,
    void* outScores, int32_t* outLabels, int32_t* outValid, void* workspace, cudaStream_t stream)
{
    int64_t const slots = s.batch * p.maxPerImage;
    CARAFE_LAUNCH((fillKernel<T>), kernels::blocksFor(slots, kThreads), kThreads, 0, stream, slots,
        static_cast<T*>(outBoxes), static_cast<T*>(outScores), outLabels);
    Workspace const ws(workspace, s.batch * s.numClasses, s.numBoxes);
    unsigned const segmentBlocks = kernels::blocksFor(s.batch * s.numClasses, 1);
    CARAFE_LAUNCH((classNmsKernel<T>), segmentBlocks, kThreads, 2 * kThreads * sizeof(int32_t), stream, p, s,
        static_cast<T const*>(boxes), static_cast<T const*>(scores), ws);
    CARAFE_LAUNCH((mergeKernel<T>), segmentBlocks, kThreads, 0, stream, p, s, static_cast<T const*>(boxes),
        static_cast<T const*>(scores), ws, static_cast<T*>(outBoxes), static_cast<T*>(outScores), outLabels);
    CARAFE_LAUNCH((validKernel), kernels::blocksFor(s.batch, kThreads), kThreads, 0, stream, p, s, ws, outValid);
    return cudaGetLastError();
}

} // namespace

size_t workspaceSize(Shape const& s) noexcept
{
    if (s.batch <= 0 || s.numClasses <= 0)
    {
        return 0;
    }
    return Workspace::bytes(s.batch * s.numClasses, s.numBoxes < 1 ? 1 : s.numBoxes);
}

cudaError_t launchBatchedNms(Params const& p, Shape const& s, DType type, void const* boxes, void const* scores,
    void* outBoxes, void* outScores, int32_t* outLabels, int32_t* outValid, void* workspace,
    cudaStream_t stream) noexcept
{
    if (s.batch < 0 || s.numBoxes < 0 || s.numClasses < 1 || (s.boxesPerRow != 1 && s.boxesPerRow != s.numClasses)
        || p.maxPerImage < 1)
    {
        return cudaErrorInvalidValue;
    }
    if (s.batch == 0)
    {
        return cudaSuccess;
    }
    if (workspace == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    // M = 0 still runs: every image gets empty slots and valid 0
    Shape const run{s.batch, s.numBoxes, s.numClasses, s.boxesPerRow};
    if (type == DType::kFloat32)
    {
        return launchTyped<float>(p, run, boxes, scores, outBoxes, outScores, outLabels, outValid, workspace, stream);
    }
    if (type == DType::kFloat16)
    {
        return launchTyped<__half>(p, run, boxes, scores, outBoxes, outScores, outLabels, outValid, workspace, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace nms
} // namespace carafe
