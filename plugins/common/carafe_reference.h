// Host (CPU) reference of the operator and its gradients, written over the same index math as the CUDA kernels
// (carafe_geometry.h). Scalar is float or double; accumulation is in double for double, float otherwise.
#pragma once

#include "carafe_geometry.h"

namespace carafe
{
namespace reference
{

template <typename T>
void forward(Geometry const& g, T const* features, T const* kernels, T* output);

// gradFeatures and gradKernels are overwritten (not accumulated into).
template <typename T>
void backward(Geometry const& g, T const* gradOutput, T const* features, T const* kernels, T* gradFeatures,
    T* gradKernels);

} // namespace reference
} // namespace carafe
