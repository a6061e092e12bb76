// The host reference (carafe_reference.cpp, over carafe_geometry.h) against the operator written out as plain loops
// straight from CONTRACT §1, and its gradients against the adjoint identity on unit inputs.
#include "carafe_reference.h"
#include "check.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace
{

struct Case
{
    int n, c, h, w, k, group, s;
    carafe::Mode mode;
};

// out[n, c, i', j'] = sum_{dy, dx} K[n, g*k*k + (dy+r)*k + (dx+r), i', j'] * X[n, c, i+dy, j+dx], zero outside X.
std::vector<double> naiveForward(Case const& t, std::vector<double> const& x, std::vector<double> const& kern)
{
    bool const up = t.mode == carafe::Mode::kUp;
    int const ho = up ? t.h * t.s : (t.h + t.s - 1) / t.s;
    int const wo = up ? t.w * t.s : (t.w + t.s - 1) / t.s;
    int const r = t.k / 2;
    int const kc = t.group * t.k * t.k;
    std::vector<double> out(static_cast<size_t>(t.n) * t.c * ho * wo, 0.0);
    for (int n = 0; n < t.n; ++n)
        for (int c = 0; c < t.c; ++c)
        {
            int const g = c / (t.c / t.group);
            for (int io = 0; io < ho; ++io)
                for (int jo = 0; jo < wo; ++jo)
                {
                    int const i = up ? io / t.s : io * t.s;
                    int const j = up ? jo / t.s : jo * t.s;
                    double sum = 0;
                    for (int dy = -r; dy <= r; ++dy)
                        for (int dx = -r; dx <= r; ++dx)
                        {
                            int const y = i + dy;
                            int const xx = j + dx;
                            if (y < 0 || y >= t.h || xx < 0 || xx >= t.w)
                                continue;
                            int const ch = g * t.k * t.k + (dy + r) * t.k + (dx + r);
                            sum += kern[((static_cast<size_t>(n) * kc + ch) * ho + io) * wo + jo]
                                * x[((static_cast<size_t>(n) * t.c + c) * t.h + y) * t.w + xx];
                        }
                    out[((static_cast<size_t>(n) * t.c + c) * ho + io) * wo + jo] = sum;
                }
        }
    return out;
}

double dot(std::vector<double> const& a, std::vector<double> const& b)
{
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i)
        s += a[i] * b[i];
    return s;
}

