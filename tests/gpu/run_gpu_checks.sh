#!/usr/bin/env bash
# Every check that needs a GPU, in one call (a GPU session runs this; CI cannot):
#   1. build the CUDA kernels, the TensorRT plugin (headers only) and the native tests (CMake, or plain nvcc/g++
#      when CMake is absent), for the GPU at hand;
#   2. the kernels against the float64 host reference, outputs poisoned, fp32/fp16/bf16/fp64, both modes, edge sizes
#      (tests/native/test_cuda_kernels.cu); the detection plugins' kernels (MultiLevelRoIAlign, BatchedNMS) against
#      the references of tests/native/detection_kernel_cases.h, the cases the CPU emulation runs in CI
#      (tests/native/test_detection_kernels.cu);
#   3. the plugin driven directly: creator -> createPlugin -> getOutputShapes (test IExprBuilder) -> configurePlugin ->
#      onShapeChange -> enqueue on real buffers vs the reference; serialize -> recreate -> same bytes
#      (tests/native/test_trt_plugin.cpp --host / --gpu; the detection plugins: test_detection_plugins.cpp);
#   4. compute-sanitizer memcheck (and racecheck on the shared-memory kernels) over 2 and 3;
#   5. the torch op on CUDA: JIT extension, vs the float64 loops, gradcheck (pytest -m cuda tests/ops/test_cuda.py);
#   6. benchmarks/gpu_bench.py, writing $OUT/PERFORMANCE.md (copy it to docs/PERFORMANCE.md).
# Before carrying the tree to the GPU machine, run tests/gpu/fetch_third_party.sh and carry third_party_fetched
# (TensorRT headers for the plugin; git-ignored).
# Usage: tests/gpu/run_gpu_checks.sh [--no-bench] [--no-sanitizer]. Logs and results go to $OUT (default out/gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUT=${OUT:-$REPO/out/gpu}
mkdir -p "$OUT"
BENCH=1
SANITIZE=1
for a in "$@"; do
  case $a in
    --no-bench) BENCH=0 ;;
    --no-sanitizer) SANITIZE=0 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
TRT_INC=${TensorRT_INCLUDE_DIR:-$REPO/third_party_fetched/tensorrt/include}
BUILD=$REPO/build/gpu
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
FAILED=0

step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, records PASS/FAIL/SKIP
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local verdict=PASS
  if [ $rc -eq 77 ]; then verdict=SKIP; elif [ $rc -ne 0 ]; then verdict="FAIL(rc=$rc)"; FAILED=1; fi
  printf '%-28s %-12s %4ss\n' "$name" "$verdict" $((SECONDS - start)) | tee -a "$SUMMARY"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
}

export PATH=$PATH:/usr/local/cuda/bin:$(python -c "import sysconfig; print(sysconfig.get_path('scripts'))"):$HOME/.local/bin
# torch's JIT extension build needs ninja; install the carried wheel when the machine has none.
if ! command -v ninja >/dev/null && ! python -c "import ninja" 2>/dev/null; then
  python -m pip install -q --no-index third_party_fetched/wheels/ninja-*.whl > "$OUT/ninja_install.log" 2>&1 \
    || echo "ninja missing and not installable: the torch extension will fall back" | tee -a "$SUMMARY"
fi
if ! python -c "import pytest" 2>/dev/null; then
  python -m pip install -q --no-index --find-links third_party_fetched/wheels pytest > "$OUT/pytest_install.log" 2>&1 \
    || echo "pytest missing and not installable" | tee -a "$SUMMARY"
fi
SANITIZER=$(command -v compute-sanitizer || true)
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
ARCH=${ARCH:-90}
HAVE_TRT=0
[ -f "$TRT_INC/NvInferRuntime.h" ] && HAVE_TRT=1

{ nvidia-smi; nvcc --version; python -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; \
  cmake --version 2>/dev/null | head -1; echo "arch sm_$ARCH, TensorRT headers: $HAVE_TRT, sanitizer: ${SANITIZER:-none}"; } \
  > "$OUT/environment.log" 2>&1
echo "device: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), sm_$ARCH" | tee -a "$SUMMARY"

build_cmake() {
  local trt=()
  [ $HAVE_TRT = 1 ] && trt=(-DTensorRT_INCLUDE_DIR="$TRT_INC")
  cmake -S . -B "$BUILD" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCARAFE_EMULATION_SANITIZE=OFF "${trt[@]}" && cmake --build "$BUILD" -j"$(nproc)"
}

