#include "carafe_reference.h"

#include <algorithm>

namespace carafe
{
namespace reference
{

template <typename T>
void forward(Geometry const& g, T const* features, T const* kernels, T* output)
{
    int32_t const r = g.k / 2;
    for (int64_t n = 0; n < g.n; ++n)
    {
        for (int64_t c = 0; c < g.c; ++c)
        {
            int32_t const grp = groupOfChannel(g, c);
            for (int64_t yo = 0; yo < g.ho; ++yo)
            {
                int64_t const cy = windowCentre(yo, g.scale, g.mode);
                for (int64_t xo = 0; xo < g.wo; ++xo)
                {
                    int64_t const cx = windowCentre(xo, g.scale, g.mode);
                    T acc = 0;
                    for (int32_t ky = 0; ky < g.k; ++ky)
                    {
                        for (int32_t kx = 0; kx < g.k; ++kx)
                        {
                            int64_t const y = cy + ky - r;
                            int64_t const x = cx + kx - r;
                            if (!inside(y, x, g.h, g.w))
                            {
                                continue;
                            }
                            acc += kernels[kernelIndex(g, n, kernelChannel(grp, ky, kx, g.k), yo, xo)]
                                * features[featureIndex(g, n, c, y, x)];
                        }
                    }
                    output[outputIndex(g, n, c, yo, xo)] = acc;
                }
            }
        }
    }
}

template <typename T>
void backward(Geometry const& g, T const* gradOutput, T const* features, T const* kernels, T* gradFeatures,
    T* gradKernels)
{
    std::fill(gradFeatures, gradFeatures + featureCount(g), T(0));
    std::fill(gradKernels, gradKernels + kernelCount(g), T(0));
    int32_t const r = g.k / 2;
    // Scatter formulation (the CUDA kernel gathers): an independent route to the same sums.
    for (int64_t n = 0; n < g.n; ++n)
    {
        for (int64_t c = 0; c < g.c; ++c)
        {
            int32_t const grp = groupOfChannel(g, c);
            for (int64_t yo = 0; yo < g.ho; ++yo)
            {
                int64_t const cy = windowCentre(yo, g.scale, g.mode);
                for (int64_t xo = 0; xo < g.wo; ++xo)
                {
                    int64_t const cx = windowCentre(xo, g.scale, g.mode);
                    T const go = gradOutput[outputIndex(g, n, c, yo, xo)];
                    for (int32_t ky = 0; ky < g.k; ++ky)
                    {
                        for (int32_t kx = 0; kx < g.k; ++kx)
                        {
                            int64_t const y = cy + ky - r;
                            int64_t const x = cx + kx - r;
                            if (!inside(y, x, g.h, g.w))
                            {
                                continue;
                            }
                            int64_t const ki = kernelIndex(g, n, kernelChannel(grp, ky, kx, g.k), yo, xo);
                            int64_t const fi = featureIndex(g, n, c, y, x);
                            gradFeatures[fi] += kernels[ki] * go;
                            gradKernels[ki] += features[fi] * go;
                        }
                    }
                }
            }
        }
    }
}

template void forward<float>(Geometry const&, float const*, float const*, float*);
template void forward<double>(Geometry const&, double const*, double const*, double*);
template void backward<float>(Geometry const&, float const*, float const*, float const*, float*, float*);
template void backward<double>(Geometry const&, double const*, double const*, double const*, double*, double*);

} // namespace reference
} // namespace carafe
