"""mmcv's CARAFE test vectors (tests/data/mmcv_carafe): CARAFE(kernel_size=5, group_size=4, scale_factor=2), backward
with a gradient of ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from carafe_deploy.ops import carafe


def load_vector(d: Path, name: str, shape) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(d / name, np.float32).reshape(shape))


def op_errors(d: Path) -> dict[str, float]:
    """Max abs difference of carafe_deploy's op (forward, both gradients) from mmcv's vectors in folder d."""
    feat = load_vector(d, "carafe_feat.bin", (2, 64, 3, 3)).requires_grad_()
    mask = load_vector(d, "carafe_mask.bin", (2, 100, 6, 6)).requires_grad_()
    out = carafe(feat, mask, kernel_size=5, group=4, scale_factor=2)
    out.sum().backward()
    return {
        "output": (out - load_vector(d, "carafe_output.bin", (2, 64, 6, 6))).abs().max().item(),
        "features grad": (feat.grad - load_vector(d, "carafe_feat_grad.bin", (2, 64, 3, 3))).abs().max().item(),
        "kernels grad": (mask.grad - load_vector(d, "carafe_mask_grad.bin", (2, 100, 6, 6))).abs().max().item(),
    }
