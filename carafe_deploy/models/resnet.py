"""ResNet (pytorch style, as mmdet/mmseg build it) with parameter names of torchvision and mmdet.

Names: ``conv1``, ``bn1``, ``layer{1..4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}``, ``layer{n}.0.downsample.{0,1}``.
"pytorch" style puts the stride on the 3×3 conv (conv2), as torchvision and mmdet's default do, so torchvision's and
mmdet's ResNet-50 weights load with no renaming (torchvision's classifier ``fc.*`` is dropped by
:func:`load_backbone_weights`).

CARAFE++ variant (``carafe_pp=True``; CARAFE++ paper, arXiv 2012.04733, §4.1 and Fig. 4): every stride-2
downsampling of the network body becomes a content-aware one, 7 ``CARAFEDownsample`` modules in all:

- the stem's 3×3 max-pool is replaced by a CARAFE++ module; it keeps the attribute name ``maxpool``;
- in the first block of layer2/3/4 the 3×3 conv runs at stride 1 and is followed by CARAFE++ ×2 (``carafe``, before
  ``bn2``), and the shortcut's stride-2 1×1 conv runs at stride 1 after a CARAFE++ ×2 on the block input
  (``shortcut_carafe``, before ``downsample``).

Every name of the plain network is kept with the same shape, so ImageNet ResNet-50 weights load into the CARAFE++
backbone too; only the CARAFE++ modules' own parameters are new (:func:`load_backbone_weights` keeps their
initialisation). Output sizes are those of the plain network (ceil(H/2) at each stride-2 step). ``downsample_cfg``
sets the CARAFE++ modules' arguments (those of :class:`~carafe_deploy.nn.CARAFEDownsample`: kernel_size, group,
encoder_kernel, compressed_channels, norm).

``deep_stem=True`` is mmseg's/mmdet's ``ResNetV1c``: three 3×3 convs (``stem.{0,3,6}``, BN ``stem.{1,4,7}``) in
place of the 7×7 ``conv1``/``bn1``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..nn import CARAFEDownsample
from .checkpoint import load_checkpoint, read_state_dict

__all__ = ["Bottleneck", "ResNet", "load_backbone_weights"]

_ARCH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        carafe_pp: bool = False,
        downsample_cfg: dict | None = None,
    ):
        super().__init__()
        # CARAFE++ takes over the stride: the convs run at stride 1 and a CARAFEDownsample reduces the resolution.
        use_carafe = carafe_pp and stride > 1
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1 if use_carafe else stride, padding=1, bias=False)
        down = dict(downsample_cfg or {})
        self.carafe = CARAFEDownsample(planes, scale_factor=stride, **down) if use_carafe else None
        self.shortcut_carafe = CARAFEDownsample(inplanes, scale_factor=stride, **down) if use_carafe else None
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut_carafe is None else self.shortcut_carafe(x)
        if self.downsample is not None:
            identity = self.downsample(identity)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.carafe is not None:
            out = self.carafe(out)
        out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-50/101/152 feature extractor returning the outputs of the stages in ``out_indices`` (0 = layer1).

    ``base_channels`` scales the width (64 for the standard network); a smaller value gives a light backbone for tests
    and samples with the same structure and names. ``stage_blocks`` (e.g. ``(1, 1, 1, 1)``) overrides the number of
    blocks per stage that ``depth`` implies, for the same purpose. ``carafe_pp`` builds the CARAFE++ variant
    (module docstring).
    """

    def __init__(
        self,
        depth: int = 50,
        out_indices=(0, 1, 2, 3),
        base_channels: int = 64,
        carafe_pp: bool = False,
        stage_blocks=None,
        deep_stem: bool = False,
        downsample_cfg: dict | None = None,
    ):
        super().__init__()
        if depth not in _ARCH:
            raise ValueError(f"depth must be one of {sorted(_ARCH)}, got {depth}")
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f"out_indices must be a non-empty subset of 0..3, got {out_indices}")
        if stage_blocks is None:
            stage_blocks = _ARCH[depth]
        if len(stage_blocks) != 4 or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in stage_blocks):
            raise ValueError(f"stage_blocks must be 4 ints >= 1, got {stage_blocks}")
        self.depth = depth
        self.carafe_pp = bool(carafe_pp)
        if downsample_cfg and not self.carafe_pp:
            raise ValueError("downsample_cfg sets the CARAFE++ modules: it needs carafe_pp=True")
        self.downsample_cfg = dict(downsample_cfg or {})
        self.deep_stem = bool(deep_stem)
        self.stage_blocks = tuple(stage_blocks)
        self.out_indices = tuple(out_indices)
        if self.deep_stem:
            half = base_channels // 2
            self.stem = nn.Sequential(
                nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, base_channels, 3, padding=1, bias=False), nn.BatchNorm2d(base_channels),
                nn.ReLU(inplace=True),
            )
        else:
            self.conv1 = nn.Conv2d(3, base_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(base_channels)
            self.relu = nn.ReLU(inplace=True)
        if self.carafe_pp:
            self.maxpool = CARAFEDownsample(base_channels, scale_factor=2, **self.downsample_cfg)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = base_channels
        self.stage_channels = []
        for i, blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            setattr(self, f"layer{i + 1}", self._make_layer(planes, blocks, stride=1 if i == 0 else 2))
            self.stage_channels.append(planes * Bottleneck.expansion)
        self.out_channels = [self.stage_channels[i] for i in self.out_indices]
        self.init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        if downsample is not None and self.carafe_pp and stride > 1:
            downsample[0].stride = (1, 1)  # the block's shortcut_carafe does the striding
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, carafe_pp=self.carafe_pp,
                             downsample_cfg=self.downsample_cfg)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        keep = _carafe_convs(self)  # CARAFE modules keep their own (mmcv) initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in keep:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem_forward(self, x: Tensor) -> Tensor:
        x = self.stem(x) if self.deep_stem else self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(x)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.stem_forward(x)
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def _carafe_convs(root: nn.Module) -> set[int]:
    """ids of the convs inside CARAFE modules under ``root``."""
    from ..nn import CARAFEDownsample, CARAFEUpsample

    return {
        id(c)
        for m in root.modules()
        if isinstance(m, (CARAFEUpsample, CARAFEDownsample))
        for c in m.modules()
        if isinstance(c, nn.Conv2d)
    }


def load_backbone_weights(backbone: ResNet, checkpoint, prefix: str = "") -> None:
    """Load torchvision or mmcv/mmdet ResNet weights; ``prefix`` (e.g. ``"backbone."``) selects a sub-tree.

    The ImageNet classifier (``fc.*``) is ignored; every other key must match in name and shape. For the CARAFE++
    variant, CARAFE++ parameters the checkpoint lacks (an ImageNet ResNet has none) keep their initialisation.
    """
    state = read_state_dict(checkpoint)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    carafe_prefixes = tuple(
        f"{name}." for name, m in backbone.named_modules() if isinstance(m, CARAFEDownsample)
    )
    if carafe_prefixes:
        for key, value in backbone.state_dict().items():
            if key.startswith(carafe_prefixes) and key not in state:
                state[key] = value
    load_checkpoint(backbone, state)
