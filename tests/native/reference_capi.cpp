// extern "C" entry points of the host reference, so pytest can load it with ctypes and check the native code against
// the Python float64 loops and mmcv's vectors without CMake (tests/test_native_reference.py builds this file).
#include "carafe_reference.h"

namespace
{
carafe::Geometry geometry(int64_t const* shape, int32_t k, int32_t group, int32_t scale, int32_t down)
{
    return carafe::makeGeometry(shape[0], shape[1], shape[2], shape[3], k, group, scale,
        down ? carafe::Mode::kDown : carafe::Mode::kUp);
}
} // namespace

extern "C"
{
void carafe_reference_forward_f64(int64_t const* shape, int32_t k, int32_t group, int32_t scale, int32_t down,
    double const* features, double const* kernels, double* output)
{
    carafe::reference::forward(geometry(shape, k, group, scale, down), features, kernels, output);
}

void carafe_reference_forward_f32(int64_t const* shape, int32_t k, int32_t group, int32_t scale, int32_t down,
    float const* features, float const* kernels, float* output)
{
    carafe::reference::forward(geometry(shape, k, group, scale, down), features, kernels, output);
}

void carafe_reference_backward_f64(int64_t const* shape, int32_t k, int32_t group, int32_t scale, int32_t down,
    double const* gradOutput, double const* features, double const* kernels, double* gradFeatures, double* gradKernels)
{
    carafe::reference::backward(
        geometry(shape, k, group, scale, down), gradOutput, features, kernels, gradFeatures, gradKernels);
}

void carafe_reference_backward_f32(int64_t const* shape, int32_t k, int32_t group, int32_t scale, int32_t down,
    float const* gradOutput, float const* features, float const* kernels, float* gradFeatures, float* gradKernels)
{
    carafe::reference::backward(
        geometry(shape, k, group, scale, down), gradOutput, features, kernels, gradFeatures, gradKernels);
}
}
