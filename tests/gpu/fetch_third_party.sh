#!/usr/bin/env bash
# Copies what the GPU checks need from outside the repo into third_party_fetched/ (git-ignored, never committed):
#   third_party_fetched/tensorrt/include  TensorRT headers (to build the plugin; the GPU machine has no TensorRT)
#   third_party_fetched/wheels/           ninja (torch's JIT extension build needs it) and pytest wheels, installed
#                                         there only if missing (the GPU machine cannot reach PyPI)
# Source: $TRT_INCLUDE (default /work/trt/include). Run it on the dev machine, then carry third_party_fetched to the
# GPU machine. Nothing of mmcv is copied or built: the benchmark's mmcv column needs an installed mmcv with CUDA ops.
set -euo pipefail
cd "$(dirname "$0")/../.."
TRT_INCLUDE=${TRT_INCLUDE:-/work/trt/include}
DEST=third_party_fetched

mkdir -p "$DEST/tensorrt"
if [ -f "$TRT_INCLUDE/NvInferRuntime.h" ]; then
  rm -rf "$DEST/tensorrt/include" && cp -r "$TRT_INCLUDE" "$DEST/tensorrt/include"
  echo "TensorRT headers -> $DEST/tensorrt/include"
else
  echo "no TensorRT headers at $TRT_INCLUDE (set TRT_INCLUDE); the plugin checks will be skipped" >&2
fi
mkdir -p "$DEST/wheels"
if python3 -m pip download -q ninja --only-binary=:all: --platform manylinux2014_x86_64 --no-deps -d "$DEST/wheels" \
  && python3 -m pip download -q pytest --only-binary=:all: -d "$DEST/wheels"; then
  echo "ninja and pytest wheels -> $DEST/wheels"
else
  echo "could not download the ninja/pytest wheels; the GPU machine must already have them" >&2
fi
