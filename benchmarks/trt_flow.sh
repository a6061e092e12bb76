#!/usr/bin/env bash
# The whole TensorRT flow on the demo network: PyTorch -> ONNX -> engine -> run -> check -> bench.
# Needs a GPU machine with TensorRT (pip install tensorrt) and the plugin built (cmake -S . -B build ...);
# without TensorRT, `build` and `run` stop with one line saying so, and `check`/`bench` run the other backends.
# Usage: benchmarks/trt_flow.sh [OUT_DIR]   (OUT_DIR relative to the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
carafe-deploy() { python3 -m carafe_deploy "$@"; }  # this checkout's code, installed or not
out=${1:-trt_flow_out}
mkdir -p "$out"
src=(--model tiny_carafe_net)
# one set of weights for every backend: export once with a reference, build both engines from that file
carafe-deploy export "${src[@]}" --input-shape 2,3,128,128 --dynamic image:0 --mode portable \
  -o "$out/tiny.onnx" --save-reference "$out/tiny_ref.npz"
shapes=(--min image:1x3x128x128 --opt image:4x3x128x128 --max image:8x3x128x128)
status=0
carafe-deploy build "$out/tiny.onnx" "${shapes[@]}" -o "$out/tiny_plugin.engine" \
  --timing-cache "$out/timing.cache" || status=$?
carafe-deploy build "$out/tiny.onnx" "${shapes[@]}" -o "$out/tiny_noplugin.engine" --no-plugin \
  --timing-cache "$out/timing.cache" || status=$?
python3 -c "import numpy as np; np.save('$out/x.npy', np.load('$out/tiny_ref.npz')['input/image'])"
[[ -f $out/tiny_plugin.engine ]] && carafe-deploy run "$out/tiny_plugin.engine" --input "$out/x.npy" -o "$out/run"
for e in plugin noplugin; do
  carafe-deploy check "$out/tiny.onnx" --reference "$out/tiny_ref.npz" \
    $( [[ -f $out/tiny_$e.engine ]] && echo --engine "$out/tiny_$e.engine" ) -o "$out/check_$e.json" || status=$?
done
carafe-deploy bench "$out/tiny.onnx" $( [[ -f $out/tiny_plugin.engine ]] && echo --engine "$out/tiny_plugin.engine" ) \
  "${src[@]}" --input-shape 1,3,128,128 --batch 1 2 4 --warmup 3 --iters 20 \
  -o "$out/bench.json" --plot "$out/bench.png"
exit $status
