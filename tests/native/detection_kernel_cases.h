// Cases and references of the detection plugins' kernels (MultiLevelRoIAlign, BatchedNMS), shared by the CPU run
// (test_detection_kernels_emulated.cpp: the .cu files compiled through cuda_host_emulation.h under ASan+UBSan) and the
// GPU run (test_detection_kernels.cu). The references are written here, independently of the kernels, and the outputs
// are poisoned first (NaN / 0x7F bytes).
//
// RoIAlign reference: mmcv's RoIAlign / ONNX Runtime's RoiAlign (avg) per RoI and bin, with the RoI geometry and the
// sample positions in float32 (their arithmetic is part of the semantics: a sample count is ceil of a float32 ratio)
// and the bilinear weights and the average in float64; mmdetection's level mapping in float32.
// NMS reference: per image and class, candidates sorted by a stable sort on descending score, the greedy sweep with
// ONNX Runtime's IoU rule in float32, then every class's kept boxes sorted together; compared exactly (boxes and
// scores are copies of input values, labels and counts integers).
//
// Include after the kernels' launchers (batchedNMSKernels.h, roiAlignKernels.h); the including file defines the
// memory functions below (host memory for the emulation, device memory for the GPU).
#pragma once

#include "batchedNMSKernels.h"
#include "roiAlignKernels.h"

#include <cuda_fp16.h>

#include "check.h"
#include "device_values.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <memory>
#include <vector>

