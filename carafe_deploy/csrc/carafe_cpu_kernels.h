// The CPU kernels of CARAFE as plain C++ templates (no torch dependency): carafe_cpu.cpp binds them to ATen; a
// standalone driver can time them. The design is described in carafe_cpu.cpp.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if !defined(__GNUC__)
#error "carafe_cpu_kernels.h uses GCC/Clang vector extensions"
#endif

namespace carafe_cpu
{

// ------------------------------------------------------------------------------------------------------------------
// Vectors: GCC/Clang vector extensions (AVX2 registers when built with -mavx2, pairs of SSE registers otherwise) and a
// one-lane "vector" (the plain scalar) for the last columns of a row, so that every loop is written once.

template <typename T>
struct Simd;
template <>
struct Simd<float>
{
    typedef float type __attribute__((vector_size(32)));
    static constexpr int64_t kLanes = 8;
};
template <>
struct Simd<double>
{
    typedef double type __attribute__((vector_size(32)));
    static constexpr int64_t kLanes = 4;
};

template <typename T>
struct Lane
{
    using type = T;
    static constexpr int64_t kLanes = 1;
};

template <typename V, typename T>
inline V load(T const* p)
{
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}

template <typename V, typename T>
inline void store(T* p, V const& v)
{
    std::memcpy(p, &v, sizeof(V));
}

template <typename V, typename T>
inline void addTo(T* p, V const& v)
{
    store(p, load<V>(p) + v);
}

// store the lanes of an accumulator vector to a tensor of a (possibly narrower) type
template <typename V, typename acc_t, typename out_t>
inline void storeConvert(out_t* p, V const& v)
{
    if constexpr (std::is_same_v<acc_t, out_t>)
    {
        store(p, v);
    }
    else
    {
        constexpr int64_t lanes = sizeof(V) / sizeof(acc_t);
        acc_t tmp[lanes];
        std::memcpy(tmp, &v, sizeof(V));
        for (int64_t l = 0; l < lanes; ++l)
        {
            p[l] = static_cast<out_t>(tmp[l]);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Geometry.

struct Geometry
{
    int64_t n, c, h, w, k, group, s, ho, wo, cg, r, taps;
    bool up;
    int64_t rowsPerUnit; // output rows per unit: a unit owns its output rows and the source rows they are centred on
    int64_t units;
    int64_t phases, len, colStep; // expanded source row: `phases` rows of `len`; tap kx at off[kx]

    int64_t base(int64_t o) const // source row of output row o's centre tap
    {
        return up ? o / s : o * s;
    }
    int64_t tapOffset(int64_t kx) const
    {
        return (kx % phases) * len + (kx / phases) * colStep;
    }
    std::vector<int64_t> tapOffsets() const // tapOffset(kx) for every kx
    {
        std::vector<int64_t> off(static_cast<size_t>(k));
        for (int64_t kx = 0; kx < k; ++kx)
        {
            off[kx] = tapOffset(kx);
        }
        return off;
    }
    // output row o's centre source row, and the kernel rows [kyLo, kyHi) that fall inside the image
    struct TapRows
    {
        int64_t yb, kyLo, kyHi;
    };
    TapRows tapRows(int64_t o) const
    {
        int64_t const yb = base(o);
        return {yb, std::max<int64_t>(0, r - yb), std::min(k, h - yb + r)};
    }
    int64_t expandedSize() const
    {
        return phases * len;
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
    if (up)
    {
        // E[q] = xpad[q / s], q in [0, s (W + 2r)); tap kx reads E[s kx + j] = xpad[j / s + kx]
        g.phases = 1;
        g.len = s * (g.w + 2 * g.r);
        g.colStep = s;
    }
    else
    {
        // E[p][m] = xpad[s m + p]; tap kx reads E[kx % s][kx / s + j] = xpad[s j + kx]
        g.phases = s;
        g.len = std::max((g.w + 2 * g.r + s - 1) / s, (k - 1) / s + g.wo);
        g.colStep = 1;
    }
    return g;
}

// xpad[t] = x[t - r] (zero outside) copied into the expanded layout
template <typename scalar_t, typename acc_t>
void expandRow(Geometry const& g, scalar_t const* x, acc_t* dst)
{
    int64_t const s = g.s, w = g.w, r = g.r;
    if (g.up)
    {
        // E[s (t + r) + v] = x[t]
        std::fill(dst, dst + s * r, acc_t(0));
        std::fill(dst + s * (r + w), dst + g.len, acc_t(0));
        acc_t* d = dst + s * r;
        if (s == 1)
        {
            for (int64_t t = 0; t < w; ++t)
            {
                d[t] = static_cast<acc_t>(x[t]);
            }
        }
        else if (s == 2)
        {
            for (int64_t t = 0; t < w; ++t)
            {
                acc_t const v = static_cast<acc_t>(x[t]);
                d[2 * t] = v;
                d[2 * t + 1] = v;
            }
        }
        else
        {
            for (int64_t t = 0; t < w; ++t)
            {
                acc_t const v = static_cast<acc_t>(x[t]);
                for (int64_t q = 0; q < s; ++q)
                {
                    d[s * t + q] = v;
                }
            }
        }
        return;
    }
    // E[p][m] = xpad[s m + p] = x[s m + p - r]
    for (int64_t p = 0; p < s; ++p)
    {
        acc_t* d = dst + p * g.len;
        int64_t const mLo = std::min(g.len, r > p ? (r - p + s - 1) / s : int64_t(0));
        int64_t const mHi = std::max(mLo, std::min(g.len, w + r - p > 0 ? (w + r - p + s - 1) / s : int64_t(0)));
        std::fill(d, d + mLo, acc_t(0));
        std::fill(d + mHi, d + g.len, acc_t(0));
        scalar_t const* src = x + p - r; // src[s m] for m in [mLo, mHi) lies in x[0, w)
        if (s == 2)
        {
            for (int64_t m = mLo; m < mHi; ++m)
            {
                d[m] = static_cast<acc_t>(src[2 * m]);
            }
        }
        else
        {
            for (int64_t m = mLo; m < mHi; ++m)
            {
                d[m] = static_cast<acc_t>(src[s * m]);
            }
        }
    }
}

// The gradient of the tap reads: tapGrad[kx][j] is d(loss)/d(xpad[col(j, kx)]), col = j/s + kx ("up") or s j + kx
// ("down"); gx[t] = sum of the entries whose column is t + r. `tmp` holds max(w, s * len) values.
template <typename scalar_t, typename acc_t>
void contractTaps(Geometry const& g, acc_t const* tapGrad, acc_t* tmp, scalar_t* gx)
{
    int64_t const s = g.s, w = g.w, r = g.r, wo = g.wo;
    if (g.up)
    {
        // gx[t] = sum_kx sum_v tapGrad[kx][s (t + r - kx) + v]
        std::fill(tmp, tmp + w, acc_t(0));
        for (int64_t kx = 0; kx < g.k; ++kx)
        {
            int64_t const shift = r - kx;
            int64_t const t0 = std::max<int64_t>(0, -shift), t1 = std::min(w, w - shift);
            acc_t const* row = tapGrad + kx * wo + s * shift;
            if (s == 1)
            {
                for (int64_t t = t0; t < t1; ++t)
                {
                    tmp[t] += row[t];
                }
            }
            else if (s == 2)
            {
                for (int64_t t = t0; t < t1; ++t)
                {
                    tmp[t] += row[2 * t] + row[2 * t + 1];
                }
            }
            else
            {
                for (int64_t t = t0; t < t1; ++t)
                {
                    acc_t sum = 0;
                    for (int64_t v = 0; v < s; ++v)
                    {
                        sum += row[s * t + v];
                    }
                    tmp[t] += sum;
                }
            }
        }
        for (int64_t t = 0; t < w; ++t)
        {
            gx[t] = static_cast<scalar_t>(tmp[t]);
        }
        return;
    }
    // phase p = kx % s: P_p[m] = sum_i tapGrad[p + s i][m - i]; then gx[t] = P_{(t+r) % s}[(t+r) / s]
    for (int64_t p = 0; p < s; ++p)
    {
        acc_t* ph = tmp + p * g.len;
        std::fill(ph, ph + g.len, acc_t(0));
        for (int64_t i = 0, kx = p; kx < g.k; ++i, kx += s)
        {
            acc_t const* row = tapGrad + kx * wo - i;
            int64_t const m1 = std::min(g.len, wo + i);
            for (int64_t m = i; m < m1; ++m)
            {
                ph[m] += row[m];
            }
        }
        int64_t m = p >= r ? 0 : (r - p + s - 1) / s;
        for (int64_t t = s * m + p - r; t < w; t += s, ++m)
        {
            gx[t] = static_cast<scalar_t>(ph[m]);
        }
    }
}

// Row access to an input that is either read in place (same type as the accumulator) or converted per band.
template <typename scalar_t, typename acc_t>
struct Rows
{
    scalar_t const* data = nullptr; // [planes][rows][wo]
    int64_t rows = 0, wo = 0;
    std::vector<acc_t> buf; // converted rows [planes in block][rowBegin, rowEnd)
    int64_t planeBegin = 0, rowBegin = 0, rowEnd = 0;

    static constexpr bool kDirect = std::is_same_v<scalar_t, acc_t>;

    void attach(scalar_t const* planes, int64_t rowCount, int64_t width)
    {
        data = planes;
        rows = rowCount;
        wo = width;
    }

    void select(int64_t p0, int64_t p1, int64_t r0, int64_t r1)
    {
        planeBegin = p0;
        rowBegin = r0;
        rowEnd = r1;
        if constexpr (!kDirect)
        {
            int64_t const nr = r1 - r0;
            buf.resize(static_cast<size_t>((p1 - p0) * nr * wo));
            for (int64_t p = p0; p < p1; ++p)
            {
                scalar_t const* src = data + (p * rows + r0) * wo;
                acc_t* dst = buf.data() + (p - p0) * nr * wo;
                for (int64_t i = 0; i < nr * wo; ++i)
                {
                    dst[i] = static_cast<acc_t>(src[i]);
                }
            }
        }
    }

    int64_t planeStride() const // distance between the same row of consecutive planes
    {
        return kDirect ? rows * wo : (rowEnd - rowBegin) * wo;
    }

    acc_t const* row(int64_t plane, int64_t r) const
    {
        if constexpr (kDirect)
        {
            return data + (plane * rows + r) * wo;
        }
        else
        {
            return buf.data() + ((plane - planeBegin) * (rowEnd - rowBegin) + (r - rowBegin)) * wo;
        }
    }
};

// ------------------------------------------------------------------------------------------------------------------
// Micro-kernels over one vector of output columns [j, j + lanes). Register blocking: the forward and grad_kernels
// compute ROWS output rows at once when those rows read the same source rows (mode "up", s >= 2), so each expanded
// source vector is loaded once for both; grad_features computes CH channels at once, so each kernel-weight vector is
// loaded once for both.

// forward: ROWS output rows x CH channels; out[row][ch] = sum over taps of kernels[row][tap] * E[ch][ky][tap column]
template <int ROWS, int CH, typename V, typename acc_t, typename scalar_t>
inline void forwardTile(int64_t k, int64_t kyLo, int64_t kyHi, int64_t const* tapOff, acc_t const* const* kRow,
    int64_t kRowStep, acc_t const* const* eRow, int64_t j, scalar_t* const* outRow)
{
    V acc[ROWS][CH];
    for (int row = 0; row < ROWS; ++row)
    {
        for (int ch = 0; ch < CH; ++ch)
        {
            acc[row][ch] = V{};
        }
    }
    for (int64_t ky = kyLo; ky < kyHi; ++ky)
    {
        acc_t const* e[CH];
        for (int ch = 0; ch < CH; ++ch)
        {
            e[ch] = eRow[ch * k + ky] + j;
        }
        for (int64_t kx = 0; kx < k; ++kx)
        {
            int64_t const off = tapOff[kx];
            V kv[ROWS];
            for (int row = 0; row < ROWS; ++row)
            {
                kv[row] = load<V>(kRow[ky * k + kx] + row * kRowStep + j);
            }
#pragma GCC unroll 8
            for (int ch = 0; ch < CH; ++ch)
            {
                V const ev = load<V>(e[ch] + off);
                for (int row = 0; row < ROWS; ++row)
                {
                    acc[row][ch] += kv[row] * ev;
                }
            }
        }
    }
    for (int row = 0; row < ROWS; ++row)
    {
        for (int ch = 0; ch < CH; ++ch)
        {
            storeConvert<V, acc_t>(outRow[row * CH + ch] + j, acc[row][ch]);
        }
    }
}

// grad_kernels: ROWS output rows x NK taps of one kernel row ky, summed over nc channels;
// dst[row][t] += sum_c grad_out[row][c] * E[c][tap column]
template <int ROWS, int NK, typename V, typename acc_t>
inline void gradKernelsTile(int64_t nc, acc_t const* gRow, int64_t gChStep, int64_t gRowStep, acc_t const* const* eRow,
    int64_t const* tapOff, int64_t j, acc_t* const* dst)
{
    V acc[ROWS][NK];
    int64_t off[NK];
    for (int t = 0; t < NK; ++t)
    {
        off[t] = tapOff[t];
        for (int row = 0; row < ROWS; ++row)
        {
            acc[row][t] = V{};
        }
    }
    for (int64_t cc = 0; cc < nc; ++cc)
    {
        V gv[ROWS];
        for (int row = 0; row < ROWS; ++row)
        {
            gv[row] = load<V>(gRow + cc * gChStep + row * gRowStep + j);
        }
        acc_t const* e = eRow[cc] + j;
#pragma GCC unroll 8
        for (int t = 0; t < NK; ++t)
        {
            V const ev = load<V>(e + off[t]);
            for (int row = 0; row < ROWS; ++row)
            {
                acc[row][t] += gv[row] * ev;
            }
        }
    }
    for (int row = 0; row < ROWS; ++row)
    {
        for (int t = 0; t < NK; ++t)
        {
            addTo(dst[row * NK + t] + j, acc[row][t]);
        }
    }
}

// grad_features of one source row, CH channels x NK taps: for each tap, the sum over the (kernel row, output row)
// pairs that read the row of kernels * grad_out. Each (channel, tap) sum goes to its own row of tapGrad (summing the
// overlapping tap columns in place would stall on store forwarding); contractTaps folds them into the row.
template <int CH, int NK, typename V, typename acc_t>
inline void gradFeaturesTile(int64_t nContrib, acc_t const* const* gRow, int64_t gChStep, acc_t const* const* kRow,
    int64_t kTapStep, int64_t j, acc_t* tapGrad, int64_t tapGradChStep, int64_t wo)
{
    V acc[CH][NK];
    for (int ch = 0; ch < CH; ++ch)
    {
        for (int t = 0; t < NK; ++t)
        {
            acc[ch][t] = V{};
        }
    }
    for (int64_t e = 0; e < nContrib; ++e)
    {
        V gv[CH];
        for (int ch = 0; ch < CH; ++ch)
        {
            gv[ch] = load<V>(gRow[e] + ch * gChStep + j);
        }
        acc_t const* kr = kRow[e] + j;
#pragma GCC unroll 8
        for (int t = 0; t < NK; ++t)
        {
            V const kv = load<V>(kr + t * kTapStep);
            for (int ch = 0; ch < CH; ++ch)
            {
                acc[ch][t] += kv * gv[ch];
            }
        }
    }
    for (int ch = 0; ch < CH; ++ch)
    {
        for (int t = 0; t < NK; ++t)
        {
            store(tapGrad + ch * tapGradChStep + t * wo + j, acc[ch][t]);
        }
    }
}

// f(vector tag, j) over the columns [begin, end): full vectors, then one lane at a time
template <typename acc_t, typename F>
inline void forColumns(int64_t begin, int64_t end, F&& f)
{
    using V = typename Simd<acc_t>::type;
    constexpr int64_t L = Simd<acc_t>::kLanes;
    int64_t j = begin;
    for (; j + L <= end; j += L)
    {
        f(static_cast<V const*>(nullptr), j);
    }
    for (; j < end; ++j)
    {
        f(static_cast<acc_t const*>(nullptr), j);
    }
}

template <typename Tag>
using VecOfTag = std::remove_const_t<std::remove_pointer_t<Tag>>;

// f(std::integral_constant<int, n>) for a run-time n in [1, 7]
template <typename F>
inline void withCount(int64_t n, F&& f)
{
    switch (n)
    {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    default: f(std::integral_constant<int, 7>{}); break;
    }
}

constexpr int64_t kMaxTapTile = 7;     // taps of one kernel row per register tile (k <= 7 in one go)
constexpr int64_t kChannelBlock = 16;  // channels whose expanded rows are built together (kept in L2)
constexpr int64_t kColumnChunk = 64;   // output columns per chunk: the rows one chunk touches stay in L1

// ROWS = 2 when output rows o and o + 1 exist in [o, end) and read the same source rows
inline int64_t rowsAt(Geometry const& g, int64_t o, int64_t end)
{
    return (g.up && g.s >= 2 && o + 1 < end && g.base(o + 1) == g.base(o)) ? 2 : 1;
}

// ------------------------------------------------------------------------------------------------------------------
// Scheduling: items = (image, group, band of units); one parallel region, items handed out by an atomic counter.

struct Schedule
{
    int64_t unitsPerBand, bands, items, threads;
};

// Below this many multiply-adds a call runs on the calling thread: waking a pool thread (and waiting for it at the
// region's end, when the machine is busy) costs more than the work.
constexpr double kParallelMinMacs = 1 << 21;

inline Schedule makeSchedule(Geometry const& g, int64_t available)
{
    double const macs = double(g.n) * g.c * g.ho * g.wo * g.taps;
    int64_t const threads = macs < kParallelMinMacs ? 1 : std::max<int64_t>(1, available);
    // about 8 output rows per band, fewer when there would be too few items to share among the threads
    int64_t upb = std::max<int64_t>(1, 8 / g.rowsPerUnit);
    while (upb > 1 && g.n * g.group * ((g.units + upb - 1) / upb) < 4 * threads)
    {
        upb /= 2;
    }
    Schedule sch{};
    sch.unitsPerBand = upb;
    sch.bands = g.units == 0 ? 0 : (g.units + upb - 1) / upb;
    sch.items = g.n * g.group * sch.bands;
    sch.threads = std::min(threads, sch.items);
    return sch;
}

// runner.threads(): threads available; runner.run(n, f): f() on n threads at once (the extension: at::parallel_for)
template <typename Runner, typename Worker>
void runItems(Runner const& runner, Schedule const& sch, Worker&& worker)
{
    if (sch.items <= 0)
    {
        return;
    }
    std::atomic<int64_t> next{0};
    auto body = [&]
    {
        auto process = worker(); // per-thread scratch
        for (int64_t item = next.fetch_add(1); item < sch.items; item = next.fetch_add(1))
        {
            process(item);
        }
    };
    if (sch.threads <= 1)
    {
        body();
    }
    else
    {
        runner.run(sch.threads, body);
    }
}

struct Band
{
    int64_t ni, gi, ng;   // image, group, image * groups + group
    int64_t o0, o1;       // owned output rows
    int64_t ys0, ys1;     // owned source rows
    int64_t ylo, yhi;     // source rows the owned output rows read
};

inline Band bandOf(Geometry const& g, Schedule const& sch, int64_t item)
{
    Band b{};
    int64_t const band = item % sch.bands;
    b.ng = item / sch.bands;
    b.ni = b.ng / g.group;
    b.gi = b.ng % g.group;
    int64_t const u0 = band * sch.unitsPerBand, u1 = std::min(g.units, u0 + sch.unitsPerBand);
    b.o0 = u0 * g.rowsPerUnit;
    b.o1 = std::min(g.ho, u1 * g.rowsPerUnit);
    b.ys0 = g.ownedSourceBegin(u0);
    b.ys1 = g.ownedSourceEnd(u1);
    b.ylo = std::max<int64_t>(0, g.base(b.o0) - g.r);
    b.yhi = std::min(g.h, g.base(b.o1 - 1) + g.r + 1);
    return b;
}

// expanded rows of channels [cFirst, cFirst + cb) and source rows [b.ylo, b.yhi), channel-major
template <typename scalar_t, typename acc_t>
void expandBlock(Geometry const& g, Band const& b, scalar_t const* x, int64_t cFirst, int64_t cb, acc_t* dst)
{
    int64_t const ny = b.yhi - b.ylo, esz = g.expandedSize();
    for (int64_t cc = 0; cc < cb; ++cc)
    {
        scalar_t const* xc = x + ((b.ni * g.c + cFirst + cc) * g.h) * g.w;
        for (int64_t y = b.ylo; y < b.yhi; ++y)
        {
            expandRow(g, xc + y * g.w, dst + (cc * ny + (y - b.ylo)) * esz);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Forward.

template <typename scalar_t, typename acc_t, typename Runner>
void forwardKernel(Runner const& runner, Geometry const& g, scalar_t const* x, scalar_t const* kern, scalar_t* out)
{
    Schedule const sch = makeSchedule(g, runner.threads());
    std::vector<int64_t> const tapOff = g.tapOffsets();
    int64_t const plane = g.ho * g.wo, esz = g.expandedSize();

    runItems(runner, sch,
        [&]
        {
            return [&, expanded = std::vector<acc_t>(), kernels = Rows<scalar_t, acc_t>(),
                       kRow = std::vector<acc_t const*>(g.taps), eRow = std::vector<acc_t const*>(8 * g.k),
                       outRow = std::vector<scalar_t*>(8)](int64_t item) mutable
            {
                Band const b = bandOf(g, sch, item);
                int64_t const ny = b.yhi - b.ylo;
                kernels.attach(kern + b.ng * g.taps * plane, g.ho, g.wo);
                kernels.select(0, g.taps, b.o0, b.o1);
                expanded.resize(static_cast<size_t>(kChannelBlock * ny * esz));

                for (int64_t c0 = 0; c0 < g.cg; c0 += kChannelBlock)
                {
                    int64_t const cb = std::min(kChannelBlock, g.cg - c0);
                    int64_t const cFirst = b.gi * g.cg + c0; // channel index within the image
                    expandBlock(g, b, x, cFirst, cb, expanded.data());
                    for (int64_t o = b.o0; o < b.o1;)
                    {
                        int64_t const rows = rowsAt(g, o, b.o1);
                        Geometry::TapRows const tr = g.tapRows(o); // plain names: lambdas below capture them
                        int64_t const yb = tr.yb, kyLo = tr.kyLo, kyHi = tr.kyHi;
                        for (int64_t t = 0; t < g.taps; ++t)
                        {
                            kRow[t] = kernels.row(t, o);
                        }
                        int64_t const kRowStep = g.wo; // row o + 1 of the same tap plane
                        for (int64_t jc = 0; jc < g.wo; jc += kColumnChunk)
                        {
                            int64_t const jEnd = std::min(g.wo, jc + kColumnChunk);
                            int64_t cc = 0;
                            auto tile = [&](auto rowsTag, auto chTag)
                            {
                                constexpr int ROWS = decltype(rowsTag)::value;
                                constexpr int CH = decltype(chTag)::value;
                                for (int ch = 0; ch < CH; ++ch)
                                {
                                    for (int64_t ky = kyLo; ky < kyHi; ++ky)
                                    {
                                        eRow[ch * g.k + ky]
                                            = expanded.data() + ((cc + ch) * ny + (yb + ky - g.r - b.ylo)) * esz;
                                    }
                                    for (int row = 0; row < ROWS; ++row)
                                    {
                                        outRow[row * CH + ch]
                                            = out + ((b.ni * g.c + cFirst + cc + ch) * g.ho + o + row) * g.wo;
                                    }
                                }
                                forColumns<acc_t>(jc, jEnd,
                                    [&](auto vecTag, int64_t j)
                                    {
                                        forwardTile<ROWS, CH, VecOfTag<decltype(vecTag)>, acc_t, scalar_t>(g.k, kyLo,
                                            kyHi, tapOff.data(), kRow.data(), kRowStep, eRow.data(), j, outRow.data());
                                    });
                                cc += CH;
                            };
                            using I1 = std::integral_constant<int, 1>;
                            using I2 = std::integral_constant<int, 2>;
                            using I4 = std::integral_constant<int, 4>;
                            using I8 = std::integral_constant<int, 8>;
                            if (rows == 2)
                            {
                                while (cb - cc >= 4)
                                {
                                    tile(I2{}, I4{});
                                }
                                if (cb - cc >= 2)
                                {
                                    tile(I2{}, I2{});
                                }
                                if (cb - cc >= 1)
                                {
                                    tile(I2{}, I1{});
                                }
                            }
                            else
                            {
                                while (cb - cc >= 8)
                                {
                                    tile(I1{}, I8{});
                                }
                                if (cb - cc >= 4)
                                {
                                    tile(I1{}, I4{});
                                }
                                if (cb - cc >= 2)
                                {
                                    tile(I1{}, I2{});
                                }
                                if (cb - cc >= 1)
                                {
                                    tile(I1{}, I1{});
                                }
                            }
                        }
                        o += rows;
                    }
                }
            };
        });
}

// ------------------------------------------------------------------------------------------------------------------
// Backward.

template <typename scalar_t, typename acc_t, typename Runner>
void backwardKernel(Runner const& runner, Geometry const& g, scalar_t const* gout, scalar_t const* x,
    scalar_t const* kern, scalar_t* gradX, scalar_t* gradK)
{
    Schedule const sch = makeSchedule(g, runner.threads());
    std::vector<int64_t> const tapOff = g.tapOffsets();
    int64_t const plane = g.ho * g.wo, esz = g.expandedSize();

    runItems(runner, sch,
        [&]
        {
            return [&, expanded = std::vector<acc_t>(), kernels = Rows<scalar_t, acc_t>(),
                       grads = Rows<scalar_t, acc_t>(), gradKBand = std::vector<acc_t>(),
                       tapGrad = std::vector<acc_t>(), contractTmp = std::vector<acc_t>(),
                       contribG = std::vector<acc_t const*>(), contribK = std::vector<acc_t const*>(),
                       eRow = std::vector<acc_t const*>(kChannelBlock),
                       dst = std::vector<acc_t*>(2 * kMaxTapTile)](int64_t item) mutable
            {
                Band const b = bandOf(g, sch, item);
                // output rows that read the owned source rows: base(o) in [ys0 - r, ys1 - 1 + r]
                int64_t oc0, oc1;
                if (g.up)
                {
                    oc0 = std::max<int64_t>(0, g.s * (b.ys0 - g.r));
                    oc1 = std::min(g.ho, g.s * (b.ys1 + g.r));
                }
                else
                {
                    int64_t const lo = b.ys0 - g.r, hi = b.ys1 - 1 + g.r;
                    oc0 = std::max<int64_t>(0, lo <= 0 ? 0 : (lo + g.s - 1) / g.s);
                    oc1 = std::min(g.ho, hi / g.s + 1);
                }
                oc0 = std::min(oc0, b.o0);
                oc1 = std::max(oc1, b.o1);
                int64_t const ny = b.yhi - b.ylo, nO = b.o1 - b.o0;

                kernels.attach(kern + b.ng * g.taps * plane, g.ho, g.wo);
                kernels.select(0, g.taps, oc0, oc1);
                int64_t const kTapStep = kernels.planeStride();
                grads.attach(gout + (b.ni * g.c + b.gi * g.cg) * plane, g.ho, g.wo);
                expanded.resize(static_cast<size_t>(kChannelBlock * ny * esz));
                tapGrad.resize(static_cast<size_t>(2 * g.k * g.wo));
                contractTmp.resize(static_cast<size_t>(std::max(g.w, g.s * g.len)));
                gradKBand.assign(static_cast<size_t>(g.taps * nO * g.wo), acc_t(0));

                for (int64_t c0 = 0; c0 < g.cg; c0 += kChannelBlock)
                {
                    int64_t const cb = std::min(kChannelBlock, g.cg - c0);
                    int64_t const cFirst = b.gi * g.cg + c0;
                    grads.select(c0, c0 + cb, oc0, oc1);
                    int64_t const gChStep = grads.planeStride();
                    expandBlock(g, b, x, cFirst, cb, expanded.data());

                    // grad_kernels[tap, o, j] += sum_c grad_out[c, o, j] * xpad(c, tap, o, j)
                    for (int64_t o = b.o0; o < b.o1;)
                    {
                        int64_t const rows = rowsAt(g, o, b.o1);
                        Geometry::TapRows const tr = g.tapRows(o); // plain names: lambdas below capture them
                        int64_t const yb = tr.yb, kyLo = tr.kyLo, kyHi = tr.kyHi;
                        acc_t const* gRow = grads.row(c0, o);
                        for (int64_t jc = 0; jc < g.wo; jc += kColumnChunk)
                        {
                            int64_t const jEnd = std::min(g.wo, jc + kColumnChunk);
                            for (int64_t ky = kyLo; ky < kyHi; ++ky)
                            {
                                for (int64_t cc = 0; cc < cb; ++cc)
                                {
                                    eRow[cc] = expanded.data() + (cc * ny + (yb + ky - g.r - b.ylo)) * esz;
                                }
                                for (int64_t kx0 = 0; kx0 < g.k; kx0 += kMaxTapTile)
                                {
                                    int64_t const nk = std::min(kMaxTapTile, g.k - kx0);
                                    for (int64_t row = 0; row < rows; ++row)
                                    {
                                        for (int64_t t = 0; t < nk; ++t)
                                        {
                                            dst[row * nk + t] = gradKBand.data()
                                                + ((ky * g.k + kx0 + t) * nO + (o + row - b.o0)) * g.wo;
                                        }
                                    }
                                    auto run = [&](auto rowsTag)
                                    {
                                        withCount(nk,
                                            [&](auto nkTag)
                                            {
                                                constexpr int ROWS = decltype(rowsTag)::value;
                                                constexpr int NK = decltype(nkTag)::value;
                                                forColumns<acc_t>(jc, jEnd,
                                                    [&](auto vecTag, int64_t j)
                                                    {
                                                        gradKernelsTile<ROWS, NK, VecOfTag<decltype(vecTag)>, acc_t>(cb,
                                                            gRow, gChStep, g.wo, eRow.data(), tapOff.data() + kx0, j,
                                                            dst.data());
                                                    });
                                            });
                                    };
                                    if (rows == 2)
                                    {
                                        run(std::integral_constant<int, 2>{});
                                    }
                                    else
                                    {
                                        run(std::integral_constant<int, 1>{});
                                    }
                                }
                            }
                        }
                        o += rows;
                    }

                    // grad_features of the owned source rows, gathered from the output rows that read them
                    for (int64_t cc = 0; cc < cb;)
                    {
                        int64_t const chs = cb - cc >= 2 ? 2 : 1;
                        scalar_t* gxc = gradX + ((b.ni * g.c + cFirst + cc) * g.h) * g.w;
                        for (int64_t y = b.ys0; y < b.ys1; ++y)
                        {
                            for (int64_t kx0 = 0; kx0 < g.k; kx0 += kMaxTapTile)
                            {
                                int64_t const nk = std::min(kMaxTapTile, g.k - kx0);
                                contribG.clear();
                                contribK.clear();
                                for (int64_t ky = 0; ky < g.k; ++ky)
                                {
                                    int64_t const base = y - ky + g.r; // centre row of the outputs that read y via ky
                                    if (base < 0 || base >= g.h)
                                    {
                                        continue;
                                    }
                                    int64_t oLo, oHi;
                                    if (g.up)
                                    {
                                        oLo = base * g.s;
                                        oHi = std::min(g.ho, oLo + g.s);
                                    }
                                    else
                                    {
                                        if (base % g.s != 0)
                                        {
                                            continue;
                                        }
                                        oLo = base / g.s;
                                        oHi = std::min(g.ho, oLo + 1);
                                    }
                                    for (int64_t o = oLo; o < oHi; ++o)
                                    {
                                        contribG.push_back(grads.row(c0 + cc, o));
                                        contribK.push_back(kernels.row(ky * g.k + kx0, o));
                                    }
                                }
                                int64_t const nContrib = static_cast<int64_t>(contribG.size());
                                auto run = [&](auto chTag)
                                {
                                    withCount(nk,
                                        [&](auto nkTag)
                                        {
                                            constexpr int CH = decltype(chTag)::value;
                                            constexpr int NK = decltype(nkTag)::value;
                                            forColumns<acc_t>(0, g.wo,
                                                [&](auto vecTag, int64_t j)
                                                {
                                                    gradFeaturesTile<CH, NK, VecOfTag<decltype(vecTag)>, acc_t>(
                                                        nContrib, contribG.data(), gChStep, contribK.data(), kTapStep,
                                                        j, tapGrad.data() + kx0 * g.wo, g.k * g.wo, g.wo);
                                                });
                                        });
                                };
                                if (chs == 2)
                                {
                                    run(std::integral_constant<int, 2>{});
                                }
                                else
                                {
                                    run(std::integral_constant<int, 1>{});
                                }
                            }
                            for (int64_t ch = 0; ch < chs; ++ch)
                            {
                                contractTaps(g, tapGrad.data() + ch * g.k * g.wo, contractTmp.data(),
                                    gxc + ch * g.h * g.w + y * g.w);
                            }
                        }
                        cc += chs;
                    }
                }

                scalar_t* gk = gradK + b.ng * g.taps * plane;
                for (int64_t t = 0; t < g.taps; ++t)
                {
                    for (int64_t o = b.o0; o < b.o1; ++o)
                    {
                        acc_t const* src = gradKBand.data() + (t * nO + (o - b.o0)) * g.wo;
                        scalar_t* d = gk + t * plane + o * g.wo;
                        for (int64_t j = 0; j < g.wo; ++j)
                        {
                            d[j] = static_cast<scalar_t>(src[j]);
                        }
                    }
                }
            };
        });
}

} // namespace carafe_cpu
