// The CUDA kernels against the float64 host reference on fresh random inputs, outputs poisoned (NaN) first, for
// float32 / float16 / bfloat16 (and float64, the gradcheck path), both modes, the fast-path shapes and edge sizes. Needs a GPU: exits 77 (CTest
// "skipped") when none is present.
#include "carafe_cuda.h"
#include "carafe_params.h"
#include "carafe_reference.h"
#include "check.h"
#include "device_values.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace
{

struct Case
{
    int n, c, h, w, k, group, s;
    carafe::Mode mode;
};

using carafe_test::fromDouble;
using carafe_test::toDouble;

using carafe_test::download;
using carafe_test::upload;

// Max |got - want| / (atol + rtol * |want|) over all elements; NaN (a poisoned element never written) counts as inf.
template <typename T>
double worstRatio(std::vector<T> const& got, std::vector<double> const& want, double atol, double rtol)
{
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i)
    {
        double const g = toDouble(got[i]);
        double const r = std::isfinite(g) ? std::fabs(g - want[i]) / (atol + rtol * std::fabs(want[i])) : INFINITY;
        worst = std::fmax(worst, r);
    }
    return worst;
}

template <typename T>
void runCase(Case const& t, carafe::DType type, char const* typeName, double tol, std::mt19937& rng, cudaStream_t stream)
{
    carafe::Geometry const g = carafe::makeGeometry(t.n, t.c, t.h, t.w, t.k, t.group, t.s, t.mode);
    size_t const nx = static_cast<size_t>(carafe::featureCount(g));
    size_t const nk = static_cast<size_t>(carafe::kernelCount(g));
    size_t const no = static_cast<size_t>(carafe::outputCount(g));
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<T> x(nx), kern(nk), gout(no);
    std::vector<double> xd(nx), kd(nk), god(no);
    // Inputs are drawn in double, rounded to T, and the reference runs on the rounded values: only the kernel's
    // arithmetic differs.
    for (size_t i = 0; i < nx; ++i)
        xd[i] = toDouble(x[i] = fromDouble<T>(dist(rng)));
    for (size_t i = 0; i < nk; ++i)
        kd[i] = toDouble(kern[i] = fromDouble<T>(dist(rng) / (t.k * t.k)));
    for (size_t i = 0; i < no; ++i)
        god[i] = toDouble(gout[i] = fromDouble<T>(dist(rng)));

    std::vector<double> want(no), wantGx(nx), wantGk(nk);
    carafe::reference::forward(g, xd.data(), kd.data(), want.data());
    carafe::reference::backward(g, god.data(), xd.data(), kd.data(), wantGx.data(), wantGk.data());

    T* dx = upload(x);
    T* dk = upload(kern);
    T* dgo = upload(gout);
    T* dout = nullptr;
    T* dgx = nullptr;
    T* dgk = nullptr;
    CUDA_OK(cudaMalloc(&dout, std::max<size_t>(no, 1) * sizeof(T)));
    CUDA_OK(cudaMalloc(&dgx, std::max<size_t>(nx, 1) * sizeof(T)));
    CUDA_OK(cudaMalloc(&dgk, std::max<size_t>(nk, 1) * sizeof(T)));
    // 0xFF bytes are NaN in all three types: an element the kernel fails to write fails the comparison.
    CUDA_OK(cudaMemset(dout, 0xFF, std::max<size_t>(no, 1) * sizeof(T)));
    CUDA_OK(cudaMemset(dgx, 0xFF, std::max<size_t>(nx, 1) * sizeof(T)));
    CUDA_OK(cudaMemset(dgk, 0xFF, std::max<size_t>(nk, 1) * sizeof(T)));

    CUDA_OK(carafe::launchForward(g, type, dx, dk, dout, stream));
    CUDA_OK(carafe::launchBackward(g, type, dgo, dx, dk, dgx, dgk, stream));
    CUDA_OK(cudaStreamSynchronize(stream));

    double const rf = worstRatio(download(dout, no), want, tol, tol);
    double const rx = worstRatio(download(dgx, nx), wantGx, tol, tol);
    // grad_kernels sums C/G products of O(1) values: scale the absolute tolerance with the group's channel count.
    double const rk = worstRatio(download(dgk, nk), wantGk, tol * std::sqrt(double(t.c / t.group)), tol);
    std::printf("%-5s n=%d c=%d %dx%d k=%d G=%d s=%d %-4s variant=%-9s fwd=%.3f gx=%.3f gk=%.3f\n", typeName, t.n, t.c,
        t.h, t.w, t.k, t.group, t.s, carafe::modeName(t.mode), carafe::forwardVariant(g, type), rf, rx, rk);
    CHECK_MSG(rf <= 1.0, "forward %s", typeName);
    CHECK_MSG(rx <= 1.0, "grad features %s", typeName);
    CHECK_MSG(rk <= 1.0, "grad kernels %s", typeName);
    for (T* p : {dx, dk, dgo, dout, dgx, dgk})
        CUDA_OK(cudaFree(p));
}

} // namespace

int main()
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    {
        std::printf("no CUDA device: skipped\n");
        return 77;
    }
    using carafe::Mode;
    Case const cases[] = {
        // fast paths (up s=2 k=3/5, down k=3/5/7) including partial tiles and narrow (16x16 block) widths
        {2, 16, 25, 42, 5, 1, 2, Mode::kUp},
        {1, 12, 14, 14, 5, 1, 2, Mode::kUp},
        {1, 8, 9, 37, 3, 2, 2, Mode::kUp},
        {2, 16, 50, 67, 5, 1, 2, Mode::kDown},
        {1, 8, 13, 11, 3, 4, 2, Mode::kDown},
        {1, 8, 21, 33, 7, 2, 3, Mode::kDown},
        {1, 8, 17, 19, 5, 1, 4, Mode::kDown},
        {1, 6, 10, 12, 5, 1, 1, Mode::kUp},
        // edge sizes and generic-path shapes
        {1, 1, 1, 1, 5, 1, 2, Mode::kUp},
        {1, 1, 1, 1, 5, 1, 2, Mode::kDown},
        {3, 5, 7, 3, 1, 1, 2, Mode::kUp},
        {1, 8, 6, 9, 7, 1, 2, Mode::kUp},
        {1, 8, 5, 7, 5, 4, 4, Mode::kUp},
        {1, 4, 6, 5, 9, 2, 3, Mode::kDown},
        {2, 8, 11, 13, 3, 4, 3, Mode::kUp},
        // many channels per group: exercises channel chunking across blocks and rounds
        {1, 256, 12, 20, 5, 1, 2, Mode::kUp},
        {1, 256, 24, 40, 5, 4, 2, Mode::kDown},
    };
    cudaStream_t stream = nullptr;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); // kernels must run on the given stream
    std::mt19937 rng(2024);
    for (Case const& t : cases)
    {
        runCase<float>(t, carafe::DType::kFloat32, "fp32", 1e-5, rng, stream);
        runCase<__half>(t, carafe::DType::kFloat16, "fp16", 2e-3, rng, stream);
        runCase<__nv_bfloat16>(t, carafe::DType::kBFloat16, "bf16", 1.6e-2, rng, stream);
        runCase<double>(t, carafe::DType::kFloat64, "fp64", 1e-12, rng, stream);
    }
    CUDA_OK(cudaStreamDestroy(stream));
    return TEST_RESULT();
}
