// How the forward's register tiles should write a large output: the "up" tile of the CPU kernels (4 output rows x 6
// channels x 25 taps, AVX-512) over the loop structure of an FPN upsample (256 channels, 200 x 336 output), its input
// in L1, writing the 69 MB output four ways; and the core's FMA peak (24 independent chains of 16-lane FMAs), the
// ceiling of any kernel here. docs/PERFORMANCE.md quotes it.
//
//   g++ -O3 -ffp-contract=fast -march=x86-64-v4 -std=c++17 -I carafe_deploy/csrc
//       benchmarks/cpu_tile_stores.cpp -o build/cpu_tile_stores && build/cpu_tile_stores
//
// Needs a CPU with AVX-512 (the way the non-temporal tile stores are built); best of 5 passes, this process's CPU time.
#include "carafe_cpu_kernels.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>

using namespace carafe_cpu;

namespace
{

double cpuSeconds()
{
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

constexpr int64_t kC = 256, kHo = 200, kWo = 336, kPlane = kHo * kWo, kBlock = 16, kL = 16;

enum class Mode
{
    kNoOutput,      // the arithmetic alone: every tile writes the same small buffer in L1
    kPlainStores,   // the tiles write the output with plain stores
    kStagedStreamed, // the tiles fill a block's rows in L2, which go out with non-temporal stores after each block
    kRegisterStreamed, // the tiles write the output with non-temporal stores straight from the registers
};

// multiply-adds per second of 24 independent chains of 16-lane FMAs
double fmaPeak()
{
    __m512 acc[24];
    for (int i = 0; i < 24; ++i)
    {
        acc[i] = _mm512_set1_ps(0.001f * float(i));
    }
    __m512 b = _mm512_set1_ps(0.999f);
    __m512 const c = _mm512_set1_ps(1e-4f);
    int64_t const n = 10000000;
    double const t0 = cpuSeconds();
    for (int64_t i = 0; i < n; ++i)
    {
#pragma GCC unroll 24
        for (int k = 0; k < 24; ++k)
        {
            acc[k] = _mm512_fmadd_ps(acc[k], b, c);
        }
        __asm__("" : "+v"(b));
    }
    double const t = cpuSeconds() - t0;
    float lanes[16];
    for (int i = 1; i < 24; ++i)
    {
        acc[0] = _mm512_add_ps(acc[0], acc[i]);
    }
    _mm512_storeu_ps(lanes, acc[0]);
    __asm__ volatile("" ::"m"(lanes));
    return double(n) * 24 * 16 / t;
}

double pass(Mode mode, float const* kb, float const* e, float* out, float* staging, float* scratch)
{
    double const t0 = cpuSeconds();
    for (int64_t o = 0; o < kHo; o += 4)
    {
        for (int64_t c0 = 0; c0 < kC; c0 += kBlock)
        {
            for (int64_t cc = 0; cc + 6 <= kBlock; cc += 6)
            {
                for (int64_t jv = 0; jv < kWo / kL; ++jv)
                {
                    float* d = out + (c0 + cc) * kPlane + o * kWo + jv * kL;
                    switch (mode)
                    {
                    case Mode::kNoOutput:
                        forwardTileK<5, 2, true, 4, 6, float>(0, kb, e, 64, 8 * 64, scratch, kL, 4 * kL, kL, false);
                        break;
                    case Mode::kPlainStores:
                    case Mode::kRegisterStreamed:
                        forwardTileK<5, 2, true, 4, 6, float>(0, kb, e, 64, 8 * 64, d, kWo, kPlane, kL,
                            mode == Mode::kRegisterStreamed);
                        break;
                    case Mode::kStagedStreamed:
                        forwardTileK<5, 2, true, 4, 6, float>(0, kb, e, 64, 8 * 64, staging + cc * 4 * kWo + jv * kL,
                            kWo, 4 * kWo, kL, false);
                        break;
                    }
                }
            }
            if (mode == Mode::kStagedStreamed)
            {
                for (int64_t cc = 0; cc < kBlock / 6 * 6; ++cc)
                {
                    streamBytes(out + (c0 + cc) * kPlane + o * kWo, staging + cc * 4 * kWo, 4 * kWo * sizeof(float));
                }
            }
        }
    }
    streamFence();
    return cpuSeconds() - t0;
}

} // namespace

int main()
{
    if (!__builtin_cpu_supports("avx512f"))
    {
        std::printf("this CPU has no AVX-512: nothing measured\n");
        return 0;
    }
    static float kb[2 * 25 * kL * 4] __attribute__((aligned(64)));
    static float e[8 * 6 * 64] __attribute__((aligned(64)));
    static float scratch[24 * kL * 4] __attribute__((aligned(64)));
    for (float& v : kb)
    {
        v = 0.01f;
    }
    for (float& v : e)
    {
        v = 0.02f;
    }
    auto* out = static_cast<float*>(std::aligned_alloc(64, kC * kPlane * sizeof(float)));
    auto* staging = static_cast<float*>(std::aligned_alloc(64, kBlock * 4 * kWo * sizeof(float)));
    for (int64_t i = 0; i < kC * kPlane; ++i)
    {
        out[i] = 0.0f; // touch every page once: no page faults in the passes
    }
    double const macs = double(kHo / 4) * (kC / kBlock) * (kBlock / 6) * (kWo / kL) * 4 * 6 * 25 * kL;
    char const* names[] = {"arithmetic alone (tile output stays in L1)", "plain stores into the output",
        "staged per block, then non-temporal stores", "non-temporal stores from the registers"};
    for (Mode mode : {Mode::kNoOutput, Mode::kPlainStores, Mode::kStagedStreamed, Mode::kRegisterStreamed})
    {
        double best = 1e9;
        for (int rep = 0; rep < 5; ++rep)
        {
            double const t = pass(mode, kb, e, out, staging, scratch);
            best = t < best ? t : best;
        }
        std::printf("%-45s %6.2f ms  %5.1f GMAC/s\n", names[static_cast<int>(mode)], best * 1e3, macs / best / 1e9);
    }
    std::printf("%-45s %6s     %5.1f GMAC/s\n", "FMA peak of one core (24 chains)", "", fmaPeak() / 1e9);
    double const bytes = double(kHo / 4) * (kC / kBlock) * (kBlock / 6) * (kWo / kL) * 24 * 64;
    std::printf("(%.0f MB written per pass)\n", bytes / 1e6);
    std::free(out);
    std::free(staging);
    return 0;
}
