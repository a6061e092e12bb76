// The CPU kernels of CARAFE as plain C++ templates (no torch dependency). carafe_cpu.cpp binds them to ATen through
// carafe_cpu_dispatch.h, which compiles this header once per instruction set (carafe_cpu_isa_*.cpp) and picks one at
// run time; a standalone user may include it directly and get the vector width of its own compiler flags.
//
// Public entry points (stable): makeGeometry (carafe_cpu_geometry.h), and
//   forwardKernel<scalar_t, acc_t>(runner, geometry, features, kernels, out)
//   backwardKernel<scalar_t, acc_t>(runner, geometry, grad_out, features, kernels, grad_features, grad_kernels)
// over contiguous N C H W / N (G k k) Ho Wo tensors; runner.threads() is how many threads may work, runner.run(n, f)
// calls f() on n threads at once. scalar_t is float, double, Half or BFloat16 (or any type static_cast converts);
// acc_t float or double.
//
// Design (see carafe_cpu.cpp for the overall layout of the work):
// - Everything is vectorised over output columns, one vector of L lanes at a time; rows are padded to whole vectors in
//   the staging buffers, so the tail of a row costs one full vector and never a scalar loop.
// - Kernel weights of a band are repacked tap-interleaved ([column vector][row][tap][lane]), so a register tile reads
//   its k² weight vectors from consecutive memory at immediate offsets; narrow types are converted to acc_t there
//   (F16C / integer lanes), once per element. Source rows are "expanded" once per band and channel block so that
//   every tap column is a contiguous run (mode up: the nearest-upsampled row; mode down: the row split into its s
//   phases); rows outside the image are zero rows, so every output row reads all k kernel rows.
// - The register tiles of the forward hold several output rows that share source rows (mode up: two row pairs; mode
//   down: two rows two source rows apart) times a few channels; with k and s compile-time (k = 3 or 5, s = 2) the k x k
//   loops unroll into immediate offsets; every other shape runs tiles with run-time offsets.
// - Large outputs (kStreamBytes) are written with non-temporal stores: straight from the tiles' registers where rows
//   are whole 64-byte lines (AVX-512), else from a band's staged rows; the staging buffers are per thread and kept
//   from call to call. Narrow outputs leave the tiles converted where one instruction converts a vector (F16C;
//   AVX512_BF16 in the avx512bf16 build), else they are staged in acc_t and converted in a pass of their own.
#pragma once

#include "carafe_cpu_geometry.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if !defined(__GNUC__)
#error "carafe_cpu_kernels.h uses GCC/Clang vector extensions"
#endif

// A build for one instruction set defines these before including this header (carafe_cpu_isa_*.cpp: a target pragma
// changes the instructions but not the predefined macros); otherwise they follow the includer's compiler flags.
#ifndef CARAFE_CPU_VEC_BYTES
#if defined(__AVX512F__)
#define CARAFE_CPU_VEC_BYTES 64
#elif defined(__AVX2__)
#define CARAFE_CPU_VEC_BYTES 32
#else
#define CARAFE_CPU_VEC_BYTES 16
#endif
#endif
#ifndef CARAFE_CPU_F16C
#if defined(__F16C__)
#define CARAFE_CPU_F16C 1
#else
#define CARAFE_CPU_F16C 0
#endif
#endif
#ifndef CARAFE_CPU_BF16 // AVX512_BF16's rounding to bf16, used on 512-bit vectors
#if defined(__AVX512BF16__) && CARAFE_CPU_VEC_BYTES == 64
#define CARAFE_CPU_BF16 1
#else
#define CARAFE_CPU_BF16 0
#endif
#endif
#ifndef CARAFE_CPU_ISA_NAMESPACE
#define CARAFE_CPU_ISA_NAMESPACE native
#endif

namespace carafe_cpu
{
// Every instruction-set build gets its own namespace, so that the templates compiled for AVX-512 and for AVX2 never
// share a symbol (the linker would keep one of them for both).
inline namespace CARAFE_CPU_ISA_NAMESPACE
{

// ------------------------------------------------------------------------------------------------------------------
// Scalar conversions (IEEE binary16 and bfloat16, round to nearest even).

template <typename To, typename From>
inline To bitCast(From const& v)
{
    static_assert(sizeof(To) == sizeof(From), "bitCast between types of different sizes");
    To t;
    std::memcpy(&t, &v, sizeof t);
    return t;
}

inline float bitsToFloat(uint32_t u)
{
    return bitCast<float>(u);
}

inline uint32_t floatToBits(float f)
{
    return bitCast<uint32_t>(f);
}

inline float halfToFloat(uint16_t h)
{
    uint32_t const sign = uint32_t(h & 0x8000u) << 16;
    uint32_t const exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) // zero or subnormal: mantissa * 2^-24, exact in float
    {
        return bitsToFloat(sign | floatToBits(float(mantissa) * (1.0f / 16777216.0f)));
    }
    if (exponent == 31) // infinity or NaN
    {
        return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
    }
    return bitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline uint16_t floatToHalf(float f)
{
    uint32_t const x = floatToBits(f);
    uint32_t const sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) // NaN: quiet
    {
        return uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x477ff000u) // rounds to 65520 or more (or is infinite): infinity
    {
        return uint16_t(sign | 0x7c00u);
    }
    if (ax < 0x38800000u) // below 2^-14: a half subnormal; adding 0.5 leaves round(|f| * 2^24) in the low bits
    {
        return uint16_t(sign | (floatToBits(bitsToFloat(ax) + 0.5f) - 0x3f000000u));
    }
    ax += 0xc8000fffu + ((ax >> 13) & 1u); // rebias the exponent (-112) and round the 13 dropped bits to even
    return uint16_t(sign | (ax >> 13));
}

inline float bf16ToFloat(uint16_t b)
{
    return bitsToFloat(uint32_t(b) << 16);
}

inline uint16_t floatToBf16(float f)
{
    uint32_t const x = floatToBits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
    {
        return 0x7fc0u; // NaN, as c10::BFloat16 writes it
    }
    return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

template <typename S>
struct ScalarIo // S <-> the accumulator type, one value
{
    template <typename A>
    static A get(S v)
    {
        return static_cast<A>(v);
    }
    template <typename A>
    static S put(A v)
    {
        return static_cast<S>(v);
    }
};
template <>
struct ScalarIo<Half>
{
    template <typename A>
    static A get(Half v)
    {
#if CARAFE_CPU_F16C
        return static_cast<A>(_cvtsh_ss(v.bits));
#else
        return static_cast<A>(halfToFloat(v.bits));
#endif
    }
    template <typename A>
    static Half put(A v)
    {
#if CARAFE_CPU_F16C
        return Half{static_cast<uint16_t>(_cvtss_sh(static_cast<float>(v), _MM_FROUND_TO_NEAREST_INT))};
#else
        return Half{floatToHalf(static_cast<float>(v))};
#endif
    }
};
template <>
struct ScalarIo<BFloat16>
{
    template <typename A>
    static A get(BFloat16 v)
    {
        return static_cast<A>(bf16ToFloat(v.bits));
    }
    template <typename A>
    static BFloat16 put(A v)
    {
        return BFloat16{floatToBf16(static_cast<float>(v))};
    }
};

// ------------------------------------------------------------------------------------------------------------------
// Vectors: GCC/Clang vector extensions of CARAFE_CPU_VEC_BYTES (the registers of the instruction set being compiled).

template <typename A>
struct Vec;
template <>
struct Vec<float>
{
    typedef float type __attribute__((vector_size(CARAFE_CPU_VEC_BYTES)));
    typedef int32_t index __attribute__((vector_size(CARAFE_CPU_VEC_BYTES)));
    static constexpr int L = CARAFE_CPU_VEC_BYTES / 4;
};
template <>
struct Vec<double>
{
    typedef double type __attribute__((vector_size(CARAFE_CPU_VEC_BYTES)));
    typedef int64_t index __attribute__((vector_size(CARAFE_CPU_VEC_BYTES)));
    static constexpr int L = CARAFE_CPU_VEC_BYTES / 8;
};

constexpr int kVecRegs = CARAFE_CPU_VEC_BYTES == 64 ? 32 : 16;

// Keeps a loaded operand in a register: GCC otherwise folds one load per use into the FMAs (a source vector shared by
// several output rows would be loaded once per row, and the loads, not the FMAs, would set the pace).
template <typename V>
inline void inRegister(V& v)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+v"(v));
#elif defined(__aarch64__)
    __asm__("" : "+w"(v));
#else
    (void)v;
#endif
}

template <typename V>
inline V loadV(void const* p)
{
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <typename V>
inline void storeV(void* p, V const& v)
{
    std::memcpy(p, &v, sizeof v);
}

template <typename V, typename A>
inline void storeFirst(A* p, V const& v, int64_t n) // the first n lanes of v
{
    A tmp[sizeof(V) / sizeof(A)];
    storeV(tmp, v);
    std::memcpy(p, tmp, static_cast<size_t>(n) * sizeof(A));
}

template <typename A, typename F, size_t... I>
inline typename Vec<A>::index makeIndex(F f, std::index_sequence<I...>)
{
    using E = std::remove_reference_t<decltype(typename Vec<A>::index{}[0])>;
    return typename Vec<A>::index{static_cast<E>(f(int(I)))...};
}

// The lane shuffles of s = 2: pairs of lanes in and out of two vectors.
template <typename A>
struct Shuffle
{
    using V = typename Vec<A>::type;
    static constexpr int L = Vec<A>::L;
    using Seq = std::make_index_sequence<L>;

    static V evens(V a, V b) // a0 a2 ... b0 b2 ...
    {
        return __builtin_shuffle(a, b, makeIndex<A>([](int i) { return 2 * i; }, Seq{}));
    }
    static V odds(V a, V b)
    {
        return __builtin_shuffle(a, b, makeIndex<A>([](int i) { return 2 * i + 1; }, Seq{}));
    }
    static V zipLo(V a, V b) // a0 b0 a1 b1 ...
    {
        return __builtin_shuffle(a, b, makeIndex<A>([](int i) { return (i % 2) * L + i / 2; }, Seq{}));
    }
    static V zipHi(V a, V b)
    {
        return __builtin_shuffle(a, b, makeIndex<A>([](int i) { return (i % 2) * L + L / 2 + i / 2; }, Seq{}));
    }
};

// Rows of a tensor of type S read as, and written from, vectors of A.
template <typename S, typename A>
struct Io
{
    using V = typename Vec<A>::type;
    static constexpr int L = Vec<A>::L;

    static V load(S const* p)
    {
        if constexpr (std::is_same_v<S, A>)
        {
            return loadV<V>(p);
        }
#if CARAFE_CPU_F16C
        else if constexpr (std::is_same_v<S, Half> && std::is_same_v<A, float>)
        {
#if CARAFE_CPU_VEC_BYTES == 64
            return V(_mm512_maskz_cvtph_ps(__mmask16(0xffff), loadV<__m256i>(p))); // (no undefined source)
#elif CARAFE_CPU_VEC_BYTES == 32
            return V(_mm256_cvtph_ps(loadV<__m128i>(p)));
#else
            return V(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<__m128i const*>(p))));
#endif
        }
#endif
        else if constexpr (std::is_same_v<S, BFloat16> && std::is_same_v<A, float>)
        {
            typedef uint16_t H __attribute__((vector_size(CARAFE_CPU_VEC_BYTES / 2)));
            typedef uint32_t U __attribute__((vector_size(CARAFE_CPU_VEC_BYTES)));
            U const u = __builtin_convertvector(loadV<H>(p), U) << 16;
            return bitCast<V>(u);
        }
        else
        {
            A tmp[L];
            for (int i = 0; i < L; ++i)
            {
                tmp[i] = ScalarIo<S>::template get<A>(p[i]);
            }
            return loadV<V>(tmp);
        }
    }