build_nvcc() {  # the same targets without CMake
  set -e
  mkdir -p "$BUILD"
  local common="-std=c++17 -O2 -Iplugins/common -Itests/native"
  local cu="-arch=sm_$ARCH -Xcompiler=-Wall,-Wextra,-fPIC"
  nvcc $common $cu -o "$BUILD/test_cuda_kernels" tests/native/test_cuda_kernels.cu plugins/common/carafe_kernels.cu \
    plugins/common/carafe_reference.cpp plugins/common/carafe_params.cpp
  local det="-Iplugins/tensorrt/multiLevelRoIAlignPlugin -Iplugins/tensorrt/batchedNMSPlugin"
  local det_kernels="plugins/tensorrt/multiLevelRoIAlignPlugin/roiAlignKernels.cu plugins/tensorrt/batchedNMSPlugin/batchedNMSKernels.cu"
  local det_host="plugins/common/plugin_fields.cpp plugins/tensorrt/multiLevelRoIAlignPlugin/roiAlignParams.cpp plugins/tensorrt/batchedNMSPlugin/batchedNMSParams.cpp"
  nvcc $common $cu $det -o "$BUILD/test_detection_kernels" tests/native/test_detection_kernels.cu $det_kernels $det_host
  if [ $HAVE_TRT = 1 ]; then
    nvcc $common $cu $det -shared -Xcompiler=-fvisibility=hidden -Iplugins/tensorrt -isystem "$TRT_INC" \
      -o "$BUILD/libcarafe_trt_plugin.so" plugins/tensorrt/carafePlugin.cpp plugins/tensorrt/carafePluginCreator.cpp \
      plugins/tensorrt/carafePluginLibrary.cpp plugins/tensorrt/carafePluginRegistration.cpp \
      plugins/common/carafe_kernels.cu plugins/common/carafe_params.cpp \
      plugins/tensorrt/multiLevelRoIAlignPlugin/multiLevelRoIAlignPlugin.cpp \
      plugins/tensorrt/batchedNMSPlugin/batchedNMSPlugin.cpp $det_kernels $det_host -ldl -Xlinker --no-undefined
    nvcc $common -Xcompiler=-Wall,-Wextra -Iplugins/tensorrt -isystem "$TRT_INC" -o "$BUILD/test_trt_plugin" \
      tests/native/test_trt_plugin.cpp plugins/common/carafe_reference.cpp plugins/common/carafe_params.cpp \
      -L"$BUILD" -lcarafe_trt_plugin -Xlinker -rpath="$BUILD"
    nvcc $common $cu $det -Iplugins/tensorrt -isystem "$TRT_INC" -o "$BUILD/test_detection_plugins" \
      tests/native/test_detection_plugins.cpp $det_kernels $det_host plugins/common/carafe_params.cpp \
      -L"$BUILD" -lcarafe_trt_plugin -Xlinker -rpath="$BUILD"
  fi
}

# Warnings are counted, not fatal here: a compiler that differs from CI's must not stop the checks.
if command -v cmake >/dev/null; then
  step build build_cmake
  BUILD_LOG=$OUT/build.log
else
  step build_nvcc build_nvcc
  BUILD_LOG=$OUT/build_nvcc.log
fi
echo "build warnings: $(grep -ci 'warning' "$BUILD_LOG")" | tee -a "$SUMMARY"

step kernels_vs_reference "$BUILD/test_cuda_kernels"
step detection_kernels "$BUILD/test_detection_kernels"
if [ $HAVE_TRT = 1 ]; then
  step plugin_host "$BUILD/test_trt_plugin" --host
  step plugin_gpu "$BUILD/test_trt_plugin" --gpu
  step detection_plugins_host "$BUILD/test_detection_plugins" --host
  step detection_plugins_gpu "$BUILD/test_detection_plugins" --gpu
  nm -D --defined-only "$BUILD/libcarafe_trt_plugin.so" > "$OUT/plugin_exports.txt" 2>&1
  ldd "$BUILD/libcarafe_trt_plugin.so" >> "$OUT/plugin_exports.txt" 2>&1
else
  echo "plugin checks: SKIP (no TensorRT headers at $TRT_INC; run tests/gpu/fetch_third_party.sh and carry them)" \
    | tee -a "$SUMMARY"
fi

if [ $SANITIZE = 1 ] && [ -n "$SANITIZER" ]; then
  step memcheck_kernels "$SANITIZER" --tool memcheck --error-exitcode 1 --leak-check full "$BUILD/test_cuda_kernels"
  step racecheck_kernels "$SANITIZER" --tool racecheck --error-exitcode 1 "$BUILD/test_cuda_kernels"
  step memcheck_detection "$SANITIZER" --tool memcheck --error-exitcode 1 --leak-check full "$BUILD/test_detection_kernels"
  # BatchedNMS's per-class block: a shared-memory scan and a global-memory sweep with one barrier per kept box
  step racecheck_detection "$SANITIZER" --tool racecheck --error-exitcode 1 "$BUILD/test_detection_kernels"
  step synccheck_detection "$SANITIZER" --tool synccheck --error-exitcode 1 "$BUILD/test_detection_kernels"
  if [ $HAVE_TRT = 1 ]; then
    step memcheck_plugin "$SANITIZER" --tool memcheck --error-exitcode 1 "$BUILD/test_trt_plugin" --gpu
    step memcheck_detection_plugins "$SANITIZER" --tool memcheck --error-exitcode 1 "$BUILD/test_detection_plugins" --gpu
  fi
elif [ $SANITIZE = 1 ]; then
  echo "compute-sanitizer: SKIP (not found)" | tee -a "$SUMMARY"
fi

step torch_op_cuda env PYTHONPATH="$REPO" CARAFE_REQUIRE_CUDA=1 python -m pytest -q -m cuda -p no:cacheprovider tests/ops/test_cuda.py \
  -rs --durations=5

if [ $BENCH = 1 ]; then
  step benchmark env PYTHONPATH="$REPO" python benchmarks/gpu_bench.py --out "$OUT/PERFORMANCE.md"
fi

echo "summary in $SUMMARY; logs in $OUT"
exit $FAILED
