// CUDA kernel of MultiLevelRoIAlign: one thread per output element (RoI, channel, bin), which picks the RoI's FPN
// level, samples that level's feature map bilinearly on the bin's grid and averages. Sampling and border rules are
// mmcv's RoIAlign (= ONNX Runtime's RoiAlign, avg mode) in float32; the float products are rounded one by one
// (kernels::mulRn) so that a GPU computes the sample positions and the level as a CPU does.
#include "kernel_support.cuh"
#include "roiAlignKernels.h"

namespace carafe
{
namespace roialign
{
namespace
{

constexpr int kThreads = 256;

struct KernelParams
{
    int32_t outputHeight;
    int32_t outputWidth;
    int32_t samplingRatio;
    int32_t numLevels;
    float finestScale;
    float offset; // 0.5 for half_pixel (aligned), 0 otherwise
    bool aligned;
    float scales[kMaxLevels]; // 1 / featmap_strides, rounded once from double as the PyTorch op does
};

// mmdetection's level of a RoI (see roiAlignParams.h); -1 when it is not a number.
__device__ __forceinline__ int32_t roiLevel(float x1, float y1, float x2, float y2, KernelParams const& p)
{
    float const scale = sqrtf(kernels::mulRn(x2 - x1, y2 - y1));
    float const lv = floorf(log2f(scale / p.finestScale + 1e-6F));
    if (!(lv == lv))
    {
        return -1;
    }
    return static_cast<int32_t>(fminf(fmaxf(lv, 0.0F), static_cast<float>(p.numLevels - 1)));
}

// Bilinear sample of one (H, W) plane at (y, x) with mmcv's border rules; float accumulation.
template <typename T>
__device__ __forceinline__ float bilinear(T const* plane, int64_t height, int64_t width, float y, float x)
{
    if (y < -1.0F || y > static_cast<float>(height) || x < -1.0F || x > static_cast<float>(width))
    {
        return 0.0F;
    }
    y = fmaxf(y, 0.0F);
    x = fmaxf(x, 0.0F);
    int64_t yLow = static_cast<int64_t>(y);
    int64_t xLow = static_cast<int64_t>(x);
    int64_t yHigh = yLow + 1;
    int64_t xHigh = xLow + 1;
    if (yLow >= height - 1)
    {
        yHigh = yLow = height - 1;
        y = static_cast<float>(yLow);
    }
    if (xLow >= width - 1)
    {
        xHigh = xLow = width - 1;
        x = static_cast<float>(xLow);
    }
    float const ly = y - static_cast<float>(yLow);
    float const lx = x - static_cast<float>(xLow);
    float const hy = 1.0F - ly;
    float const hx = 1.0F - lx;
    float const v1 = kernels::toFloat(plane[yLow * width + xLow]);
    float const v2 = kernels::toFloat(plane[yLow * width + xHigh]);
    float const v3 = kernels::toFloat(plane[yHigh * width + xLow]);
    float const v4 = kernels::toFloat(plane[yHigh * width + xHigh]);
    return kernels::mulRn(hy * hx, v1) + kernels::mulRn(hy * lx, v2) + kernels::mulRn(ly * hx, v3)
        + kernels::mulRn(ly * lx, v4);
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) multiLevelRoiAlignKernel(KernelParams p, Shape s, T const* __restrict__ rois,
    I const* __restrict__ batchIndices, T* __restrict__ output)
{
    int64_t const ow = p.outputWidth;
    int64_t const oh = p.outputHeight;
    int64_t const total = s.numRois * s.channels * oh * ow;
    int64_t const stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride)
    {
        int64_t const pw = idx % ow;
        int64_t const ph = (idx / ow) % oh;
        int64_t const c = (idx / (ow * oh)) % s.channels;
        int64_t const k = idx / (ow * oh * s.channels);
        float const x1 = kernels::toFloat(rois[4 * k]);
        float const y1 = kernels::toFloat(rois[4 * k + 1]);
        float const x2 = kernels::toFloat(rois[4 * k + 2]);
        float const y2 = kernels::toFloat(rois[4 * k + 3]);
        int64_t const b = static_cast<int64_t>(batchIndices[k]);
        int32_t const level = roiLevel(x1, y1, x2, y2, p);
        Level const lv = s.levels[level < 0 ? 0 : level];
        if (level < 0 || b < 0 || b >= s.batch || lv.height < 1 || lv.width < 1)
        {
            output[idx] = kernels::fromFloat<T>(0.0F);
            continue;
        }
        float const scale = p.scales[level];
        float const startW = kernels::mulRn(x1, scale) - p.offset;
        float const startH = kernels::mulRn(y1, scale) - p.offset;
        float roiW = (kernels::mulRn(x2, scale) - p.offset) - startW;
        float roiH = (kernels::mulRn(y2, scale) - p.offset) - startH;
        if (!p.aligned)
        {
            roiW = fmaxf(roiW, 1.0F);
            roiH = fmaxf(roiH, 1.0F);
        }
        float const binH = roiH / static_cast<float>(oh);
        float const binW = roiW / static_cast<float>(ow);
        int32_t const gridH
            = p.samplingRatio > 0 ? p.samplingRatio : static_cast<int32_t>(fmaxf(ceilf(roiH / static_cast<float>(oh)), 0.0F));
        int32_t const gridW
            = p.samplingRatio > 0 ? p.samplingRatio : static_cast<int32_t>(fmaxf(ceilf(roiW / static_cast<float>(ow)), 0.0F));
        T const* plane = static_cast<T const*>(lv.features) + (b * s.channels + c) * lv.height * lv.width;
        float sum = 0.0F;
        for (int32_t iy = 0; iy < gridH; ++iy)
        {
            float const y = startH + kernels::mulRn(static_cast<float>(ph), binH)
                + kernels::mulRn(static_cast<float>(iy) + 0.5F, binH) / static_cast<float>(gridH);
            for (int32_t ix = 0; ix < gridW; ++ix)
            {
                float const x = startW + kernels::mulRn(static_cast<float>(pw), binW)
                    + kernels::mulRn(static_cast<float>(ix) + 0.5F, binW) / static_cast<float>(gridW);
                sum += bilinear(plane, lv.height, lv.width, y, x);
            }
        }
        int32_t const count = gridH * gridW > 1 ? gridH * gridW : 1;
        output[idx] = kernels::fromFloat<T>(sum / static_cast<float>(count));
    }
}

template <typename T, typename I>
cudaError_t launchTyped(KernelParams const& kp, Shape const& s, void const* rois, void const* batchIndices, void* output,
    cudaStream_t stream)
{
    int64_t const total = s.numRois * s.channels * kp.outputHeight * kp.outputWidth;
    if (total == 0)
    {
        return cudaSuccess;
    }
    CARAFE_LAUNCH((multiLevelRoiAlignKernel<T, I>), kernels::blocksFor(total, kThreads), kThreads, 0, stream, kp, s,
        static_cast<T const*>(rois), static_cast<I const*>(batchIndices), static_cast<T*>(output));
    return cudaGetLastError();
}

} // namespace

cudaError_t launchMultiLevelRoiAlign(Params const& p, Shape const& s, DType type, void const* rois,
    void const* batchIndices, bool int64Indices, void* output, cudaStream_t stream) noexcept
{
    if (p.numLevels < 1 || p.numLevels > kMaxLevels || s.numRois < 0 || s.channels < 0 || s.batch < 0)
    {
        return cudaErrorInvalidValue;
    }
    KernelParams kp{};
    kp.outputHeight = p.outputHeight;
    kp.outputWidth = p.outputWidth;
    kp.samplingRatio = p.samplingRatio;
    kp.numLevels = p.numLevels;
    kp.finestScale = p.finestScale;
    kp.aligned = p.aligned;
    kp.offset = p.aligned ? 0.5F : 0.0F;
    for (int32_t l = 0; l < p.numLevels; ++l)
    {
        kp.scales[l] = static_cast<float>(1.0 / static_cast<double>(p.strides[l]));
    }
    if (type == DType::kFloat32)
    {
        return int64Indices ? launchTyped<float, int64_t>(kp, s, rois, batchIndices, output, stream)
                            : launchTyped<float, int32_t>(kp, s, rois, batchIndices, output, stream);
    }
    if (type == DType::kFloat16)
    {
        return int64Indices ? launchTyped<__half, int64_t>(kp, s, rois, batchIndices, output, stream)
                            : launchTyped<__half, int32_t>(kp, s, rois, batchIndices, output, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace roialign
} // namespace carafe