    static V loadFirst(S const* p, int64_t n) // n < L values, zeros after
    {
        A tmp[L] = {};
        for (int64_t i = 0; i < n; ++i)
        {
            tmp[i] = ScalarIo<S>::template get<A>(p[i]);
        }
        return loadV<V>(tmp);
    }

    static void store(S* p, V v)
    {
        if constexpr (std::is_same_v<S, A>)
        {
            storeV(p, v);
        }
#if CARAFE_CPU_F16C
        else if constexpr (std::is_same_v<S, Half> && std::is_same_v<A, float>)
        {
#if CARAFE_CPU_VEC_BYTES == 64
            storeV(p, _mm512_maskz_cvtps_ph(__mmask16(0xffff), __m512(v), _MM_FROUND_TO_NEAREST_INT));
#elif CARAFE_CPU_VEC_BYTES == 32
            storeV(p, _mm256_cvtps_ph(__m256(v), _MM_FROUND_TO_NEAREST_INT));
#else
            _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_cvtps_ph(__m128(v), _MM_FROUND_TO_NEAREST_INT));
#endif
        }
#endif
#if CARAFE_CPU_BF16
        else if constexpr (std::is_same_v<S, BFloat16> && std::is_same_v<A, float>)
        {
            // rounds to nearest even as the integer path below does; results below 2^-126 flush to zero (the
            // instruction's rule: at most 1.2e-38 away), NaNs stay NaNs
            storeV(p, _mm512_cvtneps_pbh(__m512(v)));
        }
#endif
        else if constexpr (std::is_same_v<S, BFloat16> && std::is_same_v<A, float>)
        {
            typedef uint16_t H __attribute__((vector_size(CARAFE_CPU_VEC_BYTES / 2)));
            typedef uint32_t U __attribute__((vector_size(CARAFE_CPU_VEC_BYTES)));
            U const x = bitCast<U>(v);
            U const rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
            U const nan = (U)((x & 0x7fffffffu) > 0x7f800000u); // all ones where NaN
            storeV(p, __builtin_convertvector((rounded & ~nan) | ((U{} + 0x7fc0u) & nan), H));
        }
        else
        {
            A tmp[L];
            storeV(tmp, v);
            for (int i = 0; i < L; ++i)
            {
                p[i] = ScalarIo<S>::template put<A>(tmp[i]);
            }
        }
    }

    static void storeFirst(S* p, V v, int64_t n)
    {
        A tmp[L];
        storeV(tmp, v);
        for (int64_t i = 0; i < n; ++i)
        {
            p[i] = ScalarIo<S>::template put<A>(tmp[i]);
        }
    }

    // a row of n values: whole vectors, then the rest
    static void storeRow(S* dst, A const* src, int64_t n)
    {
        int64_t j = 0;
        for (; j + L <= n; j += L)
        {
            store(dst + j, loadV<V>(src + j));
        }
        if (j < n)
        {
            storeFirst(dst + j, loadV<V>(src + j), n - j);
        }
    }
};

// Writes bytes to memory that will not be read soon by this thread (a large output): non-temporal stores for the
// 64-byte-aligned middle, so the lines are not first read from memory; streamFence() before other threads read them.
inline void streamBytes(void* dst, void const* src, size_t bytes)
{
#if defined(__x86_64__) && CARAFE_CPU_VEC_BYTES >= 32
    char* d = static_cast<char*>(dst);
    char const* c = static_cast<char const*>(src);
    size_t const head = (64 - (reinterpret_cast<uintptr_t>(d) & 63)) & 63;
    if (bytes >= head + 256)
    {
        std::memcpy(d, c, head);
        size_t j = head;
        for (; j + 64 <= bytes; j += 64)
        {
#if CARAFE_CPU_VEC_BYTES == 64
            _mm512_stream_si512(reinterpret_cast<__m512i*>(d + j), _mm512_loadu_si512(c + j));
#else
            for (size_t half = 0; half < 64; half += 32)
            {
                _mm256_stream_si256(reinterpret_cast<__m256i*>(d + j + half),
                    _mm256_loadu_si256(reinterpret_cast<__m256i const*>(c + j + half)));
            }
#endif
        }
        std::memcpy(d + j, c + j, bytes - j);
        return;
    }
#endif
    std::memcpy(dst, src, bytes);
}