void runCase(Case const& t, std::mt19937& rng)
{
    carafe::Geometry const g = carafe::makeGeometry(t.n, t.c, t.h, t.w, t.k, t.group, t.s, t.mode);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<double> x(static_cast<size_t>(carafe::featureCount(g)));
    std::vector<double> kern(static_cast<size_t>(carafe::kernelCount(g)));
    std::vector<double> gout(static_cast<size_t>(carafe::outputCount(g)));
    for (auto* v : {&x, &kern, &gout})
        for (double& e : *v)
            e = dist(rng);

    std::vector<double> const expected = naiveForward(t, x, kern);
    std::vector<double> out(expected.size(), std::nan(""));
    carafe::reference::forward(g, x.data(), kern.data(), out.data());
    double maxErr = 0;
    for (size_t i = 0; i < out.size(); ++i)
        maxErr = std::fmax(maxErr, std::fabs(out[i] - expected[i]));
    CHECK_MSG(maxErr < 1e-12, "forward double n=%d c=%d h=%d w=%d k=%d G=%d s=%d mode=%d: max err %g", t.n, t.c, t.h,
        t.w, t.k, t.group, t.s, static_cast<int>(t.mode), maxErr);

    std::vector<float> xf(x.begin(), x.end()), kf(kern.begin(), kern.end()), of(out.size(), std::nanf(""));
    carafe::reference::forward(g, xf.data(), kf.data(), of.data());
    double maxErrF = 0;
    for (size_t i = 0; i < of.size(); ++i)
        maxErrF = std::fmax(maxErrF, std::fabs(of[i] - expected[i]));
    CHECK_MSG(maxErrF < 1e-5 * t.k * t.k, "forward float k=%d: max err %g", t.k, maxErrF);

    // Adjoint identity: out is bilinear in (x, kern), so dL/dx[p] for L = <gout, out> is L at x = e_p.
    std::vector<double> gx(x.size(), std::nan("")), gk(kern.size(), std::nan(""));
    carafe::reference::backward(g, gout.data(), x.data(), kern.data(), gx.data(), gk.data());
    double maxGradErr = 0;
    std::vector<double> unit(x.size(), 0.0);
    for (size_t p = 0; p < x.size(); ++p)
    {
        unit[p] = 1.0;
        maxGradErr = std::fmax(maxGradErr, std::fabs(gx[p] - dot(gout, naiveForward(t, unit, kern))));
        unit[p] = 0.0;
    }
    std::vector<double> unitK(kern.size(), 0.0);
    for (size_t q = 0; q < kern.size(); ++q)
    {
        unitK[q] = 1.0;
        maxGradErr = std::fmax(maxGradErr, std::fabs(gk[q] - dot(gout, naiveForward(t, x, unitK))));
        unitK[q] = 0.0;
    }
    CHECK_MSG(maxGradErr < 1e-12, "backward n=%d c=%d h=%d w=%d k=%d G=%d s=%d mode=%d: max err %g", t.n, t.c, t.h,
        t.w, t.k, t.group, t.s, static_cast<int>(t.mode), maxGradErr);
}

void checkLargeIndexing()
{
    // 8 x 256 x 1600 x 2688 features: 8.8e9 elements, past 2^32; the last element's offset must be count - 1.
    carafe::Geometry const g = carafe::makeGeometry(8, 256, 1600, 2688, 5, 1, 2, carafe::Mode::kUp);
    CHECK(carafe::featureCount(g) == int64_t{8} * 256 * 1600 * 2688);
    CHECK(carafe::featureIndex(g, 7, 255, 1599, 2687) == carafe::featureCount(g) - 1);
    CHECK(carafe::outputIndex(g, 7, 255, 3199, 5375) == carafe::outputCount(g) - 1);
    CHECK(carafe::kernelIndex(g, 7, 24, 3199, 5375) == carafe::kernelCount(g) - 1);
    carafe::Geometry const d = carafe::makeGeometry(1, 1, 7, 9, 3, 1, 4, carafe::Mode::kDown);
    CHECK(d.ho == 2 && d.wo == 3); // ceil(7/4), ceil(9/4)
}

} // namespace

int main()
{
    std::mt19937 rng(1234);
    using carafe::Mode;
    Case const cases[] = {
        {1, 1, 1, 1, 1, 1, 1, Mode::kUp},
        {1, 1, 1, 1, 5, 1, 2, Mode::kUp},
        {1, 1, 1, 1, 5, 1, 2, Mode::kDown},
        {2, 4, 3, 5, 3, 1, 2, Mode::kUp},
        {2, 4, 5, 3, 5, 2, 2, Mode::kUp},
        {1, 8, 4, 5, 7, 4, 2, Mode::kUp},
        {1, 4, 3, 4, 3, 4, 4, Mode::kUp},
        {1, 3, 5, 4, 1, 1, 3, Mode::kUp},
        {2, 4, 7, 9, 5, 2, 2, Mode::kDown},
        {1, 4, 9, 7, 3, 1, 4, Mode::kDown},
        {1, 8, 6, 5, 7, 4, 3, Mode::kDown},
        {1, 2, 5, 5, 3, 1, 1, Mode::kDown},
        {1, 2, 5, 5, 3, 2, 1, Mode::kUp},
    };
    for (Case const& t : cases)
        runCase(t, rng);
    checkLargeIndexing();
    return TEST_RESULT();
}
