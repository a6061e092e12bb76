"""`carafe-deploy evaluate` and its API: every backend over a dataset through the task's own pre- and
post-processing, the metrics from the COCO evaluator / mmseg's definition, the report, the table, the chart.

Stand-in models with a known answer (tests/support/eval_stand_ins.py) check the whole path: perfect predictions must
give 1.0 (AP) and 100 (mIoU) in PyTorch and in ONNX Runtime, fp32, fp16 and INT8 files alike."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from carafe_deploy.cli import main
from carafe_deploy.errors import DeployError
from carafe_deploy.onnx.describe import carafe_form, precision
from carafe_deploy.tasks import evaluation
from carafe_deploy.tasks.datasets import write_coco, write_segmentation
from carafe_deploy.tasks.evaluation import DatasetOptions, EvaluateOptions, backends_for, evaluate
from carafe_deploy.tasks.evaluation_report import markdown_table, write_report
from carafe_deploy.tasks.source import LoadedModel
from support.eval_stand_ins import KnownBoxesDetector, PixelClassSegmenter, coco_scene, label_scene

pytest.importorskip("pycocotools", reason="the COCO evaluator: pip install -e '.[eval]'")

CLASSES = ("a", "b", "c")
# two images of 40x60 (H x W); the keep-ratio resize within 120x80 doubles them
H, W, SCALE, FACTOR = 40, 60, (120, 80), 2
GT_BOXES = [np.array([[5.0, 8.0, 25.0, 30.0], [30.0, 10.0, 55.0, 35.0]], np.float32),
            np.array([[10.0, 12.0, 40.0, 38.0]], np.float32)]
GT_CLASSES = [np.array([0, 2]), np.array([1])]


def _coco_set(tmp_path, masks: bool = False):
    images = [coco_scene(H, W, i) for i in range(2)]
    mask_list = None
    if masks:
        mask_list = []
        for boxes in GT_BOXES:
            m = np.zeros((len(boxes), H, W), bool)
            for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
                m[k, y1:y2, x1:x2] = True
            mask_list.append(m)
    return write_coco(tmp_path / "coco", images, GT_BOXES, GT_CLASSES, mask_list, CLASSES)


def _detector(shift: float = 0.0, with_masks: bool = False) -> KnownBoxesDetector:
    """Boxes in the resized input's pixels (x FACTOR); ``shift`` moves every box right by that many original pixels."""
    k = 3
    boxes = np.zeros((2, k, 4), np.float32)
    labels = np.full((2, k), -1, np.int64)
    for i, (b, c) in enumerate(zip(GT_BOXES, GT_CLASSES)):
        boxes[i, : len(b)] = (b + np.array([shift, 0, shift, 0])) * FACTOR
        labels[i, : len(c)] = c
    return KnownBoxesDetector(boxes, labels, with_masks=with_masks).eval()


def _loaded(model, task: str) -> LoadedModel:
    outputs = ["dets", "labels", "masks"] if getattr(model, "with_masks", False) else ["dets", "labels"]
    return LoadedModel(model.eval(), f"stand-in {task} model", input_names=["image"],
                       output_names=outputs if task == "detection" else ["logits"], weights="stand-in")


def _export(model, path, example, output_names, fp16: bool = False):
    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.files import save_model

    proto = export(model, (example,), None, mode="portable", input_names=["image"], output_names=output_names,
                   dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}}, fp16=fp16)
    save_model(proto, path)
    return path


def test_perfect_detections_give_one_in_pytorch_and_onnxruntime(tmp_path):
    annotations, images = _coco_set(tmp_path)
    model = _detector()
    onnx_path = _export(model, tmp_path / "known.onnx", torch.zeros(1, 3, 80, 120), ["dets", "labels"])
    rows = backends_for(_loaded(model, "detection"), [onnx_path], "detection")
    report = evaluate(rows, DatasetOptions(images=images, annotations=annotations), EvaluateOptions(scale=SCALE,
                                                                                                   progress=False))
    assert [e["backend"] for e in report["backends"]] == ["PyTorch", "ONNX Runtime"]
    for e in report["backends"]:
        assert e["status"] == "evaluated", e
        # boxes back in the original pixels (the resize factor undone), category ids from the file's categories
        assert e["metrics"]["bbox_mAP"] == pytest.approx(1.0) and e["metrics"]["bbox_mAP_75"] == pytest.approx(1.0)
        assert e["metrics"]["detections"] == 3
    assert report["backends"][1]["precision"] == "fp32" and report["backends"][1]["form"] == "decomposed"
    assert report["backends"][1]["delta"]["bbox_mAP"] == pytest.approx(0.0)


