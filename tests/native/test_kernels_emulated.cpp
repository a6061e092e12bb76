// The CUDA kernels of plugins/common/carafe_kernels.cu, compiled for the CPU through cuda_host_emulation.h and run
// against the float64 host reference with outputs poisoned (NaN), for the tiled fast paths (partial tiles, narrow
// blocks, channel chunks and rounds, s = 2/3, k = 3/5/7), the general kernel and both backward kernels, in float32,
// float64, float16 and bfloat16. This is how a machine without a GPU checks the kernels' index math; built with
// AddressSanitizer it also checks every global and shared-memory access is in bounds.
#include "carafe_cuda.h"
#include "cuda_host_emulation.h"

#include "carafe_kernels.cu"

#include "carafe_params.h"
#include "carafe_reference.h"
#include "check.h"

#include <cmath>
#include <cstdio>
#include <random>

namespace
{

struct Case
{
    int n, c, h, w, k, group, s;
    carafe::Mode mode;
};

double toD(float v)
{
    return v;
}
double toD(double v)
{
    return v;
}
double toD(__half v)
{
    return __half2float(v);
}
double toD(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
template <typename T>
T fromD(double v);
template <>
float fromD<float>(double v)
{
    return static_cast<float>(v);
}
template <>
double fromD<double>(double v)
{
    return v;
}
template <>
__half fromD<__half>(double v)
{
    return __float2half_rn(static_cast<float>(v));
}
template <>
__nv_bfloat16 fromD<__nv_bfloat16>(double v)
{
    return __float2bfloat16_rn(static_cast<float>(v));
}

template <typename T>
double worst(std::vector<T> const& got, std::vector<double> const& want, double atol, double rtol)
{
    double w = 0;
    for (size_t i = 0; i < want.size(); ++i)
    {
        double const g = toD(got[i]);
        w = std::fmax(w, std::isfinite(g) ? std::fabs(g - want[i]) / (atol + rtol * std::fabs(want[i])) : INFINITY);
    }
    return w;
}

template <typename T>
void run(Case const& t, carafe::DType type, char const* name, double tol, std::mt19937& rng, bool backward)
{
    carafe::Geometry const g = carafe::makeGeometry(t.n, t.c, t.h, t.w, t.k, t.group, t.s, t.mode);
    size_t const nx = carafe::featureCount(g), nk = carafe::kernelCount(g), no = carafe::outputCount(g);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<T> x(nx), k(nk), go(no);
    std::vector<double> xd(nx), kd(nk), god(no), want(no), wantGx(nx), wantGk(nk);
    for (size_t i = 0; i < nx; ++i)
        xd[i] = toD(x[i] = fromD<T>(dist(rng)));
    for (size_t i = 0; i < nk; ++i)
        kd[i] = toD(k[i] = fromD<T>(dist(rng) / (t.k * t.k)));
    for (size_t i = 0; i < no; ++i)
        god[i] = toD(go[i] = fromD<T>(dist(rng)));
    carafe::reference::forward(g, xd.data(), kd.data(), want.data());

    std::vector<T> out(no, fromD<T>(NAN));
    CHECK(carafe::launchForward(g, type, x.data(), k.data(), out.data(), nullptr) == cudaSuccess);
    double const wf = worst(out, want, tol, tol);
    double wx = 0, wk = 0;
    if (backward)
    {
        carafe::reference::backward(g, god.data(), xd.data(), kd.data(), wantGx.data(), wantGk.data());
        std::vector<T> gx(nx, fromD<T>(NAN)), gk(nk, fromD<T>(NAN));
        CHECK(carafe::launchBackward(g, type, go.data(), x.data(), k.data(), gx.data(), gk.data(), nullptr)
            == cudaSuccess);
        wx = worst(gx, wantGx, tol, tol);
        wk = worst(gk, wantGk, tol * std::sqrt(double(t.c / t.group)), tol);
    }
    std::printf("%-4s n=%d c=%3d %3dx%-3d k=%d G=%d s=%d %-4s %-9s fwd=%.3f gx=%.3f gk=%.3f\n", name, t.n, t.c, t.h,
        t.w, t.k, t.group, t.s, carafe::modeName(t.mode), carafe::forwardVariant(g, type), wf, wx, wk);
    CHECK_MSG(wf <= 1.0, "forward %s", name);
    CHECK_MSG(wx <= 1.0, "grad features %s", name);
    CHECK_MSG(wk <= 1.0, "grad kernels %s", name);
}

} // namespace

int main()
{
    using carafe::Mode;
    // Small on purpose: every CUDA thread is an OS thread here.
    Case const cases[] = {
        {1, 9, 11, 37, 5, 1, 2, Mode::kUp},   // up_s2_k5, 32x4 blocks, partial tiles in x and y, 2 rounds + 1
        {2, 8, 5, 6, 3, 2, 2, Mode::kUp},     // up_s2_k3, 16x8 block
        {1, 6, 9, 70, 5, 1, 2, Mode::kDown},  // down_k5, 32x8 blocks, halo past the right edge
        {1, 8, 13, 11, 3, 4, 2, Mode::kDown}, // down_k3, groups
        {1, 4, 21, 33, 7, 2, 3, Mode::kDown}, // down_k7 with s = 3
        {1, 5, 6, 7, 5, 1, 1, Mode::kUp},     // s = 1 runs the down kernel
        {1, 3, 4, 5, 5, 1, 4, Mode::kUp},     // generic (up, s = 4)
        {1, 1, 1, 1, 5, 1, 2, Mode::kUp},     // 1x1
        {1, 1, 1, 1, 5, 1, 2, Mode::kDown},
        {2, 3, 3, 2, 1, 1, 2, Mode::kUp},     // k = 1 (generic)
    };
    std::mt19937 rng(11);
    for (Case const& t : cases)
    {
        run<float>(t, carafe::DType::kFloat32, "fp32", 1e-5, rng, true);
        run<double>(t, carafe::DType::kFloat64, "fp64", 1e-12, rng, false);
        run<__half>(t, carafe::DType::kFloat16, "fp16", 2e-3, rng, false);
        run<__nv_bfloat16>(t, carafe::DType::kBFloat16, "bf16", 1.6e-2, rng, false);
    }
    return TEST_RESULT();
}