namespace detection_test
{

// Defined by the including test: where the kernels' buffers live.
void* deviceAlloc(size_t bytes);
void deviceFree(void* p);
void copyIn(void* device, void const* host, size_t bytes);
void copyOut(void* host, void const* device, size_t bytes);

// A device copy of a host vector, copied back with read().
template <typename T>
class Buffer
{
public:
    explicit Buffer(std::vector<T> const& host)
        : mCount(host.size())
        , mData(static_cast<T*>(deviceAlloc(std::max<size_t>(mCount, 1) * sizeof(T))))
    {
        copyIn(mData, host.data(), mCount * sizeof(T));
    }
    Buffer(Buffer const&) = delete;
    Buffer& operator=(Buffer const&) = delete;
    ~Buffer()
    {
        deviceFree(mData);
    }
    T* get() const
    {
        return mData;
    }
    void read(std::vector<T>& host) const
    {
        host.resize(mCount);
        copyOut(host.data(), mData, mCount * sizeof(T));
    }

private:
    size_t mCount;
    T* mData;
};

// float / __half <-> double, rounded as the device stores values
template <typename T>
T fromD(double v)
{
    return carafe_test::fromDouble<T>(v);
}
template <typename T>
double toD(T v)
{
    return carafe_test::toDouble(v);
}

template <typename T>
carafe::DType dtypeOf();
template <>
inline carafe::DType dtypeOf<float>()
{
    return carafe::DType::kFloat32;
}
template <>
inline carafe::DType dtypeOf<__half>()
{
    return carafe::DType::kFloat16;
}

template <typename T>
char const* typeName()
{
    return sizeof(T) == 4 ? "fp32" : "fp16";
}

inline int gCases = 0;

// ------------------------------------------------------------------------------------------------------------------
// MultiLevelRoIAlign

struct RoiCase
{
    char const* what;
    int n, c, numLevels, baseH, baseW, k, oh, ow, samplingRatio;
    float finestScale; // small scales spread these small images' RoIs over every level
    bool aligned;
    bool int64Indices;
};

// One plane's bilinear sample at (y, x) (float32 positions), weights and sum in double.
inline double sampleRef(double const* plane, int64_t h, int64_t w, float y, float x)
{
    if (y < -1.0F || y > static_cast<float>(h) || x < -1.0F || x > static_cast<float>(w))
        return 0.0;
    if (y <= 0.0F)
        y = 0.0F;
    if (x <= 0.0F)
        x = 0.0F;
    int64_t y0 = static_cast<int64_t>(std::floor(y));
    int64_t x0 = static_cast<int64_t>(std::floor(x));
    int64_t y1 = y0 + 1;
    int64_t x1 = x0 + 1;
    double fy = y;
    double fx = x;
    if (y0 >= h - 1)
    {
        y0 = y1 = h - 1;
        fy = static_cast<double>(y0);
    }
    if (x0 >= w - 1)
    {
        x0 = x1 = w - 1;
        fx = static_cast<double>(x0);
    }
    double const ly = fy - y0, lx = fx - x0, hy = 1 - ly, hx = 1 - lx;
    return hy * hx * plane[y0 * w + x0] + hy * lx * plane[y0 * w + x1] + ly * hx * plane[y1 * w + x0]
        + ly * lx * plane[y1 * w + x1];
}

inline int refLevel(float x1, float y1, float x2, float y2, float finest, int levels)
{
    float const area = (x2 - x1) * (y2 - y1);
    float const lv = std::floor(std::log2(std::sqrt(area) / finest + 1e-6F));
    if (std::isnan(lv))
        return -1;
    return static_cast<int>(std::min(std::max(lv, 0.0F), static_cast<float>(levels - 1)));
}

template <typename T>
void roiCase(RoiCase const& t, std::mt19937& rng, double tol, double& worstOut)
{
    carafe::roialign::Params p;
    p.outputHeight = t.oh;
    p.outputWidth = t.ow;
    p.samplingRatio = t.samplingRatio;
    p.aligned = t.aligned;
    p.finestScale = t.finestScale;
    p.numLevels = t.numLevels;
    std::uniform_real_distribution<double> unit(-1.0, 1.0);
    std::vector<std::vector<T>> feats(t.numLevels);
    std::vector<std::unique_ptr<Buffer<T>>> featsDev;
    std::vector<std::vector<double>> featsD(t.numLevels);
    carafe::roialign::Shape s{};
    s.numRois = t.k;
    s.batch = t.n;
    s.channels = t.c;
    int imageH = 0, imageW = 0;
    for (int l = 0; l < t.numLevels; ++l)
    {
        p.strides[l] = static_cast<float>(4 << l);
        int64_t const h = std::max(1, (t.baseH + (1 << l) - 1) >> l), w = std::max(1, (t.baseW + (1 << l) - 1) >> l);
        if (l == 0)
        {
            imageH = static_cast<int>(h * 4);
            imageW = static_cast<int>(w * 4);
        }
        feats[l].resize(static_cast<size_t>(t.n * t.c * h * w));
        featsD[l].resize(feats[l].size());
        for (size_t i = 0; i < feats[l].size(); ++i)
            featsD[l][i] = toD(feats[l][i] = fromD<T>(unit(rng)));
        featsDev.push_back(std::make_unique<Buffer<T>>(feats[l]));
        s.levels[l] = carafe::roialign::Level{featsDev.back()->get(), h, w};
    }
    // RoIs of every size class (so every level is used), some beyond the image, one empty, one reversed, one NaN,
    // one with a batch index out of range
    std::vector<T> rois(static_cast<size_t>(4 * t.k));
    std::vector<int64_t> batch(static_cast<size_t>(t.k));
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    for (int k = 0; k < t.k; ++k)
    {
        double const size = std::exp(std::log(2.0) + u01(rng) * std::log(std::max(imageH, imageW) * 1.5 / 2.0));
        double const cx = (u01(rng) * 1.2 - 0.1) * imageW, cy = (u01(rng) * 1.2 - 0.1) * imageH;
        double const aspect = std::exp((u01(rng) - 0.5) * 1.5);
        double box[4] = {cx - size * aspect / 2, cy - size / aspect / 2, cx + size * aspect / 2, cy + size / aspect / 2};
        if (k == 0)
            box[0] = box[1] = box[2] = box[3] = 0.0; // the detectors' "other level" RoI: pools to 0
        if (k == 1)
            std::swap(box[0], box[2]); // reversed: negative width
        if (k == 2)
            box[3] = NAN;
        for (int q = 0; q < 4; ++q)
            rois[4 * k + q] = fromD<T>(box[q]);
        batch[k] = k == 3 ? t.n : static_cast<int64_t>(u01(rng) * t.n) % t.n;
    }
    std::vector<int32_t> batch32(batch.begin(), batch.end());

    size_t const outCount = static_cast<size_t>(t.k) * t.c * t.oh * t.ow;
    std::vector<T> out(outCount, fromD<T>(NAN));
    Buffer<T> roisDev(rois), outDev(out);
    Buffer<int64_t> batchDev(batch);
    Buffer<int32_t> batch32Dev(batch32);
    cudaError_t const err = carafe::roialign::launchMultiLevelRoiAlign(p, s, dtypeOf<T>(), roisDev.get(),
        t.int64Indices ? static_cast<void const*>(batchDev.get()) : static_cast<void const*>(batch32Dev.get()),
        t.int64Indices, outDev.get(), nullptr);
    CHECK(err == cudaSuccess);
    outDev.read(out);

    double worst = 0;
    int levelsUsed[carafe::roialign::kMaxLevels] = {};
    for (int k = 0; k < t.k; ++k)
    {
        float const x1 = static_cast<float>(toD(rois[4 * k])), y1 = static_cast<float>(toD(rois[4 * k + 1]));
        float const x2 = static_cast<float>(toD(rois[4 * k + 2])), y2 = static_cast<float>(toD(rois[4 * k + 3]));
        int const level = refLevel(x1, y1, x2, y2, p.finestScale, t.numLevels);
        bool const zero = level < 0 || batch[k] < 0 || batch[k] >= t.n;
        if (!zero)
            ++levelsUsed[level];
        int64_t const h = zero ? 1 : s.levels[level].height, w = zero ? 1 : s.levels[level].width;
        float const scale = zero ? 1.0F : static_cast<float>(1.0 / (4 << level));
        float const off = t.aligned ? 0.5F : 0.0F;
        float const sw = x1 * scale - off, sh = y1 * scale - off;
        float rw = (x2 * scale - off) - sw, rh = (y2 * scale - off) - sh;
        if (!t.aligned)
        {
            rw = std::max(rw, 1.0F);
            rh = std::max(rh, 1.0F);
        }
        float const bh = rh / t.oh, bw = rw / t.ow;
        int const gh = t.samplingRatio > 0 ? t.samplingRatio : std::max(0, static_cast<int>(std::ceil(rh / t.oh)));
        int const gw = t.samplingRatio > 0 ? t.samplingRatio : std::max(0, static_cast<int>(std::ceil(rw / t.ow)));
        for (int c = 0; c < t.c; ++c)
        {
            double const* plane = zero ? nullptr : featsD[level].data() + (batch[k] * t.c + c) * h * w;
            for (int ph = 0; ph < t.oh; ++ph)
                for (int pw = 0; pw < t.ow; ++pw)
                {
                    double want = 0;
                    if (!zero)
                    {
                        for (int iy = 0; iy < gh; ++iy)
                        {
                            float const y = sh + ph * bh + (iy + 0.5F) * bh / gh;
                            for (int ix = 0; ix < gw; ++ix)
                            {
                                float const x = sw + pw * bw + (ix + 0.5F) * bw / gw;
                                want += sampleRef(plane, h, w, y, x);
                            }
                        }
                        want /= std::max(gh * gw, 1);
                    }
                    double const got = toD(out[((static_cast<size_t>(k) * t.c + c) * t.oh + ph) * t.ow + pw]);
                    double const r = std::isfinite(got) ? std::fabs(got - want) / (tol + tol * std::fabs(want)) : INFINITY;
                    worst = std::max(worst, r);
                }
        }
    }
    std::printf("roi_align %-4s %-40s K=%3d C=%d L=%d %2dx%-2d sr=%d %-17s idx%s levels used:", typeName<T>(), t.what,
        t.k, t.c, t.numLevels, t.oh, t.ow, t.samplingRatio, carafe::roialign::coordinateModeName(t.aligned),
        t.int64Indices ? "64" : "32");
    for (int l = 0; l < t.numLevels; ++l)
        std::printf(" %d", levelsUsed[l]);
    std::printf("  worst=%.3f\n", worst);
    CHECK_MSG(worst <= 1.0, "roi_align %s %s", typeName<T>(), t.what);
    worstOut = std::max(worstOut, worst);
    ++gCases;
}

// ------------------------------------------------------------------------------------------------------------------
// BatchedNMS

struct NmsCase
{
    char const* what;
    int n, m, c;
    bool sharedBoxes;
    float scoreThreshold, iouThreshold;
    int maxPerClass, maxPerImage;
    int scoreLevels; // > 0: scores quantized to this many values (ties)
};

struct Det
{
    float score;
    int64_t row, cls;
};

inline bool refSuppresses(float const a[4], float const b[4], float thr)
{
    float const ax0 = std::min(a[0], a[2]), ax1 = std::max(a[0], a[2]), ay0 = std::min(a[1], a[3]), ay1 = std::max(a[1], a[3]);
    float const bx0 = std::min(b[0], b[2]), bx1 = std::max(b[0], b[2]), by0 = std::min(b[1], b[3]), by1 = std::max(b[1], b[3]);
    float const areaA = (ax1 - ax0) * (ay1 - ay0), areaB = (bx1 - bx0) * (by1 - by0);
    float const iw = std::max(std::min(ax1, bx1) - std::max(ax0, bx0), 0.0F);
    float const ih = std::max(std::min(ay1, by1) - std::max(ay0, by0), 0.0F);
    float const inter = ih * iw;
    float const uni = areaA + areaB - inter;
    if (inter <= 0 || areaA <= 0 || areaB <= 0 || uni <= 0)
        return false;
    return inter / uni > thr;
}

template <typename T>
void nmsCase(NmsCase const& t, std::mt19937& rng, int& detectionsOut)
{
    int const cb = t.sharedBoxes ? 1 : t.c;
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    std::vector<T> boxes(static_cast<size_t>(t.n) * t.m * cb * 4), scores(static_cast<size_t>(t.n) * t.m * t.c);
    // boxes in a few clusters so that many overlap; some flipped, some degenerate
    for (size_t b = 0; b < boxes.size() / 4; ++b)
    {
        double const cx = 20 + 60 * std::floor(u01(rng) * 4) + u01(rng) * 12, cy = 20 + 60 * std::floor(u01(rng) * 3) + u01(rng) * 12;
        double const w = 8 + u01(rng) * 40, h = 8 + u01(rng) * 40;
        double box[4] = {cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2};
        double const r = u01(rng);
        if (r < 0.05)
            std::swap(box[0], box[2]);
        else if (r < 0.08)
            box[2] = box[0]; // zero width: never suppresses, never suppressed
        for (int q = 0; q < 4; ++q)
            boxes[4 * b + q] = fromD<T>(box[q]);
    }
    for (T& s : scores)
    {
        double v = u01(rng);
        if (t.scoreLevels > 0)
            v = std::floor(v * t.scoreLevels) / t.scoreLevels;
        s = fromD<T>(v * 2.0 - 0.5);
    }

    carafe::nms::Params p;
    p.scoreThreshold = t.scoreThreshold;
    p.iouThreshold = t.iouThreshold;
    p.maxPerClass = t.maxPerClass;
    p.maxPerImage = t.maxPerImage;
    carafe::nms::Shape const s{t.n, t.m, t.c, cb};
    size_t const slots = static_cast<size_t>(t.n) * t.maxPerImage;
    std::vector<T> outBoxes(4 * slots, fromD<T>(NAN)), outScores(slots, fromD<T>(NAN));
    std::vector<int32_t> outLabels(slots, 0x7F7F7F7F), outValid(static_cast<size_t>(t.n), 0x7F7F7F7F);
    std::vector<unsigned char> workspace(carafe::nms::workspaceSize(s), 0xA5);
    Buffer<T> boxesDev(boxes), scoresDev(scores), outBoxesDev(outBoxes), outScoresDev(outScores);
    Buffer<int32_t> outLabelsDev(outLabels), outValidDev(outValid);
    Buffer<unsigned char> workspaceDev(workspace);
    cudaError_t const err = carafe::nms::launchBatchedNms(p, s, dtypeOf<T>(), boxesDev.get(), scoresDev.get(),
        outBoxesDev.get(), outScoresDev.get(), outLabelsDev.get(), outValidDev.get(), workspaceDev.get(), nullptr);
    CHECK(err == cudaSuccess);
    outBoxesDev.read(outBoxes);
    outScoresDev.read(outScores);
    outLabelsDev.read(outLabels);
    outValidDev.read(outValid);

    int mismatches = 0, total = 0;
    for (int n = 0; n < t.n; ++n)
    {
        std::vector<Det> all;
        for (int c = 0; c < t.c; ++c)
        {
            std::vector<Det> cand;
            for (int m = 0; m < t.m; ++m)
            {
                float const sc = static_cast<float>(toD(scores[(static_cast<size_t>(n) * t.m + m) * t.c + c]));
                if (sc > t.scoreThreshold)
                    cand.push_back(Det{sc, m, c});
            }
            std::stable_sort(cand.begin(), cand.end(), [](Det const& a, Det const& b) { return a.score > b.score; });
            std::vector<Det> kept;
            auto boxOf = [&](int64_t m, float out[4]) {
                for (int q = 0; q < 4; ++q)
                    out[q] = static_cast<float>(toD(boxes[((static_cast<size_t>(n) * t.m + m) * cb + (cb == 1 ? 0 : c)) * 4 + q]));
            };
            for (Det const& d : cand)
            {
                if (t.maxPerClass >= 0 && static_cast<int>(kept.size()) >= t.maxPerClass)
                    break;
                float bd[4], bk[4];
                boxOf(d.row, bd);
                bool suppressed = false;
                for (Det const& k : kept)
                {
                    boxOf(k.row, bk);
                    suppressed = suppressed || refSuppresses(bk, bd, t.iouThreshold);
                }
                if (!suppressed)
                    kept.push_back(d);
            }
            all.insert(all.end(), kept.begin(), kept.end());
        }
        std::sort(all.begin(), all.end(), [&](Det const& a, Det const& b) {
            return a.score > b.score || (a.score == b.score && a.row * t.c + a.cls < b.row * t.c + b.cls);
        });
        int const valid = std::min<int>(static_cast<int>(all.size()), t.maxPerImage);
        total += valid;
        mismatches += outValid[n] != valid;
        for (int slot = 0; slot < t.maxPerImage; ++slot)
        {
            size_t const o = static_cast<size_t>(n) * t.maxPerImage + slot;
            if (slot < valid)
            {
                Det const& d = all[static_cast<size_t>(slot)];
                T const* want = &boxes[((static_cast<size_t>(n) * t.m + d.row) * cb + (cb == 1 ? 0 : d.cls)) * 4];
                T const wantScore = scores[(static_cast<size_t>(n) * t.m + d.row) * t.c + d.cls];
                bool const same = outLabels[o] == d.cls && std::memcmp(&outScores[o], &wantScore, sizeof(T)) == 0
                    && std::memcmp(&outBoxes[4 * o], want, 4 * sizeof(T)) == 0;
                mismatches += !same;
            }
            else
            {
                bool const empty = outLabels[o] == -1 && toD(outScores[o]) == 0.0 && toD(outBoxes[4 * o]) == 0.0
                    && toD(outBoxes[4 * o + 1]) == 0.0 && toD(outBoxes[4 * o + 2]) == 0.0 && toD(outBoxes[4 * o + 3]) == 0.0;
                mismatches += !empty;
            }
        }
    }
    std::printf("batched_nms %-4s %-40s N=%d M=%4d C=%2d %s thr=%5.2f iou=%.2f per_class=%3d per_image=%3d: %4d "
                "detections, %d mismatches\n",
        typeName<T>(), t.what, t.n, t.m, t.c, t.sharedBoxes ? "shared" : "per-class", t.scoreThreshold, t.iouThreshold,
        t.maxPerClass, t.maxPerImage, total, mismatches);
    CHECK_MSG(mismatches == 0, "batched_nms %s %s", typeName<T>(), t.what);
    detectionsOut += total;
    ++gCases;
}

// Runs every case; the result is in check.h's failure count.
inline void runAll()
{
    std::mt19937 rng(28);
    // Small on purpose: every CUDA thread is an OS thread here.
    RoiCase const roiCases[] = {
        {"detector bbox head (4 levels, adaptive)", 2, 3, 4, 24, 31, 40, 7, 7, 0, 8.0F, true, true},
        {"mmdet's finest_scale 56", 1, 2, 4, 60, 50, 16, 7, 7, 0, 56.0F, true, false},
        {"detector mask head (14x14)", 1, 2, 4, 20, 20, 12, 14, 14, 0, 6.0F, true, false},
        {"fixed sampling ratio 2", 2, 2, 3, 17, 13, 24, 5, 3, 2, 5.0F, true, true},
        {"output_half_pixel (aligned=False)", 1, 3, 4, 19, 26, 24, 7, 7, 0, 8.0F, false, true},
        {"one level, 1x1 output", 3, 1, 1, 9, 7, 16, 1, 1, 0, 56.0F, true, false},
        {"1x1 feature maps", 1, 2, 2, 1, 1, 10, 3, 2, 0, 2.0F, true, true},
    };
    double worstRoi32 = 0, worstRoi16 = 0;
    for (RoiCase const& t : roiCases)
    {
        roiCase<float>(t, rng, 1e-5, worstRoi32);
        roiCase<__half>(t, rng, 2e-3, worstRoi16);
    }
    NmsCase const nmsCases[] = {
        {"detector head (per-class boxes, thr 0.05)", 2, 60, 4, false, 0.05F, 0.5F, -1, 20, 0},
        {"RPN-like (shared boxes, thr -1)", 1, 150, 3, true, -1.0F, 0.7F, -1, 100, 0},
        {"score ties (quantized scores)", 2, 80, 3, false, 0.0F, 0.5F, -1, 50, 8},
        {"max_per_class 3", 1, 90, 5, true, 0.1F, 0.3F, 3, 40, 0},
        {"max_per_image larger than the kept", 2, 20, 2, false, 0.9F, 0.5F, -1, 64, 0},
        {"iou_threshold 0 (any overlap suppresses)", 1, 70, 2, true, -0.5F, 0.0F, -1, 30, 0},
        {"iou_threshold 1 (nothing suppressed)", 1, 40, 2, false, 0.0F, 1.0F, -1, 100, 4},
        {"more rows than one block of threads", 1, 300, 1, true, 0.2F, 0.5F, -1, 300, 0},
        {"no boxes (M = 0)", 2, 0, 3, false, 0.0F, 0.5F, -1, 5, 0},
        {"one class, one slot", 3, 25, 1, true, 0.0F, 0.5F, 1, 1, 0},
    };
    int detections32 = 0, detections16 = 0;
    for (NmsCase const& t : nmsCases)
    {
        nmsCase<float>(t, rng, detections32);
        nmsCase<__half>(t, rng, detections16);
    }
    std::printf("summary: %d cases; roi_align worst |err| / (tol + tol |ref|): fp32 %.3f (tol 1e-5), fp16 %.3f (tol 2e-3); "
                "batched_nms: %d fp32 + %d fp16 detections compared exactly\n",
        gCases, worstRoi32, worstRoi16, detections32, detections16);
}

} // namespace detection_test
