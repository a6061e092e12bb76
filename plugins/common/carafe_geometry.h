// Index math of the CARAFE / CARAFE++ operator (CONTRACT §1), shared by the CUDA kernels and the host reference so
// that CPU tests exercise exactly the arithmetic the GPU runs. Every flattened offset is int64_t: a (8, 256, 400, 672)
// float tensor already has 550M elements, and products of extents overflow int32 well before memory runs out.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CARAFE_HD __host__ __device__ __forceinline__
#else
#define CARAFE_HD inline
#endif

namespace carafe
{

enum class Mode : int32_t
{
    kUp = 0,   // CARAFE: output s*H x s*W, output (i', j') centred on source (i'/s, j'/s)
    kDown = 1, // CARAFE++: output ceil(H/s) x ceil(W/s), output (i', j') centred on source (s*i', s*j')
};

struct Geometry
{
    int64_t n, c, h, w; // features (N, C, H, W)
    int64_t ho, wo;     // output and kernels spatial extent
    int32_t k;          // kernel_size (odd)
    int32_t group;      // G; kernels have G*k*k channels
    int32_t scale;      // s
    Mode mode;
};

// For extents that checkShapes has accepted (outputExtentChecked below): up s*H, down ceil(H/s), written so that the
// down case cannot overflow.
CARAFE_HD int64_t outputExtent(int64_t in, int32_t s, Mode mode)
{
    return mode == Mode::kUp ? in * s : in / s + (in % s != 0 ? 1 : 0);
}

// outputExtent for extents from outside (a network's dims): false, instead of a signed overflow, when `in` is
// negative, `s` is not positive or s*H does not fit in int64.
CARAFE_HD bool outputExtentChecked(int64_t in, int32_t s, Mode mode, int64_t& out)
{
    if (in < 0 || s < 1 || (mode == Mode::kUp && in > INT64_MAX / s))
    {
        return false;
    }
    out = outputExtent(in, s, mode);
    return true;
}

CARAFE_HD Geometry makeGeometry(int64_t n, int64_t c, int64_t h, int64_t w, int32_t k, int32_t group, int32_t scale,
    Mode mode)
{
    return Geometry{n, c, h, w, outputExtent(h, scale, mode), outputExtent(w, scale, mode), k, group, scale, mode};
}

// Source coordinate at the centre of the window that output coordinate `o` reads.
CARAFE_HD int64_t windowCentre(int64_t o, int32_t s, Mode mode)
{
    return mode == Mode::kUp ? o / s : o * s;
}

// Outputs whose window is centred on source coordinate `centre` (along one axis): [first, first + count).
// Up: the s outputs of the centre's block. Down: one output if the centre lies on the stride grid, else none.
CARAFE_HD void outputsOfCentre(int64_t centre, int32_t s, Mode mode, int64_t outExtent, int64_t& first, int64_t& count)
{
    if (mode == Mode::kUp)
    {
        first = centre * s;
        count = s;
        return;
    }
    first = centre / s;
    count = (centre % s == 0 && first < outExtent) ? 1 : 0;
}

CARAFE_HD int64_t channelsPerGroup(Geometry const& g)
{
    return g.c / g.group;
}

CARAFE_HD int32_t groupOfChannel(Geometry const& g, int64_t c)
{
    return static_cast<int32_t>(c / channelsPerGroup(g));
}

CARAFE_HD int64_t kernelChannels(Geometry const& g)
{
    return static_cast<int64_t>(g.group) * g.k * g.k;
}

// Channel of `kernels` that holds tap (ky, kx) (each in [0, k)) of group `grp`.
CARAFE_HD int64_t kernelChannel(int32_t grp, int32_t ky, int32_t kx, int32_t k)
{
    return (static_cast<int64_t>(grp) * k + ky) * k + kx;
}

CARAFE_HD bool inside(int64_t y, int64_t x, int64_t h, int64_t w)
{
    return y >= 0 && y < h && x >= 0 && x < w;
}

CARAFE_HD int64_t featureIndex(Geometry const& g, int64_t n, int64_t c, int64_t y, int64_t x)
{
    return ((n * g.c + c) * g.h + y) * g.w + x;
}

CARAFE_HD int64_t kernelIndex(Geometry const& g, int64_t n, int64_t kc, int64_t yo, int64_t xo)
{
    return ((n * kernelChannels(g) + kc) * g.ho + yo) * g.wo + xo;
}

CARAFE_HD int64_t outputIndex(Geometry const& g, int64_t n, int64_t c, int64_t yo, int64_t xo)
{
    return ((n * g.c + c) * g.ho + yo) * g.wo + xo;
}

CARAFE_HD int64_t featureCount(Geometry const& g)
{
    return g.n * g.c * g.h * g.w;
}

CARAFE_HD int64_t kernelCount(Geometry const& g)
{
    return g.n * kernelChannels(g) * g.ho * g.wo;
}

CARAFE_HD int64_t outputCount(Geometry const& g)
{
    return g.n * g.c * g.ho * g.wo;
}

} // namespace carafe