// n values of the accumulator type into a run of the output, converted; through `staging` (n values of S) when
// streamed
template <typename S, typename A>
inline void writeRun(S* dst, A const* src, int64_t n, bool stream, S* staging)
{
    if constexpr (std::is_same_v<S, A>)
    {
        if (stream)
        {
            streamBytes(dst, src, static_cast<size_t>(n) * sizeof(S));
        }
        else
        {
            std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(S));
        }
    }
    else if (stream)
    {
        Io<S, A>::storeRow(staging, src, n);
        streamBytes(dst, staging, static_cast<size_t>(n) * sizeof(S));
    }
    else
    {
        Io<S, A>::storeRow(dst, src, n);
    }
}

inline void streamFence()
{
#if defined(__x86_64__)
    _mm_sfence();
#endif
}

// Outputs at least this large are written with non-temporal stores: they outgrow the caches anyway.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// ------------------------------------------------------------------------------------------------------------------
// Scratch memory: 64-byte aligned, zeroed when (re)allocated, grows only.

template <typename T>
class Scratch
{
public:
    T* get(size_t n)
    {
        if (n > size_)
        {
            size_t const bytes = (std::max<size_t>(n, 1) * sizeof(T) + 63) / 64 * 64;
            data_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
            if (!data_)
            {
                throw std::bad_alloc();
            }
            std::memset(static_cast<void*>(data_.get()), 0, bytes);
            size_ = n;
        }
        return data_.get();
    }

private:
    struct Free
    {
        void operator()(T* p) const
        {
            std::free(p);
        }
    };
    std::unique_ptr<T, Free> data_;
    size_t size_ = 0;
};

// Each thread's staging buffers, kept from call to call (they grow to the largest call it has run): allocating them
// per call would page-fault them afresh every time, as large blocks come straight from the system.
enum class Buffer
{
    kExpanded,
    kKernels,
    kOutput,
    kGradOut,
    kGradKernels,
    kTapGrad,
    kRow,
    kOffsets,
    kConverted,
};

template <typename T, Buffer B>
Scratch<T>& threadScratch()
{
    thread_local Scratch<T> scratch;
    return scratch;
}

// ------------------------------------------------------------------------------------------------------------------
// Layout of the staging buffers of one call.

inline int64_t roundUp(int64_t v, int64_t m)
{
    return (v + m - 1) / m * m;
}

struct Layout
{
    int64_t L;      // lanes of a vector
    int64_t nJV;    // column vectors of an output row
    int64_t wPad;   // nJV * L
    int64_t len;    // "down": length of one phase of an expanded row
    int64_t esz;    // floats of one expanded row (all phases)
    int64_t pPad;   // zeros on each side of a tap-gradient row (backward)
    int64_t pRow;   // pPad + wPad + pPad
    std::vector<int64_t> tapOff; // tap column kx starts at tapOff[kx] in an expanded row

    int64_t lastLanes(int64_t wo) const
    {
        return wo - (nJV - 1) * L;
    }
};

template <typename A>
Layout makeLayout(Geometry const& g)
{
    Layout lay{};
    lay.L = Vec<A>::L;
    lay.nJV = (g.wo + lay.L - 1) / lay.L;
    lay.wPad = lay.nJV * lay.L;
    if (g.up)
    {
        // E[q] = xpad[q / s], q in [0, s (W + 2r)); tap kx reads E[s kx + j] = xpad[j / s + kx]
        lay.len = roundUp(std::max(g.s * (g.w + 2 * g.r), lay.wPad + g.s * (g.k - 1)), lay.L);
        lay.esz = lay.len;
    }
    else
    {
        // E[p][m] = xpad[s m + p]; tap kx reads E[kx % s][kx / s + j] = xpad[s j + kx]
        lay.len = roundUp(std::max((g.w + 2 * g.r + g.s - 1) / g.s, lay.wPad + (g.k - 1) / g.s), lay.L);
        lay.esz = g.s * lay.len;
    }
    lay.tapOff.resize(static_cast<size_t>(g.k));
    for (int64_t kx = 0; kx < g.k; ++kx)
    {
        lay.tapOff[kx] = g.up ? g.s * kx : (kx % g.s) * lay.len + kx / g.s;
    }
    lay.pPad = roundUp(g.s * g.r + 2 * lay.L, lay.L);
    lay.pRow = 2 * lay.pPad + lay.wPad;
    return lay;
}

// Where tap column kx starts: immediates for a compile-time (k, s), the table otherwise.
struct Taps
{
    int64_t const* table;
    int64_t len;
};

template <int S, bool UP>
inline int64_t tapOffset(Taps const& t, int64_t kx)
{
    if constexpr (S > 0)
    {
        if constexpr (UP)
        {
            return S * kx;
        }
        else
        {
            return (kx % S) * t.len + kx / S;
        }
    }
    else
    {
        return t.table[kx];
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Staging: expanded source rows, repacked kernel weights, padded gradient rows (all in the accumulator type).

// Asks for n consecutive values ahead of use: the rows of one channel are a short run that the hardware
// prefetcher would only pick up halfway through.
template <typename S>
inline void prefetchRun(S const* p, int64_t n)
{
    char const* c = reinterpret_cast<char const*>(p);
    for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(S)); b += 64)
    {
        __builtin_prefetch(c + b);
    }
}

// row y of channel plane x into the expanded layout; xpad[t] = x[t - r] (zero outside)
template <typename S, typename A>
void expandRow(Geometry const& g, Layout const& lay, S const* x, A* dst)
{
    using V = typename Vec<A>::type;
    constexpr int L = Vec<A>::L;
    int64_t const s = g.s, w = g.w, r = g.r;
    if (g.up)
    {
        // E[s (t + r) + v] = x[t]
        std::fill(dst, dst + s * r, A(0));
        std::fill(dst + s * (r + w), dst + lay.esz, A(0));
        A* d = dst + s * r;
        int64_t t = 0;
        if (s == 2)
        {
            for (; t + L <= w; t += L)
            {
                V const v = Io<S, A>::load(x + t);
                storeV(d + 2 * t, __builtin_shuffle(v, makeIndex<A>([](int i) { return i / 2; },
                                                          std::make_index_sequence<L>{})));
                storeV(d + 2 * t + L, __builtin_shuffle(v, makeIndex<A>([](int i) { return L / 2 + i / 2; },
                                                              std::make_index_sequence<L>{})));
            }
        }
        for (; t < w; ++t)
        {
            A const v = ScalarIo<S>::template get<A>(x[t]);
            for (int64_t q = 0; q < s; ++q)
            {
                d[s * t + q] = v;
            }
        }
        return;
    }
    // E[p][m] = xpad[s m + p] = x[s m + p - r]: data for m in [mLo, mHi), zeros around it
    for (int64_t p = 0; p < s; ++p)
    {
        A* d = dst + p * lay.len;
        int64_t const mLo = r > p ? (r - p + s - 1) / s : 0, mHi = (w + r - p + s - 1) / s;
        std::fill(d, d + mLo, A(0));
        std::fill(d + mHi, d + lay.len, A(0));
    }
    if (s == 2)
    {
        // x[2i] is E[r % 2][i + r / 2], x[2i + 1] is E[(r + 1) % 2][i + (r + 1) / 2]
        A* even = dst + (r % 2) * lay.len + r / 2;
        A* odd = dst + ((r + 1) % 2) * lay.len + (r + 1) / 2;
        int64_t i = 0;
        for (; 2 * (i + L) <= w; i += L)
        {
            V const a = Io<S, A>::load(x + 2 * i), b = Io<S, A>::load(x + 2 * i + L);
            storeV(even + i, Shuffle<A>::evens(a, b));
            storeV(odd + i, Shuffle<A>::odds(a, b));
        }
        for (; 2 * i < w; ++i)
        {
            even[i] = ScalarIo<S>::template get<A>(x[2 * i]);
            if (2 * i + 1 < w)
            {
                odd[i] = ScalarIo<S>::template get<A>(x[2 * i + 1]);
            }
        }
        return;
    }
    for (int64_t t = 0; t < w; ++t) // x[t] = xpad[t + r] is E[(t + r) % s][(t + r) / s]
    {
        dst[((t + r) % s) * lay.len + (t + r) / s] = ScalarIo<S>::template get<A>(x[t]);
    }
}

