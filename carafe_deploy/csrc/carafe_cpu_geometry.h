// The shapes of a CARAFE call and the 16-bit storage types, shared by every instruction-set build of the CPU kernels
// (carafe_cpu_kernels.h is compiled once per instruction set; what is here is compiled with the caller's own flags and
// must mean the same in all of them).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace carafe_cpu
{

// IEEE binary16 and bfloat16 as raw bits: the kernels convert whole rows (F16C / integer lanes where the instruction
// set has them), so the storage type needs no arithmetic of its own. Layout-compatible with c10::Half / c10::BFloat16.
struct Half
{
    uint16_t bits;
};
struct BFloat16
{
    uint16_t bits;
};

struct Geometry
{
    int64_t n, c, h, w, k, group, s, ho, wo, cg, r, taps;
    bool up;
    int64_t rowsPerUnit; // output rows per unit: a unit owns its output rows and the source rows they are centred on
    int64_t units;

    int64_t base(int64_t o) const // source row (or column) of output row o's centre tap
    {
        return up ? o / s : o * s;
    }
    // source rows owned by units [u0, u1)
    int64_t ownedSourceBegin(int64_t u0) const
    {
        return up ? u0 : std::min(h, u0 * s);
    }
    int64_t ownedSourceEnd(int64_t u1) const
    {
        return up ? u1 : std::min(h, u1 * s);
    }
};

inline Geometry makeGeometry(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t group, int64_t s, bool up)
{
    Geometry g{};
    g.n = n;
    g.c = c;
    g.h = h;
    g.w = w;
    g.k = k;
    g.group = group;
    g.s = s;
    g.up = up;
    g.r = k / 2;
    g.taps = k * k;
    g.cg = g.c / group;
    g.ho = up ? g.h * s : (g.h + s - 1) / s;
    g.wo = up ? g.w * s : (g.w + s - 1) / s;
    g.rowsPerUnit = up ? s : 1;
    g.units = up ? g.h : g.ho;
    return g;
}

} // namespace carafe_cpu