def test_a_pytorch_detector_without_output_names_is_read_in_the_detectors_order(tmp_path):
    """A --python or TorchScript model names no outputs: (dets, labels[, masks]) by position, as the registered
    detectors give them."""
    annotations, images = _coco_set(tmp_path)
    loaded = LoadedModel(_detector(), "a --python detector", input_names=None, output_names=None)
    report = evaluate(backends_for(loaded, [], "detection"), DatasetOptions(images=images, annotations=annotations),
                      EvaluateOptions(scale=SCALE, progress=False))
    assert report["backends"][0]["metrics"]["bbox_mAP"] == pytest.approx(1.0)


def test_shifted_boxes_give_the_ap_their_iou_clears(tmp_path):
    """Every detection moved right by 5 original pixels: each box's IoU with its object is known, so each
    threshold's AP is the share of objects (per category) whose IoU clears it."""
    annotations, images = _coco_set(tmp_path)
    dx = 5.0
    ious = []
    for boxes in GT_BOXES:
        for x1, y1, x2, y2 in boxes:
            w, h = x2 - x1, y2 - y1
            ious.append((w - dx) * h / (2 * w * h - (w - dx) * h))
    # one object per category (a: 20x22 box, c: 25x25, b: 30x26): a category's AP is 1 where its IoU clears the
    # threshold, else 0; mAP averages over categories and the ten thresholds
    thresholds = [0.5 + 0.05 * i for i in range(10)]
    expected = np.mean([[float(iou >= t) for t in thresholds] for iou in ious])
    rows = backends_for(_loaded(_detector(shift=dx), "detection"), [], "detection")
    report = evaluate(rows, DatasetOptions(images=images, annotations=annotations),
                      EvaluateOptions(scale=SCALE, progress=False))
    assert report["backends"][0]["metrics"]["bbox_mAP"] == pytest.approx(expected)


def test_masks_are_pasted_and_scored(tmp_path):
    annotations, images = _coco_set(tmp_path, masks=True)
    rows = backends_for(_loaded(_detector(with_masks=True), "detection"), [], "detection")
    report = evaluate(rows, DatasetOptions(images=images, annotations=annotations),
                      EvaluateOptions(scale=SCALE, progress=False))
    metrics = report["backends"][0]["metrics"]
    assert metrics["segm_mAP"] == pytest.approx(1.0) and metrics["bbox_mAP"] == pytest.approx(1.0)


def test_a_model_with_more_classes_than_the_dataset_is_refused(tmp_path):
    annotations, images = _coco_set(tmp_path)
    model = _detector()
    model.labels[0, 0] = 7
    with pytest.raises(DeployError, match="predicts class 7; the annotations have 3 categories"):
        evaluate(backends_for(_loaded(model, "detection"), [], "detection"),
                 DatasetOptions(images=images, annotations=annotations), EvaluateOptions(scale=SCALE, progress=False))


def _seg_set(tmp_path, ignore_index=255):
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, (12, 16)) for _ in range(3)]
    labels[0][:3, :3] = ignore_index
    images = [label_scene(lbl, ignore_index) for lbl in labels]
    img_dir, ann_dir = write_segmentation(tmp_path / "seg", images, labels)
    return img_dir, ann_dir, labels


