#!/usr/bin/env bash
# Copies what the GPU checks need from outside the repo into third_party_fetched/ (git-ignored, never committed):
#   third_party_fetched/tensorrt/include  TensorRT headers (to build the plugin; the GPU machine has no TensorRT)
#   third_party_fetched/mmcv/             mmcv's CARAFE CUDA kernel + launcher (benchmark comparison only)
#   third_party_fetched/wheels/           ninja (torch's JIT extension build needs it) and pytest wheels, installed
#                                         there only if missing (the GPU machine cannot reach PyPI)
# Sources: $TRT_INCLUDE (default /work/trt/include) and the mmcv git mirror $MMCV_GIT (a bare repo, default
# /work/.mirror/open-mmlab+mmcv/repo). Run it on the dev machine, then carry third_party_fetched to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
TRT_INCLUDE=${TRT_INCLUDE:-/work/trt/include}
MMCV_GIT=${MMCV_GIT:-/work/.mirror/open-mmlab+mmcv/repo}
DEST=third_party_fetched

mkdir -p "$DEST/tensorrt" "$DEST/mmcv"
if [ -f "$TRT_INCLUDE/NvInferRuntime.h" ]; then
  rm -rf "$DEST/tensorrt/include" && cp -r "$TRT_INCLUDE" "$DEST/tensorrt/include"
  echo "TensorRT headers -> $DEST/tensorrt/include"
else
  echo "no TensorRT headers at $TRT_INCLUDE (set TRT_INCLUDE); the plugin checks will be skipped" >&2
fi
if git -C "$MMCV_GIT" rev-parse HEAD >/dev/null 2>&1; then
  for f in mmcv/ops/csrc/common/cuda/carafe_cuda_kernel.cuh mmcv/ops/csrc/pytorch/cuda/carafe_cuda.cu LICENSE; do
    git -C "$MMCV_GIT" show "HEAD:$f" > "$DEST/mmcv/$(basename "$f")"
  done
  git -C "$MMCV_GIT" rev-parse HEAD > "$DEST/mmcv/COMMIT"
  echo "mmcv CARAFE kernel ($(cat "$DEST/mmcv/COMMIT")) -> $DEST/mmcv"
else
  echo "no mmcv mirror at $MMCV_GIT (set MMCV_GIT); the benchmark will run without the mmcv column" >&2
fi
mkdir -p "$DEST/wheels"
if python3 -m pip download -q ninja --only-binary=:all: --platform manylinux2014_x86_64 --no-deps -d "$DEST/wheels" \
  && python3 -m pip download -q pytest --only-binary=:all: -d "$DEST/wheels"; then
  echo "ninja and pytest wheels -> $DEST/wheels"
else
  echo "could not download the ninja/pytest wheels; the GPU machine must already have them" >&2
fi
