"""Issue 22: models over protobuf's 2 GB, whose weights live in an external data file. `check` runs one from its
path (ONNX Runtime reads the data file itself; serializing the model again fails with a narrowing error), and
`convert` writes the model and its data file atomically: a convert killed with SIGKILL while it writes leaves the
previous outputs (here: none) and only its hidden staging folder, which the next run removes, and a stale data file
in the way (an old convert's in-place write) does not stop a re-run.

The 2.2 GB initializer costs no disk and little time to make: a sparse file of zeros, referred to as external data.
CI time (2 cores): about 20 s for the check and 60-80 s for the two converts (the converts read and write the 2.2 GB
for real)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from support import REPO
from support.onnx_graphs import random_case, single_node_model
from support.reference import carafe_reference

from carafe_deploy.cli import main

pytestmark = pytest.mark.slow

FLOATS = 550_000_000  # 2.2 GB of float32: over protobuf's limit


def _big_model(path):
    """features, kernels -> carafe::CARAFE (portable) -> output; and head = the first 4 of a 2.2 GB weight."""
    m = single_node_model(5, 1, 2, "up", dims=([1, 4, 5, 5], [1, 25, 10, 10]))
    w = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[FLOATS], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", path.name + ".data"), ("offset", "0"), ("length", str(4 * FLOATS))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    m.graph.initializer.append(w)
    m.graph.node.extend([helper.make_node("Constant", [], ["s0"], value=helper.make_tensor("v0", TensorProto.INT64, [1], [0])),
                         helper.make_node("Constant", [], ["s1"], value=helper.make_tensor("v1", TensorProto.INT64, [1], [4])),
                         helper.make_node("Slice", ["big", "s0", "s1"], ["head"])])
    m.graph.output.append(helper.make_tensor_value_info("head", TensorProto.FLOAT, [4]))
    onnx.save(m, path)
    with open(path.with_name(path.name + ".data"), "wb") as f:
        f.truncate(4 * FLOATS)  # sparse: zeros, on no disk blocks
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return _big_model(tmp_path_factory.mktemp("big") / "big.onnx")


def test_check_runs_a_model_over_2gb_from_its_path(big, tmp_path, capsys):
    x, k = random_case(1, 4, 5, 5, 5, 1, 2, "up")
    expected = carafe_reference(x, k, 5, 1, 2, "up").astype(np.float32)  # float64 loops
    ref = tmp_path / "ref.npz"
    np.savez(ref, **{"input/features": x, "input/kernels": k, "output/output": expected,
                     "output/head": np.zeros(4, np.float32)})
    t0 = time.perf_counter()
    assert main(["check", str(big), "--reference", str(ref), "-o", str(tmp_path / "r.json")]) == 0, \
        capsys.readouterr().out
    print(f"check of a 2.2 GB model: {time.perf_counter() - t0:.1f} s")
    outputs = {o["name"]: o for o in json.loads((tmp_path / "r.json").read_text())["backends"][0]["outputs"]}
    assert outputs["output"]["max_abs"] <= 1e-5 and outputs["head"]["max_abs"] == 0


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_convert_killed_while_writing_the_data_leaves_nothing_half_written_and_a_rerun_works(big, tmp_path):
    out = tmp_path / "out.onnx"
    data = tmp_path / "out.onnx.data"
    proc = subprocess.Popen([sys.executable, "-m", "carafe_deploy", "convert", str(big), "--to", "plugin", "-o", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def writing() -> bool:  # the data file is being written in the staging folder
        return any(f.stat().st_size > 100 << 20 for d in tmp_path.glob(".out.onnx.carafe-tmp-*") for f in d.iterdir())

    deadline = time.monotonic() + 600
    while not writing():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the data file was never being written"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not data.exists()  # nothing half-written under the names a reader opens
    left = _hidden(tmp_path)
    assert left and all(f"-{proc.pid}." in name for name in left), left  # only the dead writer's staging folder

    data.write_bytes(b"half of an old convert's in-place write")  # what the old convert left: re-runs failed on it
    t0 = time.perf_counter()
    rerun = subprocess.run([sys.executable, "-m", "carafe_deploy", "convert", str(big), "--to", "plugin", "-o", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    print(f"convert of a 2.2 GB model: {time.perf_counter() - t0:.1f} s")
    assert _hidden(tmp_path) == []  # the killed run's folder is gone too
    assert data.stat().st_size == 4 * FLOATS
    converted = onnx.load(str(out), load_external_data=False)
    assert [n.domain + "::" + n.op_type for n in converted.graph.node if n.domain] == ["carafe::CARAFE"]
    assert not converted.functions  # the plugin form
    (w,) = [t for t in converted.graph.initializer if t.name == "big"]
    assert {e.key: e.value for e in w.external_data}["location"] == "out.onnx.data"
    onnx.checker.check_model(str(out))