// expanded rows [y0, y1) of channels [c, c + cb) of one image: E[cc][y - y0][esz]; rows outside the image are zero
// rows, so that every output row reads all k kernel rows. They are written only when `zeroRows`: the first channel
// block of a band writes them, the later ones (no more channels, the same buffer) find them still zero.
template <typename S, typename A>
void expandRows(Geometry const& g, Layout const& lay, S const* xImage, int64_t c, int64_t cb, int64_t y0, int64_t y1,
    A* E, bool zeroRows)
{
    int64_t const ny = y1 - y0;
    int64_t const ya = std::max<int64_t>(0, y0), yb = std::min(g.h, y1); // rows inside the image
    for (int64_t cc = 0; cc < cb; ++cc)
    {
        S const* plane = xImage + (c + cc) * g.h * g.w;
        S const* next = cc + 1 < cb ? plane + g.h * g.w : nullptr;
        // The next channel's rows are one contiguous run, which the hardware prefetcher would only pick up halfway
        // through: "down" (long runs, little arithmetic per row) asks for all of it now, "up" for each row as it
        // expands the same row here (measured, docs/PERFORMANCE.md: each way is 3-12 % slower for the other mode)
        if (!g.up && next && ya < yb)
        {
            prefetchRun(next + ya * g.w, (yb - ya) * g.w);
        }
        for (int64_t y = y0; y < y1; ++y)
        {
            A* dst = E + (cc * ny + (y - y0)) * lay.esz;
            if (y < 0 || y >= g.h)
            {
                if (zeroRows)
                {
                    std::fill(dst, dst + lay.esz, A(0));
                }
            }
            else
            {
                if (g.up && next)
                {
                    prefetchRun(next + y * g.w, g.w);
                }
                expandRow(g, lay, plane + y * g.w, dst);
            }
        }
    }
}

// kernel weights of output rows [o0, o1), tap-interleaved: Kb[jv][o - o0][tap][L] (zeros past the row's end)
template <typename S, typename A>
void packKernels(Geometry const& g, S const* kGroup, int64_t o0, int64_t o1, A* Kb)
{
    constexpr int L = Vec<A>::L;
    int64_t const nFull = g.wo / L, rest = g.wo - nFull * L, jvStep = (o1 - o0) * g.taps * L;
    for (int64_t o = o0; o < o1; ++o)
    {
        A* rowBase = Kb + (o - o0) * g.taps * L;
        for (int64_t t = 0; t < g.taps; ++t)
        {
            S const* src = kGroup + (t * g.ho + o) * g.wo;
            A* d = rowBase + t * L;
            for (int64_t jv = 0; jv < nFull; ++jv)
            {
                storeV(d + jv * jvStep, Io<S, A>::load(src + jv * L));
            }
            if (rest)
            {
                storeV(d + nFull * jvStep, Io<S, A>::loadFirst(src + nFull * L, rest));
            }
        }
    }
}

// The grad_output rows a band reads, channels [c, c + cb) and output rows [oc0, oc1), staged in the accumulator type
// and padded with zeros to whole vectors (in L2: reading them from the tensor in the tiles is slower, as each tile
// reads several channels' rows, a plane apart): column vector jv of row o of channel cc is at at(jv, o) + cc chStep.
template <typename A>
struct GradRows
{
    A* data; // [cc][o - oc0][wPad]
    int64_t oc0, nOc, wPad;

    A const* at(int64_t jv, int64_t o) const
    {
        return data + (o - oc0) * wPad + jv * Vec<A>::L;
    }
    int64_t chStep() const
    {
        return nOc * wPad;
    }
    int64_t rowStep() const
    {
        return wPad;
    }
};

template <typename S, typename A>
GradRows<A> stageGradRows(Geometry const& g, Layout const& lay, S const* planes, int64_t cb, int64_t oc0, int64_t oc1,
    A* staging)
{
    constexpr int L = Vec<A>::L;
    GradRows<A> const rows{staging, oc0, oc1 - oc0, lay.wPad};
    int64_t const nFull = g.wo / L, rest = g.wo - nFull * L;
    for (int64_t cc = 0; cc < cb; ++cc)
    {
        for (int64_t o = oc0; o < oc1; ++o)
        {
            S const* src = planes + (cc * g.ho + o) * g.wo;
            A* d = staging + cc * rows.chStep() + (o - oc0) * rows.rowStep();
            for (int64_t jv = 0; jv < nFull; ++jv)
            {
                storeV(d + jv * L, Io<S, A>::load(src + jv * L));
            }
            if (rest)
            {
                storeV(d + nFull * L, Io<S, A>::loadFirst(src + nFull * L, rest));
            }
        }
    }
    return rows;
}

// ------------------------------------------------------------------------------------------------------------------
// Micro-kernels over one vector of output columns.

template <int N>
using IC = std::integral_constant<int, N>;

// f(IC<CH>, first channel) over cb channels: tiles of CHMAX, then smaller powers of two
template <int CHMAX, typename F>
inline void channelTiles(int64_t cb, F&& f)
{
    int64_t cc = 0;
    for (; cb - cc >= CHMAX; cc += CHMAX)
    {
        f(IC<CHMAX>{}, cc);
    }
    auto step = [&](auto tag)
    {
        constexpr int N = decltype(tag)::value;
        if constexpr (N < CHMAX)
        {
            if (cb - cc >= N)
            {
                f(tag, cc);
                cc += N;
            }
        }
    };
    step(IC<16>{});
    step(IC<8>{});
    step(IC<4>{});
    step(IC<2>{});
    step(IC<1>{});
}

// f(IC<n>) for a run-time n in [1, NMAX]
template <int NMAX, typename F>
inline void withCount(int64_t n, F&& f)
{
    if constexpr (NMAX > 1)
    {
        if (n >= NMAX)
        {
            f(IC<NMAX>{});
        }
        else
        {
            withCount<NMAX - 1>(n, f);
        }
    }
    else
    {
        f(IC<1>{});
    }
}

// Whole 64-byte lines can go out with a non-temporal store straight from the registers, in between the FMAs: a line
// written whole is never read from memory first (a large output's lines would be), and the memory writes overlap the
// arithmetic instead of following it.
#if defined(__x86_64__) && CARAFE_CPU_VEC_BYTES == 64
constexpr bool kLineStores = true;
#else
constexpr bool kLineStores = false;
#endif

// the first n lanes of v (accumulator type A) to p, converted to the output type D (fp16, bf16) where it is narrower;
// a whole vector with a non-temporal store when `stream` (fp32/fp64 only; p then 64-byte aligned)
template <typename A, typename D, typename V>
inline void storeOut(D* p, V const& v, int64_t n, bool stream = false)
{
    if constexpr (!std::is_same_v<D, A>)
    {
        // converted in the registers (the caller decides whether that pays: forwardKernel's convertInTiles)
        if (n == Vec<A>::L)
        {
            Io<D, A>::store(p, v);
        }
        else
        {
            Io<D, A>::storeFirst(p, v, n);
        }
        return;
    }
    else if (n == static_cast<int64_t>(sizeof(V) / sizeof(A)))
    {
#if defined(__x86_64__) && CARAFE_CPU_VEC_BYTES == 64
        if (stream)
        {
            _mm512_stream_si512(reinterpret_cast<__m512i*>(p), bitCast<__m512i>(v));
            return;
        }
#else
        (void)stream;
#endif
        storeV(p, v);
    }
    else
    {
        storeFirst(p, v, n);
    }
}

// Source-row shift of output row i of a tile whose first row is a multiple of S: "up" rows come in groups of S that
// read the same source rows, "down" rows are S source rows apart.
template <int S, bool UP>
constexpr int rowShift(int i)
{
    return UP ? i / S : S * i;
}