def _int8(fp32_path, out_path, img_dir):
    """ONNX Runtime's own static quantization (QDQ), calibrated on the dataset's images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from PIL import Image

    from carafe_deploy.imaging import segmentation_input

    class Images(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"image": segmentation_input(Image.open(p).convert("RGB"))}
                               for p in sorted(img_dir.iterdir())])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(fp32_path), str(out_path), Images(), quant_format=QuantFormat.QDQ)
    return out_path


def test_segmentation_fp32_fp16_int8_and_the_ignore_index(tmp_path):
    img_dir, ann_dir, _ = _seg_set(tmp_path)
    model = PixelClassSegmenter(4).eval()
    example = torch.zeros(1, 3, 12, 16)
    fp32 = _export(model, tmp_path / "seg.onnx", example, ["logits"])
    fp16 = _export(model, tmp_path / "seg_fp16.onnx", example, ["logits"], fp16=True)
    int8 = _int8(fp32, tmp_path / "seg_int8.onnx", img_dir)
    assert (precision(onnx.load(fp32)), precision(onnx.load(fp16)), precision(onnx.load(int8))) == (
        "fp32", "fp16", "int8")
    rows = backends_for(_loaded(model, "segmentation"), [fp32, fp16, int8], "segmentation")
    report = evaluate(rows, DatasetOptions(images=img_dir, labels=ann_dir), EvaluateOptions(progress=False),
                      model_task="segmentation")
    assert [(e["backend"], e["precision"]) for e in report["backends"]] == [
        ("PyTorch", "fp32"), ("ONNX Runtime", "fp32"), ("ONNX Runtime", "fp16"), ("ONNX Runtime", "int8")]
    for e in report["backends"]:
        assert e["status"] == "evaluated", e
        # perfect: the ignored pixels (painted class 1) count nowhere; were they counted as class 255, the label
        # would be out of range and evaluate would refuse it
        assert e["metrics"]["mIoU"] == pytest.approx(100.0) and e["metrics"]["aAcc"] == pytest.approx(100.0)


def test_segmentation_counts_a_known_mistake(tmp_path):
    """One 4x4 block of class-0 pixels labelled 3 in the first map: by hand, class 0 loses 16 pixels to false
    positives, class 3 16 false negatives."""
    img_dir, ann_dir, labels = _seg_set(tmp_path)
    wrong = labels[0].copy()
    wrong[6:10, 6:10] = 3
    from PIL import Image

    painted = np.where(wrong == 255, 1, wrong)
    painted[6:10, 6:10] = 0
    Image.fromarray(label_scene(painted)).save(img_dir / "000000.png")
    Image.fromarray(wrong.astype(np.uint8)).save(ann_dir / "000000.png")
    total = np.stack([wrong, labels[1], labels[2]])
    valid = total != 255
    pred = total.copy()
    pred[0, 6:10, 6:10] = 0
    ious = []
    for c in range(4):
        inter = np.sum((pred == c) & (total == c) & valid)
        union = np.sum(((pred == c) | (total == c)) & valid)
        ious.append(inter / union)
    report = evaluate(backends_for(_loaded(PixelClassSegmenter(4), "segmentation"), [], "segmentation"),
                      DatasetOptions(images=img_dir, labels=ann_dir), EvaluateOptions(progress=False))
    metrics = report["backends"][0]["metrics"]
    assert metrics["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert metrics["aAcc"] == pytest.approx(100 * (1 - 16 / valid.sum()))


def test_labels_outside_the_model_classes_are_refused(tmp_path):
    img_dir, ann_dir, _ = _seg_set(tmp_path, ignore_index=254)  # 255 is no longer ignored: label 254 is
    with pytest.raises(DeployError, match="has class 254; the model has 4 classes"):
        evaluate(backends_for(_loaded(PixelClassSegmenter(4), "segmentation"), [], "segmentation"),
                 DatasetOptions(images=img_dir, labels=ann_dir, ignore_index=255), EvaluateOptions(progress=False))


def test_plugin_form_without_the_custom_op_library_is_a_skipped_row(tmp_path, monkeypatch):
    from carafe_deploy.models.tiny import TinyCarafeNet
    from carafe_deploy.onnx import export, to_plugin
    from carafe_deploy.onnx.files import save_model

    monkeypatch.setattr(evaluation, "_plugin_library_missing", lambda: "no onnxruntime_c_api.h was found")
    torch.manual_seed(0)
    proto = to_plugin(export(TinyCarafeNet(8, 4).eval(), (torch.zeros(2, 3, 16, 16),), None, mode="portable",
                             input_names=["image"], output_names=["logits"],
                             dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}}))
    path = tmp_path / "plugin.onnx"
    save_model(proto, path)
    assert carafe_form(proto) == "plugin"
    img_dir, ann_dir, _ = _seg_set(tmp_path)
    report = evaluate(backends_for(None, [path], "segmentation"), DatasetOptions(images=img_dir, labels=ann_dir),
                      EvaluateOptions(progress=False))
    (row,) = report["backends"]
    assert (row["status"], row["form"]) == ("skipped", "plugin")
    assert "custom-op library" in row["reason"] and "convert FILE --to portable" in row["reason"]
    assert report["reference"] is None and "delta" not in row
    assert "| ONNX Runtime (plugin) | fp32 | skipped: a plugin-form file" in markdown_table(report)


@pytest.mark.tensorrt
def test_an_engine_that_cannot_run_here_is_built_not_run(tmp_path):
    from carafe_deploy.trt import BuildOptions, build_engine
    from carafe_deploy.trt.availability import build_unavailable, run_unavailable

    reason = build_unavailable(use_plugin=False)
    if reason:
        pytest.skip(f"no TensorRT to build with: {reason}")
    if run_unavailable() is None:
        pytest.skip("a GPU is here: the engine runs (tests/trt/test_engines_on_a_gpu.py)")
    img_dir, ann_dir, _ = _seg_set(tmp_path)
    fp32 = _export(PixelClassSegmenter(4).eval(), tmp_path / "seg.onnx", torch.zeros(1, 3, 12, 16), ["logits"])
    shape = {"image": (1, 3, 12, 16)}
    build_engine(BuildOptions(onnx_path=fp32, engine_path=tmp_path / "seg.engine", min_shapes=shape,
                              opt_shapes=shape, max_shapes=shape, use_plugin=False, progress=False))
    report = evaluate(backends_for(None, [tmp_path / "seg.engine"], "segmentation"),
                      DatasetOptions(images=img_dir, labels=ann_dir), EvaluateOptions(progress=False))
    (row,) = report["backends"]
    assert row["status"] == "built, not run" and row["reason"] == run_unavailable()
    assert row["backend"] in ("TensorRT", "TensorRT-RTX") and row["precision"] == "fp32" and not row["metrics"]


def test_cli_writes_report_and_chart(tmp_path, capsys):
    annotations, images = _coco_set(tmp_path)
    onnx_path = _export(_detector(), tmp_path / "known.onnx", torch.zeros(1, 3, 80, 120), ["dets", "labels"])
    out = tmp_path / "report.json"
    code = main(["evaluate", str(onnx_path), "--images", str(images), "--annotations", str(annotations),
                 "--scale", "120,80", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "ONNX Runtime (decomposed)" in printed and "1.0000" in printed
    report = json.loads(out.read_text())
    (row,) = report["backends"]
    assert {"backend", "precision", "metrics"} <= set(row) and row["metrics"]["bbox_mAP"] == pytest.approx(1.0)
    assert report["dataset"]["categories"] == list(CLASSES)
    chart = out.with_suffix(".png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--images", "{images}", "--annotations", "{annotations}"], "nothing to evaluate"),
    (["{model}", "--images", "{images}", "--annotations", "{missing}"], "no such file"),
    (["{model}", "--images", "{tmp}/nope", "--annotations", "{annotations}"], "no such folder"),
    (["{annotations}", "--images", "{images}", "--annotations", "{annotations}"],
     "neither an ONNX file (.onnx) nor a TensorRT engine"),
    (["{model}", "--images", "{images}", "--annotations", "{annotations}", "-o", "{model}"], "overwrite"),
    (["{model}", "--images", "{images}", "--annotations", "{annotations}", "--chart", "{tmp}/c.jpg"], "name it *.png"),
    (["{model}", "--images", "{images}", "--annotations", "{annotations}", "--limit", "0"], "--limit must be >= 1"),
    (["{model}", "--images", "{images}", "--labels", "{tmp}"], "has no label map"),
    (["{model}", "--model", "upernet_r50_carafe", "--tiny", "--images", "{images}", "--annotations", "{annotations}"],
     "is a segmentation model; the dataset given is a detection dataset"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, message):
    annotations, images = _coco_set(tmp_path)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used before the check")
    fields = dict(images=images, annotations=annotations, missing=tmp_path / "missing.json", model=model, tmp=tmp_path)
    code = main(["evaluate", *(a.format(**fields) for a in argv)])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_report_is_written_atomically_beside_nothing_else(tmp_path):
    annotations, images = _coco_set(tmp_path)
    report = evaluate(backends_for(_loaded(_detector(), "detection"), [], "detection"),
                      DatasetOptions(images=images, annotations=annotations), EvaluateOptions(scale=SCALE,
                                                                                             progress=False))
    (tmp_path / "out").mkdir()
    write_report(report, tmp_path / "out" / "r.json", tmp_path / "out" / "r.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.json", "r.png"]
