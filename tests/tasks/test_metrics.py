"""The task metrics on hand-made cases whose answer is known from the definitions: COCO AP through pycocotools (the
evaluator), mmseg's mIoU / aAcc / mAcc with an ignore index."""

from __future__ import annotations

import numpy as np
import pytest

from carafe_deploy.tasks.metrics import coco_metrics, confusion_matrix, segmentation_metrics

pycocotools = pytest.importorskip("pycocotools", reason="the COCO evaluator: pip install -e '.[eval]'")
from pycocotools import mask as mask_api  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

# COCO's IoU thresholds: .50:.05:.95 (Lin et al., "Microsoft COCO", and cocoapi's Params.iouThrs)
IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]


def _ground_truth(boxes, masks=None, size=(100, 100)):
    """One image, one category, the given boxes (x, y, w, h)."""
    h, w = size
    data = {"images": [{"id": 1, "width": w, "height": h, "file_name": "a.png"}],
            "categories": [{"id": 7, "name": "thing"}], "annotations": []}
    for i, box in enumerate(boxes):
        ann = {"id": i + 1, "image_id": 1, "category_id": 7, "bbox": list(box), "area": box[2] * box[3],
               "iscrowd": 0}
        if masks is not None:
            rle = mask_api.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            ann["area"] = float(masks[i].sum())
        data["annotations"].append(ann)
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


def _det(box, score=0.9, category=7):
    return {"image_id": 1, "category_id": category, "bbox": list(box), "score": score}


def test_perfect_boxes_give_one():
    boxes = [(10.0, 10.0, 40.0, 30.0), (50.0, 40.0, 40.0, 45.0)]
    m = coco_metrics(_ground_truth(boxes), [_det(b) for b in boxes])
    assert m["bbox_mAP"] == pytest.approx(1.0) and m["bbox_mAP_50"] == pytest.approx(1.0)
    assert m["bbox_mAP_75"] == pytest.approx(1.0)
    # both boxes are "medium" (32² < area < 96²): the small and large ranges hold no object, the evaluator says -1
    assert m["bbox_mAP_m"] == pytest.approx(1.0) and m["bbox_mAP_s"] is None and m["bbox_mAP_l"] is None


def test_one_shifted_box_gives_the_share_of_thresholds_its_iou_clears():
    """One object, one detection shifted by dx: at each threshold the detection is either a true positive (AP 1: the
    one recall level reached at precision 1) or a false positive with the object missed (AP 0). So mAP is the share
    of the ten thresholds that the IoU reaches, AP50 is 1 and AP75 is 0 for an IoU between them."""
    w, h, dx = 20.0, 20.0, 4.0
    inter = (w - dx) * h
    iou = inter / (2 * w * h - inter)  # 320 / 480 = 2/3
    assert 0.65 < iou < 0.7
    expected = sum(iou >= t for t in IOU_THRESHOLDS) / len(IOU_THRESHOLDS)  # 0.50, 0.55, 0.60, 0.65 -> 0.4
    m = coco_metrics(_ground_truth([(10.0, 10.0, w, h)]), [_det((10.0 + dx, 10.0, w, h))])
    assert m["bbox_mAP"] == pytest.approx(expected) == pytest.approx(0.4)
    assert m["bbox_mAP_50"] == pytest.approx(1.0) and m["bbox_mAP_75"] == pytest.approx(0.0)


def test_a_false_positive_ranked_first_halves_the_precision():
    """Detections in score order: a false positive, then the object. Precision is 0 at recall 0 after the first and
    1/2 at recall 1 after the second; COCO's AP averages the interpolated precision (the best precision at this
    recall or beyond) over 101 recall levels 0, 0.01, ..., 1: every level gets 1/2."""
    m = coco_metrics(_ground_truth([(10.0, 10.0, 20.0, 20.0)]),
                     [_det((60.0, 60.0, 20.0, 20.0), score=0.95), _det((10.0, 10.0, 20.0, 20.0), score=0.5)])
    assert m["bbox_mAP_50"] == pytest.approx(0.5)
    assert m["bbox_mAP"] == pytest.approx(0.5)


def test_wrong_category_and_no_detection_give_zero():
    gt = _ground_truth([(10.0, 10.0, 20.0, 20.0)])
    assert coco_metrics(gt, [])["bbox_mAP"] == 0.0
    assert coco_metrics(gt, [_det((10.0, 10.0, 20.0, 20.0), category=8)])["bbox_mAP_50"] == 0.0


def test_perfect_masks_give_one_and_a_half_mask_gives_its_iou():
    masks = np.zeros((1, 60, 60), bool)
    masks[0, 10:30, 10:40] = True  # 20 x 30
    gt = _ground_truth([(10.0, 10.0, 30.0, 20.0)], masks, size=(60, 60))
    rle = mask_api.encode(np.asfortranarray(masks[0].astype(np.uint8)))
    perfect = dict(_det((10.0, 10.0, 30.0, 20.0)), segmentation=rle)
    m = coco_metrics(gt, [perfect], iou_types=("bbox", "segm"))
    assert m["segm_mAP"] == pytest.approx(1.0) and m["bbox_mAP"] == pytest.approx(1.0)
    half = np.zeros((60, 60), np.uint8)
    half[10:30, 10:25] = 1  # the left half: mask IoU 300 / 600
    m = coco_metrics(gt, [dict(_det((10.0, 10.0, 30.0, 20.0)), segmentation=mask_api.encode(np.asfortranarray(half)))],
                     iou_types=("segm",))
    assert m["segm_mAP_50"] == pytest.approx(1.0) and m["segm_mAP_75"] == pytest.approx(0.0)
    assert m["segm_mAP"] == pytest.approx(sum(0.5 >= t for t in IOU_THRESHOLDS) / 10)


def test_segmentation_metrics_by_hand_with_an_ignore_index():
    label = np.array([[0, 0, 1, 1], [0, 255, 1, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    # the ignored pixel (row 1, col 1) counts nowhere, whatever is predicted there. Per class, over the other 7:
    # class 0: label 3 px, predicted 2 px, both 2 -> IoU 2/3, recall 2/3
    # class 1: label 3, predicted 3, both 2 -> IoU 2/4, recall 2/3
    # class 2: label 1, predicted 2, both 1 -> IoU 1/2, recall 1
    # class 3: absent from both -> left out of the means
    cm = confusion_matrix(pred, label, 4, ignore_index=255)
    assert cm.sum() == 7
    m = segmentation_metrics(cm)
    assert m["IoU"][:3] == pytest.approx([100 * 2 / 3, 50.0, 50.0]) and m["IoU"][3] is None
    assert m["mIoU"] == pytest.approx(100 * (2 / 3 + 0.5 + 0.5) / 3)
    assert m["aAcc"] == pytest.approx(100 * 5 / 7)
    assert m["mAcc"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1) / 3)
    # perfect predictions: 100 everywhere
    assert segmentation_metrics(confusion_matrix(label, label, 4, 255))["mIoU"] == pytest.approx(100.0)


def test_confusion_matrix_sums_over_images():
    a = confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2)
    b = confusion_matrix(np.array([1, 1]), np.array([1, 0]), 2)
    assert (a + b).tolist() == [[1, 2], [0, 1]]
