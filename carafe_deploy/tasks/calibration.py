"""Calibration data for post-training quantization: images through the model's own preprocessing, or random data.

The preprocessing is the task family's (:mod:`carafe_deploy.imaging`, which the pipeline and the Triton ensembles run
too): a segmenter gets ImageNet-normalised RGB at the model's fixed size (or the image's own size where the graph is
dynamic, or ``--input-shape``'s); a detector gets 0..255 RGB resized as mmdet does (fitted and padded into a fixed
canvas). A model of no known family has no preprocessing to apply, so it calibrates on random data only.

Random calibration (``--calibration-random N``, "a quick look") sends random images (smooth colour blobs plus noise)
through the same preprocessing, so the ranges are those of images; for a generic model, standard-normal inputs.
Feeds are made one at a time, as the calibrator asks for them: a large folder is never held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DeployError
from ..imaging import DETECTION_SCALE, detection_input, normalize, image_tensor

__all__ = ["IMAGE_SUFFIXES", "InputSpec", "CalibrationData", "image_files", "random_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
# random images where the graph leaves the size open: mmseg's ADE20k crop, mmdet's test scale
_DEFAULT_SIZES = {"segmentation": (512, 512), "detection": DETECTION_SCALE[::-1]}


@dataclass
class InputSpec:
    """One graph input: its name, dims (an int, or ``None`` where dynamic) and numpy dtype."""

    name: str
    dims: tuple
    dtype: type = np.float32

    def fixed(self, axis: int) -> int | None:
        d = self.dims[axis] if axis < len(self.dims) else None
        return d if isinstance(d, int) and d > 0 else None


def image_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The image files of ``folder`` (sorted by name, not recursive), at most ``limit``; ``DeployError`` when the
    folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DeployError(f"--calibration-images {str(folder)!r} is not a folder" if folder.exists() else
                          f"--calibration-images: no such folder {str(folder)!r}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DeployError(f"--calibration-images {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files[:limit] if limit else files


def random_image(height: int, width: int, rng: np.random.Generator):
    """A PIL RGB image of smooth colour blobs plus noise (features vary as in a photograph, unlike white noise)."""
    from PIL import Image

    low = Image.fromarray((rng.random((max(2, height // 32), max(2, width // 32), 3)) * 255).astype(np.uint8))
    smooth = np.asarray(low.resize((width, height), Image.BILINEAR), np.float32)
    noise = rng.random((height, width, 3), dtype=np.float32) * 255
    return Image.fromarray(np.clip(smooth * 0.8 + noise * 0.2, 0, 255).astype(np.uint8))


def _load_image(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ... by format
        raise DeployError(f"--calibration-images: cannot read {str(path)!r} as an image ({exc})") from None


class CalibrationData:
    """The calibration feeds of one model: ``len()`` of them, made lazily by iteration.

    ``task``: "segmentation", "detection" or "generic"; ``inputs``: the model's inputs; ``images``: files (else
    ``random`` feeds are made); ``input_shapes``: sizes for dynamic dims, once per input (``--input-shape``).
    """

    def __init__(self, task: str, inputs: Sequence[InputSpec], images: Sequence[Path] = (), random: int = 0,
                 input_shapes: Sequence[Sequence[int]] | None = None, seed: int = 0):
        if task not in ("segmentation", "detection", "generic"):
            raise ValueError(f"unknown task family {task!r}; use segmentation, detection or generic")
        if bool(images) == bool(random):
            raise ValueError("give calibration images or a number of random feeds (one of them)")
        if random and random < 1:
            raise ValueError(f"--calibration-random must be >= 1, got {random}")
        self.task, self.inputs, self.images, self.seed = task, list(inputs), list(images), seed
        self.shapes = [tuple(s) for s in input_shapes] if input_shapes else None
        if self.shapes and len(self.shapes) != len(self.inputs):
            raise DeployError(f"--input-shape given {len(self.shapes)} time(s); the model has {len(self.inputs)} "
                              f"input(s): {', '.join(i.name for i in self.inputs)}")
        if task != "generic":
            if len(self.inputs) != 1 or len(self.inputs[0].dims) != 4 or self.inputs[0].fixed(1) not in (None, 3):
                raise DeployError(f"a {task} model takes one N,3,H,W image; this one's inputs are "
                                  + ", ".join(f"{i.name} {list(i.dims)}" for i in self.inputs))
        elif images:
            raise DeployError("image calibration needs the model's preprocessing, and this file names no task family "
                              "(its metadata has no carafe_deploy.task): give --task segmentation or detection, or "
                              "calibrate with --calibration-random N")
        self.batch = self._batch()
        if self.images and len(self.images) < self.batch:
            raise DeployError(f"the model takes batches of {self.batch} images; --calibration-images has "
                              f"{len(self.images)}: give at least {self.batch}")
        count = len(self.images) if self.images else random
        self.feeds = max(1, count // self.batch)
        self.count = self.feeds * self.batch  # images (or random samples) used

    def __len__(self) -> int:
        return self.feeds

    def _shape(self, index: int) -> tuple | None:
        return self.shapes[index] if self.shapes else None

    def _batch(self) -> int:
        """Images per feed: an image model's fixed batch (or --input-shape's); a generic feed is one set of inputs."""
        if self.task == "generic":
            return 1
        first = self.inputs[0]
        given = self._shape(0)
        return first.fixed(0) or (given[0] if given else 1)

    def _size(self) -> tuple[int, int] | None:
        """(H, W) every image is brought to, or None: its own size (a dynamic graph without --input-shape)."""
        spec, given = self.inputs[0], self._shape(0)
        h, w = spec.fixed(2), spec.fixed(3)
        if h and w:
            return h, w
        if given:
            return given[2], given[3]
        return None

    def _image_input(self, img) -> np.ndarray:
        size = self._size()
        if self.task == "detection":
            return detection_input(img, size)[0]  # fitted into a fixed canvas, else mmdet's keep-ratio resize
        from PIL import Image

        if size and (img.height, img.width) != size:
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        return normalize(image_tensor(img))

    def _random_input(self, spec: InputSpec, index: int, rng: np.random.Generator) -> np.ndarray:
        given = self._shape(index)
        dims = [spec.fixed(a) or (given[a] if given and a < len(given) else None) for a in range(len(spec.dims))]
        if dims and dims[0] is None:
            dims[0] = 1
        missing = [a for a, d in enumerate(dims) if d is None]
        if missing:
            raise DeployError(f"input {spec.name!r} has dynamic dims {missing} ({list(spec.dims)}): give its "
                              "calibration shape with --input-shape N,C,H,W (once per input)")
        if np.issubdtype(spec.dtype, np.floating):
            return rng.standard_normal(dims).astype(spec.dtype)
        return rng.integers(0, 2, dims).astype(spec.dtype)

    def _images(self) -> Iterator:
        if self.images:
            for path in self.images[:self.count]:
                yield _load_image(path)
            return
        rng = np.random.default_rng(self.seed)
        h, w = self._size() or _DEFAULT_SIZES[self.task]
        for _ in range(self.count):
            yield random_image(h, w, rng)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.task == "generic":
            rng = np.random.default_rng(self.seed)
            for _ in range(self.feeds):
                yield {spec.name: self._random_input(spec, i, rng) for i, spec in enumerate(self.inputs)}
            return
        name = self.inputs[0].name
        batch = []
        for img in self._images():
            batch.append(self._image_input(img))
            if len(batch) == self.batch:
                if len({b.shape for b in batch}) > 1:
                    raise DeployError(f"the model's batch is {self.batch}, and calibration images of different "
                                      "sizes cannot share a batch: give --input-shape N,3,H,W to resize them")
                yield {name: np.concatenate(batch)}
                batch = []
