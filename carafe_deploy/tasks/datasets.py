"""Datasets that ``evaluate`` reads and the samples write, in the layouts of the field:

- detection: COCO (an image folder and an ``instances.json``: ``images``, ``annotations`` with ``bbox`` as x, y, w, h
  and an RLE or polygon ``segmentation``, ``categories``), read with pycocotools;
- segmentation: mmsegmentation's (an image folder, ``img_dir``, and a folder of label maps, ``ann_dir``: one
  single-channel PNG per image with the same stem, pixel = class index, ``ignore_index`` for unlabelled pixels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DeployError
from ..files import atomic_path, atomic_write_text, make_dir
from .metrics import coco_evaluator

__all__ = ["CocoDataset", "SegmentationDataset", "load_coco", "load_segmentation", "write_coco", "write_segmentation",
           "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open_rgb(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise DeployError(f"cannot read image {path}: {exc}") from None


@dataclass
class CocoDataset:
    """A COCO detection set: ``coco`` (pycocotools ``COCO``), the images evaluated (``image_ids``, in the file's
    order) and the categories, whose order maps a model's class index to a category id (as mmdet does)."""

    annotations: Path
    images: Path
    coco: object
    image_ids: list[int]
    category_ids: list[int]
    class_names: list[str]
    has_masks: bool

    def __len__(self) -> int:
        return len(self.image_ids)

    def path(self, image_id: int) -> Path:
        return self.images / self.coco.imgs[image_id]["file_name"]

    def __iter__(self) -> Iterator[tuple[int, object]]:
        """(image id, PIL RGB image) for each image."""
        for image_id in self.image_ids:
            yield image_id, _open_rgb(self.path(image_id))


def load_coco(annotations, images, limit: int | None = None) -> CocoDataset:
    """Read ``annotations`` (COCO JSON) for the image folder ``images``; the first ``limit`` images when given.
    ``DeployError`` naming the problem for a file that is not COCO or an image that is missing."""
    annotations, images = Path(annotations), Path(images)
    if not annotations.is_file():
        raise DeployError(f"--annotations {annotations}: no such file")
    if not images.is_dir():
        raise DeployError(f"--images {images}: no such folder")
    try:
        data = json.loads(annotations.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeployError(f"--annotations {annotations}: not a JSON file ({exc})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise DeployError(f"--annotations {annotations}: not COCO instances (no {', '.join(missing)})")
    if not data["images"] or not data["categories"]:
        raise DeployError(f"--annotations {annotations}: no {'images' if not data['images'] else 'categories'}")
    COCO, _, _ = coco_evaluator()
    coco = COCO()
    coco.dataset = data
    try:
        with _quiet_stdout():
            coco.createIndex()
    except (KeyError, TypeError) as exc:
        raise DeployError(f"--annotations {annotations}: a malformed entry ({type(exc).__name__}: {exc})") from None
    ids = [img["id"] for img in data["images"]][:limit]
    for image_id in ids:
        path = images / coco.imgs[image_id]["file_name"]
        if not path.is_file():
            raise DeployError(f"image {coco.imgs[image_id]['file_name']} of --annotations is not in --images {images}")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    has_masks = any("segmentation" in a and a["segmentation"] for a in data["annotations"])
    return CocoDataset(annotations, images, coco, ids, [c["id"] for c in cats], [c["name"] for c in cats], has_masks)


def _quiet_stdout():
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())


@dataclass
class SegmentationDataset:
    """Images and label maps paired by stem (mmseg's ``img_dir`` / ``ann_dir``)."""

    images: Path
    labels: Path
    pairs: list[tuple[Path, Path]]
    ignore_index: int

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[str, object, np.ndarray]]:
        """(image name, PIL RGB image, label map (H, W) int64) for each pair."""
        from PIL import Image

        for image_path, label_path in self.pairs:
            try:
                with Image.open(label_path) as lbl:
                    if lbl.mode not in ("L", "P", "I", "I;16"):
                        raise DeployError(f"label map {label_path} is a {lbl.mode} image; label maps are single-channel "
                                          "(pixel = class index)")
                    label = np.asarray(lbl, dtype=np.int64)
            except (OSError, SyntaxError, ValueError) as exc:
                raise DeployError(f"cannot read label map {label_path}: {exc}") from None
            yield image_path.name, _open_rgb(image_path), label


def load_segmentation(images, labels, label_suffix: str = ".png", ignore_index: int = 255,
                      limit: int | None = None) -> SegmentationDataset:
    """Pair every image in ``images`` (sorted by name) with ``labels``/<stem><label_suffix>; the first ``limit``."""
    images, labels = Path(images), Path(labels)
    for option, folder in (("--images", images), ("--labels", labels)):
        if not folder.is_dir():
            raise DeployError(f"{option} {folder}: no such folder")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DeployError(f"--images {images}: no images ({', '.join(IMAGE_SUFFIXES)})")
    pairs = []
    for f in files[:limit]:
        label = labels / f"{f.stem}{label_suffix}"
        if not label.is_file():
            raise DeployError(f"image {f.name} has no label map {label.name} in --labels {labels}")
        pairs.append((f, label))
    return SegmentationDataset(images, labels, pairs, ignore_index)


# --------------------------------------------------------------------------------------------------------------
# writing (the samples' test sets)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_coco(folder, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray],
               masks: Sequence[np.ndarray] | None, class_names: Sequence[str]) -> tuple[Path, Path]:
    """A COCO detection set: ``folder/images/000000.png ...`` and ``folder/instances.json``. Per image: (H, W, 3)
    uint8, boxes (K, 4) x1 y1 x2 y2, classes (K,) 0-based (category id = class + 1), masks (K, H, W) bool
    (written as RLE) or ``None``. Returns (annotations file, image folder)."""
    _, _, mask_api = coco_evaluator() if masks is not None else (None, None, None)
    folder = make_dir(folder, "dataset folder")
    image_dir = make_dir(folder / "images", "dataset folder")
    data = {"info": {"description": "carafe-deploy synthetic shapes"}, "images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]}
    for i, image in enumerate(images):
        name = f"{i:06d}.png"
        _save_png(np.asarray(image, np.uint8), image_dir / name)
        data["images"].append({"id": i + 1, "file_name": name, "height": int(image.shape[0]),
                               "width": int(image.shape[1])})
        for k, (box, cls) in enumerate(zip(boxes[i], classes[i])):
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {"id": len(data["annotations"]) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            if masks is not None:
                rle = mask_api.encode(np.asfortranarray(masks[i][k].astype(np.uint8)))
                ann["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
                ann["area"] = float(mask_api.area(rle))
            data["annotations"].append(ann)
    path = folder / "instances.json"
    atomic_write_text(path, json.dumps(data) + "\n")
    return path, image_dir


def write_segmentation(folder, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[Path, Path]:
    """mmseg's layout: ``folder/img_dir/000000.png ...`` and ``folder/ann_dir/000000.png ...`` (uint8 label maps).
    Returns (image folder, label folder)."""
    folder = make_dir(folder, "dataset folder")
    img_dir, ann_dir = make_dir(folder / "img_dir", "dataset folder"), make_dir(folder / "ann_dir", "dataset folder")
    for i, (image, label) in enumerate(zip(images, labels)):
        _save_png(np.asarray(image, np.uint8), img_dir / f"{i:06d}.png")
        _save_png(np.asarray(label, np.uint8), ann_dir / f"{i:06d}.png")
    return img_dir, ann_dir
