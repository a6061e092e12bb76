// Stand-in for mmcv's pytorch_cuda_helper.hpp, so that mmcv's CARAFE kernel (fetched into third_party_fetched/mmcv by
// tests/gpu/fetch_third_party.sh, never committed) builds as a stand-alone torch extension for the benchmark. It
// provides only the names carafe_cuda_kernel.cuh and carafe_cuda.cu use.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

using at::Half;
using at::Tensor;
using phalf = at::Half;

#define __PHALF(x) (x)
#ifndef THREADS_PER_BLOCK
#define THREADS_PER_BLOCK 512
#endif
