"""Checkpoint reading (mmengine/mmdet wrappers) and the key-listing errors; the ResNet backbone's names."""

from __future__ import annotations

import pytest
import torch

from carafe_deploy.errors import DeployError
from carafe_deploy.models.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from carafe_deploy.models.resnet import ResNet, load_backbone_weights
from carafe_deploy.nn import CARAFEUpsample


def test_mmdet_wrapper_and_module_prefix(tmp_path):
    src = CARAFEUpsample(8, compressed_channels=4)
    path = tmp_path / "ckpt.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = CARAFEUpsample(8, compressed_channels=4)
    load_checkpoint(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_save_then_load_round_trip(tmp_path):
    src = ResNet(base_channels=8)
    save_checkpoint(src, tmp_path / "r.pth", meta={"note": "test"})
    dst = ResNet(base_channels=8)
    load_checkpoint(dst, tmp_path / "r.pth")
    x = torch.randn(1, 3, 32, 32)
    for a, b in zip(src.eval()(x), dst.eval()(x)):
        assert torch.equal(a, b)


def test_mismatch_lists_keys():
    model = CARAFEUpsample(8, compressed_channels=4)
    state = dict(model.state_dict())
    state.pop("content_encoder.bias")
    state["extra.weight"] = torch.zeros(1)
    state["channel_compressor.weight"] = torch.zeros(3, 8, 1, 1)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, state)
    msg = str(info.value)
    assert "missing: content_encoder.bias" in msg
    assert "unexpected: extra.weight" in msg
    assert "channel_compressor.weight (checkpoint (3, 8, 1, 1), model (4, 8, 1, 1))" in msg


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(CARAFEUpsample(8), tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="cannot read checkpoint"):
        load_checkpoint(CARAFEUpsample(8), bad)


def test_random_bytes_give_one_line_naming_the_file(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(DeployError) as info:
        load_checkpoint(CARAFEUpsample(8), noise)
    msg = str(info.value)
    assert msg == f"cannot read checkpoint {noise}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
    truncated = tmp_path / "truncated.pth"
    torch.save(CARAFEUpsample(8).state_dict(), tmp_path / "whole.pth")
    truncated.write_bytes((tmp_path / "whole.pth").read_bytes()[:200])
    with pytest.raises(DeployError, match=f"cannot read checkpoint {truncated}: RuntimeError") as info:
        load_checkpoint(CARAFEUpsample(8), truncated)
    assert "\n" not in str(info.value)


def test_resnet50_names_and_torchvision_layout():
    r = ResNet(depth=50)
    sd = r.state_dict()
    assert sum(p.numel() for p in r.parameters()) == 23_508_032  # torchvision resnet50 without fc (25,557,032 - 2,049,000)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert r.layer2[0].conv2.stride == (2, 2)  # pytorch style: stride on the 3×3 conv
    # torchvision's checkpoint carries the classifier; it is dropped, everything else must fit
    tv = {k: torch.randn_like(v, dtype=torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    other = ResNet(depth=50)
    load_backbone_weights(other, {f"backbone.{k}": v for k, v in tv.items()}, prefix="backbone.")
    assert torch.equal(other.state_dict()["conv1.weight"], tv["conv1.weight"])
    outs = other.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