// forward, compile-time k and s: NR consecutive output rows x CH channels. Row i reads the source rows
// rowShift(i) + ky of the tile's window; kb = Kb(jv, first row) (rows K² L apart), e = E(first channel, first row of
// the window, column jv L), channels eCh apart. The whole window loop unrolls: every offset is an immediate or a
// multiple of one stride, so the tile keeps one pointer per channel.
template <int K, int S, bool UP, int NR, int CH, typename A, typename D>
__attribute__((noinline)) void forwardTileK(int64_t len, A const* kb, A const* e, int64_t esz, int64_t eCh, D* d,
    int64_t dRow, int64_t dCh, int64_t n, bool stream)
{
    using V = typename Vec<A>::type;
    constexpr int L = Vec<A>::L;
    constexpr int T = K * K;
    constexpr int Q = rowShift<S, UP>(NR - 1) + K;
    Taps const taps{nullptr, len};
    V acc[NR][CH];
    for (int i = 0; i < NR; ++i)
    {
        for (int ch = 0; ch < CH; ++ch)
        {
            acc[i][ch] = V{};
        }
    }
#pragma GCC unroll 8
    for (int q = 0; q < Q; ++q)
    {
        A const* eq = e + q * esz;
#pragma GCC unroll 8
        for (int kx = 0; kx < K; ++kx)
        {
            int64_t const off = tapOffset<S, UP>(taps, kx);
            V kv[NR];
            for (int i = 0; i < NR; ++i)
            {
                int const ky = q - rowShift<S, UP>(i);
                kv[i] = (ky >= 0 && ky < K) ? loadV<V>(kb + (i * T + ky * K + kx) * L) : V{};
            }
#pragma GCC unroll 32
            for (int ch = 0; ch < CH; ++ch)
            {
                V ev = loadV<V>(eq + ch * eCh + off);
                inRegister(ev);
                for (int i = 0; i < NR; ++i)
                {
                    int const ky = q - rowShift<S, UP>(i);
                    if (ky >= 0 && ky < K)
                    {
                        acc[i][ch] += kv[i] * ev;
                    }
                }
            }
        }
    }
    for (int i = 0; i < NR; ++i)
    {
        for (int ch = 0; ch < CH; ++ch)
        {
            storeOut<A>(d + i * dRow + ch * dCh, acc[i][ch], n, stream);
        }
    }
}

// forward, any k and s: ROWS output rows that read the same source rows x CH channels, run-time tap offsets
template <int ROWS, int CH, typename A, typename D>
inline void forwardTile(Taps const& taps, int64_t k, A const* kb, int64_t kbRow, A const* e, int64_t esz,
    int64_t eCh, D* d, int64_t dRow, int64_t dCh, int64_t n)
{
    using V = typename Vec<A>::type;
    constexpr int L = Vec<A>::L;
    V acc[ROWS][CH];
    for (int row = 0; row < ROWS; ++row)
    {
        for (int ch = 0; ch < CH; ++ch)
        {
            acc[row][ch] = V{};
        }
    }
    for (int64_t ky = 0; ky < k; ++ky)
    {
        A const* er = e + ky * esz;
        A const* kr = kb + ky * k * L;
        for (int64_t kx = 0; kx < k; ++kx)
        {
            int64_t const off = taps.table[kx];
            V kv[ROWS];
            for (int row = 0; row < ROWS; ++row)
            {
                kv[row] = loadV<V>(kr + row * kbRow + kx * L);
            }
#pragma GCC unroll 32
            for (int ch = 0; ch < CH; ++ch)
            {
                V ev = loadV<V>(er + ch * eCh + off);
                inRegister(ev);
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
            storeOut<A>(d + row * dRow + ch * dCh, acc[row][ch], n);
        }
    }
}

// grad_kernels: ROWS output rows (same source rows) x NKY kernel rows x NK taps of each, summed over cb channels;
// d[row][tap] += sum_c G[c][row] * E[c][ky][tap column]. d = gkB(jv, row 0, tap (ky0, kx0)), rows dRow apart.
template <int S, bool UP, int ROWS, int NKY, int NK, typename A>
inline void gradKernelsTile(Taps const& taps, int64_t kx0, int64_t k, int64_t cb, A const* gv0, int64_t gCh,
    int64_t gRow, A const* e, int64_t esz, int64_t eCh, A* d, int64_t dRow)
{
    using V = typename Vec<A>::type;
    constexpr int L = Vec<A>::L;
    V acc[ROWS][NKY * NK];
    int64_t off[NK];
    for (int t = 0; t < NK; ++t)
    {
        off[t] = tapOffset<S, UP>(taps, kx0 + t);
    }
    for (int row = 0; row < ROWS; ++row)
    {
        for (int t = 0; t < NKY * NK; ++t)
        {
            acc[row][t] = V{};
        }
    }
    for (int64_t cc = 0; cc < cb; ++cc)
    {
        V gv[ROWS];
        for (int row = 0; row < ROWS; ++row)
        {
            gv[row] = loadV<V>(gv0 + cc * gCh + row * gRow);
        }
        A const* ec = e + cc * eCh;
#pragma GCC unroll 8
        for (int kyi = 0; kyi < NKY; ++kyi)
        {
#pragma GCC unroll 8
            for (int t = 0; t < NK; ++t)
            {
                V ev = loadV<V>(ec + kyi * esz + off[t]);
                inRegister(ev);
                for (int row = 0; row < ROWS; ++row)
                {
                    acc[row][kyi * NK + t] += gv[row] * ev;
                }
            }
        }
    }
    for (int row = 0; row < ROWS; ++row)
    {
        for (int kyi = 0; kyi < NKY; ++kyi)
        {
            for (int t = 0; t < NK; ++t)
            {
                A* p = d + row * dRow + (kyi * k + t) * L;
                storeV(p, loadV<V>(p) + acc[row][kyi * NK + t]);
            }
        }
    }
}

// grad_features of one source row, CH channels x NK taps of a kernel row: for each tap, the sum over the (kernel
// row, output row) pairs that read the source row of kernels * grad_out, into its own row of P (summing the
// overlapping tap columns in place would stall on store forwarding); contractTaps folds P into the source row.
template <int CH, int NK, typename A>
inline void gradFeaturesTile(int64_t nContrib, int64_t const* gRowIdx, int64_t const* kOff, A const* G, int64_t gCh,
    int64_t gRow, A const* Kb, A* p, int64_t pCh, int64_t pKx)
{
    using V = typename Vec<A>::type;
    constexpr int L = Vec<A>::L;
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
        A const* gp = G + gRowIdx[e] * gRow;
        A const* kp = Kb + kOff[e];
        V gv[CH];
        for (int ch = 0; ch < CH; ++ch)
        {
            gv[ch] = loadV<V>(gp + ch * gCh);
        }
#pragma GCC unroll 8
        for (int t = 0; t < NK; ++t)
        {
            V kv = loadV<V>(kp + t * L);
            inRegister(kv);
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
            storeV(p + ch * pCh + t * pKx, acc[ch][t]);
        }
    }
}

// gx[x] for x in [0, w) from the tap rows P[kx][pPad + j] (zero outside the output row): "up":
// gx[t] = sum_kx sum_v P[kx][s (t + r - kx) + v]; "down": gx[x] = sum over kx = x + r (mod s) of
// P[kx][(x + r - kx) / s].
// dst holds roundUp(w, 2 L) values.
template <typename A>
void contractTaps(Geometry const& g, Layout const& lay, A const* P, A* dst)
{
    using V = typename Vec<A>::type;
    constexpr int L = Vec<A>::L;
    int64_t const s = g.s, w = g.w, r = g.r, k = g.k;
    A const* p0 = P + lay.pPad;
    if (g.up && s == 2)
    {
        for (int64_t t = 0; t < w; t += L)
        {
            V sum{};
            for (int64_t kx = 0; kx < k; ++kx)
            {
                A const* q = p0 + kx * lay.pRow + 2 * (t + r - kx);
                V const a = loadV<V>(q), b = loadV<V>(q + L);
                sum += Shuffle<A>::evens(a, b) + Shuffle<A>::odds(a, b);
            }
            storeV(dst + t, sum);
        }
        return;
    }
    if (!g.up && s == 2)
    {
        int64_t const pe = r % 2; // taps of the even columns have the parity of r
        for (int64_t m = 0; 2 * m < w; m += L)
        {
            V even{}, odd{};
            for (int64_t kx = pe; kx < k; kx += 2)
            {
                even += loadV<V>(p0 + kx * lay.pRow + m + (r - kx) / 2);
            }
            for (int64_t kx = 1 - pe; kx < k; kx += 2)
            {
                odd += loadV<V>(p0 + kx * lay.pRow + m + (r + 1 - kx) / 2);
            }
            storeV(dst + 2 * m, Shuffle<A>::zipLo(even, odd));
            storeV(dst + 2 * m + L, Shuffle<A>::zipHi(even, odd));
        }
        return;
    }
    for (int64_t x = 0; x < w; ++x)
    {
        A sum = 0;
        for (int64_t kx = 0; kx < k; ++kx)
        {
            if (g.up)
            {
                A const* q = p0 + kx * lay.pRow + s * (x + r - kx);
                for (int64_t v = 0; v < s; ++v)
                {
                    sum += q[v];
                }
            }
            else
            {
                int64_t const col = x + r - kx;
                if (((col % s) + s) % s == 0)
                {
                    sum += p0[kx * lay.pRow + col / s];
                }
            }
        }
        dst[x] = sum;
    }
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

inline Schedule makeSchedule(Geometry const& g, int64_t available, int64_t bandRows)
{
    double const macs = double(g.n) * g.c * g.ho * g.wo * g.taps;
    int64_t const threads = macs < kParallelMinMacs ? 1 : std::max<int64_t>(1, available);
    // about bandRows output rows per band, fewer when there would be too few items to share among the threads
    int64_t upb = std::max<int64_t>(1, bandRows / g.rowsPerUnit);
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
    int64_t ni, gi, ng; // image, group, image * groups + group
    int64_t o0, o1;     // owned output rows
    int64_t ys0, ys1;   // owned source rows
    int64_t ylo, yhi;   // source rows the owned output rows read, rows outside the image included
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
    b.ylo = g.base(b.o0) - g.r; // may lie outside the image: E holds zero rows there
    b.yhi = g.base(b.o1 - 1) + g.r + 1;
    return b;
}

// ROWS = 2 when output rows o and o + 1 exist in [o, end) and read the same source rows
inline int64_t rowsAt(Geometry const& g, int64_t o, int64_t end)
{
    return (g.up && g.s >= 2 && o + 1 < end && g.base(o + 1) == g.base(o)) ? 2 : 1;
}

// Register tiles: accumulators fill the registers less the operands of one step.
constexpr bool kWide = kVecRegs == 32;
constexpr int kAccRegs = kWide ? 24 : 12;
constexpr int kMaxTapChunk = kWide ? 7 : 5; // taps of one kernel row per tile when k is not compile-time
constexpr int64_t kChannelBlock = 16;       // channels whose expanded rows are built together (kept in L2)
constexpr int64_t kBackwardChannelBlock = 16;
// output rows per band: the rows around a band that it reads too (k - 1 source rows; the backward also the output
// rows around it) are read again by the next band, so longer bands read less twice but stage more per channel block
constexpr int64_t kForwardBandRows = 8;
constexpr int64_t kBackwardBandRows = 16;
// forward tiles of the compile-time shapes: rows x channels, and the smaller row count that ends a band (measured
// alone on Zen 4, GMAC/s at 58.5 peak: AVX-512 up 4 x 6 57, 2 x 12 52; down 2 x 8 45, 2 x 12 40, 4 x 6 24, 1 x 8 34;
// AVX2 up 2 x 4 41, 2 x 6 38; down 2 x 4 41, 2 x 6 40)
template <bool UP>
constexpr int kFwdRows = UP ? (kWide ? 4 : 2) : 2;
template <bool UP>
constexpr int kFwdRowsLast = UP ? 2 : 1;
template <bool UP>
constexpr int fwdChannels(int rows)
{
    if (!kWide)
    {
        return rows == 1 ? 8 : 4;
    }
    return UP ? (rows == 4 ? 6 : 12) : (rows == 2 ? 12 : 8);
}

// The compile-time shape of a call: f(IC<K>, IC<S>) with (0, 0) for "any k and s".
template <typename A, typename F>
inline auto withShape(Geometry const& g, F&& f)
{
    if constexpr (std::is_same_v<A, float>)
    {
        if (g.s == 2 && g.k == 5)
        {
            return f(IC<5>{}, IC<2>{});
        }
        if (g.s == 2 && g.k == 3)
        {
            return f(IC<3>{}, IC<2>{});
        }
    }
    return f(IC<0>{}, IC<0>{});
}
// ------------------------------------------------------------------------------------------------------------------
// Forward.

// The output rows [b.o0, b.o1) of channels [0, cb) of a block into dst(cc, o) = dst + cc dCh + (o - o0) dRow;
// rowsDone(o, rows) after each tile row [o, o + rows) of all the channels.
template <int K, int S, bool UP, typename A, typename D, typename RowsDone>
void forwardBand(Geometry const& g, Layout const& lay, Band const& b, A const* E, int64_t ny, A const* Kb, int64_t cb,
    D* dst, int64_t dCh, int64_t dRow, int64_t lastLanes, bool lineStores, RowsDone&& rowsDone)
{
    constexpr int L = Vec<A>::L;
    int64_t const nO = b.o1 - b.o0, eCh = ny * lay.esz, kbJv = nO * g.taps * L;
    for (int64_t o = b.o0; o < b.o1;)
    {
        A const* eWin = E + (g.base(o) - g.r - b.ylo) * lay.esz; // first source row of o's window
        A const* kbRows = Kb + (o - b.o0) * g.taps * L;
        D* dRows = dst + (o - b.o0) * dRow;
        int64_t rows;
        if constexpr (K > 0)
        {
            constexpr int NR = kFwdRows<UP>, NRL = kFwdRowsLast<UP>;
            rows = b.o1 - o >= NR ? NR : NRL;
            // channel tiles outside, columns inside: a tile's output rows are written front to back
            auto tile = [&](auto nrTag, auto chTag, int64_t cc)
            {
                for (int64_t jv = 0; jv < lay.nJV; ++jv)
                {
                    int64_t const n = jv + 1 < lay.nJV ? L : lastLanes;
                    forwardTileK<K, S, UP, decltype(nrTag)::value, decltype(chTag)::value, A, D>(lay.len,
                        kbRows + jv * kbJv, eWin + cc * eCh + jv * L, lay.esz, eCh, dRows + cc * dCh + jv * L, dRow,
                        dCh, n, lineStores);
                }
            };
            if (rows == NR)
            {
                channelTiles<fwdChannels<UP>(NR)>(cb, [&](auto ch, int64_t cc) { tile(IC<NR>{}, ch, cc); });
            }
            else if constexpr (NRL != NR)
            {
                channelTiles<fwdChannels<UP>(NRL)>(cb, [&](auto ch, int64_t cc) { tile(IC<NRL>{}, ch, cc); });
            }
        }
        else
        {
            rows = rowsAt(g, o, b.o1);
            Taps const taps{lay.tapOff.data(), lay.len};
            for (int64_t jv = 0; jv < lay.nJV; ++jv)
            {
                int64_t const n = jv + 1 < lay.nJV ? L : lastLanes;
                auto tile = [&](auto rowsTag, auto chTag, int64_t cc)
                {
                    forwardTile<decltype(rowsTag)::value, decltype(chTag)::value, A, D>(taps, g.k, kbRows + jv * kbJv,
                        g.taps * L, eWin + cc * eCh + jv * L, lay.esz, eCh, dRows + cc * dCh + jv * L, dRow, dCh, n);
                };
                if (rows == 2)
                {
                    channelTiles<kAccRegs / 2>(cb, [&](auto ch, int64_t cc) { tile(IC<2>{}, ch, cc); });
                }
                else
                {
                    channelTiles<kAccRegs>(cb, [&](auto ch, int64_t cc) { tile(IC<1>{}, ch, cc); });
                }
            }
        }
        rowsDone(o, rows);
        o += rows;
    }
}

template <typename scalar_t, typename acc_t, typename Runner>
void forwardKernel(Runner const& runner, Geometry const& g, scalar_t const* x, scalar_t const* kern, scalar_t* out)
{
    using A = acc_t;
    Schedule const bands = makeSchedule(g, runner.threads(), kForwardBandRows);
    Layout const lay = makeLayout<A>(g);
    int64_t const plane = g.ho * g.wo;
    int64_t const cbMax = std::min(kChannelBlock, g.cg);
    // When the bands do not share evenly among the threads, one thread would run the last band alone: each band's
    // channel blocks are then split among the threads (the forward's channels are independent; each part packs the
    // band's kernel weights itself)
    int64_t const blocks = (g.cg + kChannelBlock - 1) / kChannelBlock;
    int64_t const splits = bands.threads > 1 && bands.items % bands.threads != 0 ? std::min(bands.threads, blocks) : 1;
    Schedule sch = bands;
    sch.items = bands.items * splits;
    bool const stream = double(g.n) * g.c * plane * sizeof(scalar_t) >= double(kStreamBytes);
    // A narrow output leaves the tiles converted where that takes one instruction a vector (fp16 with F16C, bf16
    // with AVX512_BF16); bf16's rounding otherwise takes a dozen, which cost the "up" tiles more than a separate pass
    // over rows staged in fp32 does (docs/PERFORMANCE.md)
    constexpr bool convertInTiles = std::is_same_v<scalar_t, A> || (std::is_same_v<scalar_t, Half> && CARAFE_CPU_F16C)
        || (std::is_same_v<scalar_t, BFloat16> && CARAFE_CPU_BF16);
    using D = std::conditional_t<convertInTiles, scalar_t, A>;
    // The tiles write the output themselves: with non-temporal stores when it is large and its rows are whole 64-byte
    // lines of fp32/fp64 (compile-time k and s only), plain ones when it fits the caches. Otherwise a band's runs are
    // staged (in L2) and go out front to back, converted where still needed, non-temporal when large: plain stores from
    // the tiles, scattered over a dozen rows and channels, would each read a line of a large output first. A narrow
    // tile row is half a line, so a narrow output is stored from the tiles only while it is small (measured, fp16:
    // up 25×42's 2.1 MB 6-9 % faster from the tiles, down 200×336's 8.6 MB 4-5 % faster staged).
    bool const lineStores = std::is_same_v<scalar_t, A> && stream && kLineStores && (g.wo * sizeof(A)) % 64 == 0
        && reinterpret_cast<uintptr_t>(out) % 64 == 0
        && withShape<A>(g, [](auto kTag, auto) { return kTag.value > 0; });
    bool const smallNarrow = convertInTiles && double(g.n) * g.c * plane * sizeof(scalar_t) < double(kStreamBytes / 4);
    bool const staged = std::is_same_v<scalar_t, A> ? stream && !lineStores : !smallNarrow;

    withShape<A>(g,
        [&](auto kTag, auto sTag)
        {
            constexpr int K = decltype(kTag)::value, S = decltype(sTag)::value;
            runItems(runner, sch,
                [&]
                {
                    return [&, &E = threadScratch<A, Buffer::kExpanded>(), &Kb = threadScratch<A, Buffer::kKernels>(),
                               &Ob = threadScratch<D, Buffer::kOutput>(),
                               &Conv = threadScratch<scalar_t, Buffer::kConverted>()](int64_t item)
                    {
                        Band const b = bandOf(g, bands, item / splits);
                        int64_t const split = item % splits;
                        int64_t const ny = b.yhi - b.ylo, nO = b.o1 - b.o0, chunk = nO * g.wo;
                        A* kb = Kb.get(static_cast<size_t>(nO * lay.nJV * g.taps * lay.L));
                        packKernels(g, kern + b.ng * g.taps * plane, b.o0, b.o1, kb);
                        A* e = E.get(static_cast<size_t>(cbMax * ny * lay.esz));
                        // a channel's output rows of the band are one contiguous run of the output
                        D* ob = staged ? Ob.get(static_cast<size_t>(cbMax * chunk)) : nullptr;
                        scalar_t* converted = convertInTiles ? nullptr : Conv.get(chunk);
                        int64_t const blk0 = split * blocks / splits, blk1 = (split + 1) * blocks / splits;
                        for (int64_t blk = blk0; blk < blk1; ++blk)
                        {
                            int64_t const c0 = blk * kChannelBlock, cb = std::min(kChannelBlock, g.cg - c0);
                            int64_t const cFirst = b.gi * g.cg + c0; // channel index within the image
                            expandRows(g, lay, x + b.ni * g.c * g.h * g.w, cFirst, cb, b.ylo, b.yhi, e, blk == blk0);
                            scalar_t* o = out + ((b.ni * g.c + cFirst) * g.ho + b.o0) * g.wo;
                            D* dst = ob;
                            int64_t dCh = chunk;
                            if constexpr (convertInTiles)
                            {
                                if (!staged)
                                {
                                    dst = o;
                                    dCh = plane;
                                }
                            }
                            // staged rows go out as soon as a tile row of all the channels is done, while they are
                            // still in L1/L2
                            auto rowsDone = [&](int64_t oFirst, int64_t rows)
                            {
                                if (staged)
                                {
                                    int64_t const at = (oFirst - b.o0) * g.wo, n = rows * g.wo;
                                    for (int64_t cc = 0; cc < cb; ++cc)
                                    {
                                        writeRun(o + cc * plane + at, ob + cc * chunk + at, n, stream, converted);
                                    }
                                }
                            };
                            if (g.up)
                            {
                                forwardBand<K, S, true>(g, lay, b, e, ny, kb, cb, dst, dCh, g.wo, lay.lastLanes(g.wo),
                                    lineStores, rowsDone);
                            }
                            else
                            {
                                forwardBand<K, S, false>(g, lay, b, e, ny, kb, cb, dst, dCh, g.wo,
                                    lay.lastLanes(g.wo), lineStores, rowsDone);
                            }
                        }
                        if (stream)
                        {
                            streamFence();
                        }
                    };
                });
        });
}

// ------------------------------------------------------------------------------------------------------------------
// Backward.

// grad_kernels of the output rows [b.o0, b.o1) from channels [0, cb) of a block: gkB[jv][o - o0][tap][L] += ...
template <int K, int S, bool UP, typename A>
void gradKernelsBand(Geometry const& g, Layout const& lay, Band const& b, A const* E, int64_t ny,
    GradRows<A> const& G, int64_t cb, A* gkB)
{
    constexpr int L = Vec<A>::L;
    int64_t const k = K ? K : g.k;
    Taps const taps{lay.tapOff.data(), lay.len};
    int64_t const eCh = ny * lay.esz, dRow = g.taps * L, dJv = (b.o1 - b.o0) * dRow;
    for (int64_t o = b.o0; o < b.o1;)
    {
        int64_t const rows = rowsAt(g, o, b.o1);
        A const* eWin = E + (g.base(o) - g.r - b.ylo) * lay.esz;
        for (int64_t jv = 0; jv < lay.nJV; ++jv)
        {
            A const* gv0 = G.at(jv, o);
            int64_t const gCh = G.chStep(), gRow = G.rowStep();
            A* d0 = gkB + jv * dJv + (o - b.o0) * dRow;
            A const* e0 = eWin + jv * L;
            auto tiles = [&](auto rowsTag)
            {
                constexpr int ROWS = decltype(rowsTag)::value;
                if constexpr (K > 0)
                {
                    constexpr int NKYMAX = std::max(1, std::min(K, kAccRegs / (ROWS * K)));
                    for (int64_t ky = 0; ky < K;)
                    {
                        withCount<NKYMAX>(K - ky,
                            [&](auto nkyTag)
                            {
                                constexpr int NKY = decltype(nkyTag)::value;
                                gradKernelsTile<S, UP, ROWS, NKY, K, A>(taps, 0, K, cb, gv0, gCh, gRow,
                                    e0 + ky * lay.esz, lay.esz, eCh, d0 + ky * K * L, dRow);
                                ky += NKY;
                            });
                    }
                }
                else
                {
                    for (int64_t ky = 0; ky < k; ++ky)
                    {
                        for (int64_t kx0 = 0; kx0 < k; kx0 += kMaxTapChunk)
                        {
                            withCount<kMaxTapChunk>(k - kx0,
                                [&](auto nkTag)
                                {
                                    gradKernelsTile<S, UP, ROWS, 1, decltype(nkTag)::value, A>(taps, kx0, k, cb, gv0,
                                        gCh, gRow, e0 + ky * lay.esz, lay.esz, eCh, d0 + (ky * k + kx0) * L, dRow);
                                });
                        }
                    }
                }
            };
            if constexpr (UP)
            {
                if (rows == 2)
                {
                    tiles(IC<2>{});
                    continue;
                }
            }
            if constexpr (!UP || S != 2) // "up" with s = 2 always pairs its rows (bands start at even rows, Ho even)
            {
                tiles(IC<1>{});
            }
        }
        o += rows;
    }
}

// The output rows that read source row y, with the kernel row that reads it: (kernel row ky, output row o) pairs as
// o - oc0 and as the offset into one column vector of Kb ([o - oc0][tap][L], tap ky * k).
inline int64_t contributors(Geometry const& g, Layout const& lay, int64_t y, int64_t oc0, int64_t* gRowIdx,
    int64_t* kOff)
{
    int64_t n = 0;
    for (int64_t ky = 0; ky < g.k; ++ky)
    {
        int64_t const base = y - ky + g.r; // centre row of the outputs that read y through kernel row ky
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
            gRowIdx[n] = o - oc0;
            kOff[n] = ((o - oc0) * g.taps + ky * g.k) * lay.L;
            ++n;
        }
    }
    return n;
}

// grad_features of the source rows [b.ys0, b.ys1) of channels [0, cb) of a block; gxBlock is channel 0's plane.
template <int K, typename scalar_t, typename A>
void gradFeaturesBand(Geometry const& g, Layout const& lay, Band const& b, GradRows<A> const& G, A const* Kb,
    int64_t cb, A* P, A* row, int64_t* gRowIdx, int64_t* kOff, scalar_t* gxBlock, bool stream, scalar_t* converted)
{
    constexpr int L = Vec<A>::L;
    constexpr int KC = K ? K : kMaxTapChunk; // taps per tile
    int64_t const k = K ? K : g.k;
    int64_t const pCh = k * lay.pRow, kbJv = G.nOc * g.taps * L;
    for (int64_t y = b.ys0; y < b.ys1; ++y)
    {
        int64_t const nC = contributors(g, lay, y, G.oc0, gRowIdx, kOff);
        channelTiles<std::max(1, kAccRegs / KC)>(cb,
            [&](auto chTag, int64_t cc)
            {
                constexpr int CH = decltype(chTag)::value;
                for (int64_t kx0 = 0; kx0 < k; kx0 += KC)
                {
                    auto tile = [&](auto nkTag)
                    {
                        constexpr int NK = decltype(nkTag)::value;
                        for (int64_t jv = 0; jv < lay.nJV; ++jv)
                        {
                            gradFeaturesTile<CH, NK, A>(nC, gRowIdx, kOff, G.at(jv, G.oc0) + cc * G.chStep(),
                                G.chStep(), G.rowStep(), Kb + jv * kbJv + kx0 * L,
                                P + kx0 * lay.pRow + lay.pPad + jv * L, pCh, lay.pRow);
                        }
                    };
                    if constexpr (K > 0)
                    {
                        tile(IC<K>{});
                    }
                    else
                    {
                        withCount<kMaxTapChunk>(k - kx0, tile);
                    }
                }
                for (int ch = 0; ch < CH; ++ch)
                {
                    contractTaps(g, lay, P + ch * pCh, row);
                    writeRun(gxBlock + ((cc + ch) * g.h + y) * g.w, row, g.w, stream, converted);
                }
            });
    }
}

template <typename scalar_t, typename acc_t, typename Runner>
void backwardKernel(Runner const& runner, Geometry const& g, scalar_t const* gout, scalar_t const* x,
    scalar_t const* kern, scalar_t* gradX, scalar_t* gradK)
{
    using A = acc_t;
    using V = typename Vec<A>::type;
    constexpr int L = Vec<A>::L;
    Schedule const sch = makeSchedule(g, runner.threads(), kBackwardBandRows);
    Layout const lay = makeLayout<A>(g);
    int64_t const plane = g.ho * g.wo;
    int64_t const cbMax = std::min(kBackwardChannelBlock, g.cg);
    int64_t const pChannels = std::max(kAccRegs / 3, kAccRegs / kMaxTapChunk); // the widest grad_features tile

    withShape<A>(g,
        [&](auto kTag, auto sTag)
        {
            constexpr int K = decltype(kTag)::value, S = decltype(sTag)::value;
            runItems(runner, sch,
                [&]
                {
                    Scratch<A>& P = threadScratch<A, Buffer::kTapGrad>();
                    // the zeros around each tap row are read as such: clear what an earlier call left there
                    size_t const pSize = static_cast<size_t>(pChannels * g.k * lay.pRow);
                    std::fill(P.get(pSize), P.get(pSize) + pSize, A(0));
                    return [&, &P = P, pSize, &E = threadScratch<A, Buffer::kExpanded>(),
                               &Kb = threadScratch<A, Buffer::kKernels>(), &Gb = threadScratch<A, Buffer::kGradOut>(),
                               &GkB = threadScratch<A, Buffer::kGradKernels>(), &Row = threadScratch<A, Buffer::kRow>(),
                               &Off = threadScratch<int64_t, Buffer::kOffsets>(),
                               &Conv = threadScratch<scalar_t, Buffer::kConverted>()](int64_t item)
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
                        int64_t const nOc = oc1 - oc0, ny = b.yhi - b.ylo, nO = b.o1 - b.o0;

                        A* kb = Kb.get(static_cast<size_t>(nOc * lay.nJV * g.taps * L));
                        packKernels(g, kern + b.ng * g.taps * plane, oc0, oc1, kb);
                        size_t const gkSize = static_cast<size_t>(nO * lay.nJV * g.taps * L);
                        A* gk = GkB.get(gkSize);
                        std::fill(gk, gk + gkSize, A(0));
                        A* e = E.get(static_cast<size_t>(cbMax * ny * lay.esz));
                        A* gb = Gb.get(static_cast<size_t>(cbMax * nOc * lay.wPad));
                        bool const stream = double(g.n) * g.c * g.h * g.w * sizeof(scalar_t) >= double(kStreamBytes);
                        A* p = P.get(pSize);
                        A* row = Row.get(static_cast<size_t>(roundUp(g.w, 2 * L)));
                        scalar_t* converted = std::is_same_v<scalar_t, A> ? nullptr : Conv.get(g.w);
                        int64_t* off = Off.get(static_cast<size_t>(2 * g.k * g.s));

                        for (int64_t c0 = 0; c0 < g.cg; c0 += kBackwardChannelBlock)
                        {
                            int64_t const cb = std::min(kBackwardChannelBlock, g.cg - c0);
                            int64_t const cFirst = b.gi * g.cg + c0;
                            GradRows<A> const G = stageGradRows(g, lay, gout + (b.ni * g.c + cFirst) * plane, cb,
                                oc0, oc1, gb);
                            expandRows(g, lay, x + b.ni * g.c * g.h * g.w, cFirst, cb, b.ylo, b.yhi, e, c0 == 0);
                            if (g.up)
                            {
                                gradKernelsBand<K, S, true>(g, lay, b, e, ny, G, cb, gk);
                            }
                            else
                            {
                                gradKernelsBand<K, S, false>(g, lay, b, e, ny, G, cb, gk);
                            }
                            gradFeaturesBand<K>(g, lay, b, G, kb, cb, p, row, off, off + g.k * g.s,
                                gradX + (b.ni * g.c + cFirst) * g.h * g.w, stream, converted);
                        }

                        scalar_t* gkOut = gradK + b.ng * g.taps * plane;
                        int64_t const lastLanes = lay.lastLanes(g.wo);
                        for (int64_t t = 0; t < g.taps; ++t)
                        {
                            for (int64_t o = b.o0; o < b.o1; ++o)
                            {
                                A const* src = gk + ((o - b.o0) * g.taps + t) * L;
                                scalar_t* d = gkOut + t * plane + o * g.wo;
                                for (int64_t jv = 0; jv < lay.nJV; ++jv)
                                {
                                    V const v = loadV<V>(src + jv * nO * g.taps * L);
                                    if (jv + 1 < lay.nJV)
                                    {
                                        Io<scalar_t, A>::store(d + jv * L, v);
                                    }
                                    else
                                    {
                                        Io<scalar_t, A>::storeFirst(d + jv * L, v, lastLanes);
                                    }
                                }
                            }
                        }
                        if (stream)
                        {
                            streamFence();
                        }
                    };
                });
        });
}

} // namespace CARAFE_CPU_ISA_NAMESPACE
} // namespace carafe_cpu
