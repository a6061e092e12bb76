"""CARAFEUpsample (mmcv CARAFEPack) and CARAFEDownsample (CARAFE++)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
from support.reference import carafe_reference

# mmcv's CARAFEPack(channels=16, scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3, compressed_channels=64)
MMCV_PACK_SHAPES = {
    "channel_compressor.weight": (64, 16, 1, 1),
    "channel_compressor.bias": (64,),
    "content_encoder.weight": (100, 64, 3, 3),
    "content_encoder.bias": (100,),
}


def _mmcv_named_state_dict(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*shape, generator=gen) * 0.1 for k, shape in MMCV_PACK_SHAPES.items()}


def test_upsample_state_dict_matches_mmcv_names_and_shapes():
    m = CARAFEUpsample(16, scale_factor=2)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == MMCV_PACK_SHAPES


def test_upsample_loads_mmcv_state_dict_and_matches_mmcv_forward():
    sd = _mmcv_named_state_dict()
    m = CARAFEUpsample(16, scale_factor=2).double()
    m.load_state_dict({k: v.double() for k, v in sd.items()}, strict=True)
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    # mmcv CARAFEPack.forward, step by step, with the float64 loop op
    mask = F.conv2d(F.conv2d(x, sd["channel_compressor.weight"].double(), sd["channel_compressor.bias"].double()),
                    sd["content_encoder.weight"].double(), sd["content_encoder.bias"].double(), padding=1)
    mask = F.pixel_shuffle(mask, 2)
    n, mc, h, w = mask.shape
    mask = F.softmax(mask.view(n, mc // 25, -1, h, w), dim=2).view(n, mc, h, w)
    ref = carafe_reference(x.numpy(), mask.numpy(), 5, 1, 2, "up")
    with torch.no_grad():
        out = m(x)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_state_dict_round_trip():
    a = CARAFEUpsample(8, scale_factor=3, up_kernel=3, up_group=2, compressed_channels=8)
    b = CARAFEUpsample(8, scale_factor=3, up_kernel=3, up_group=2, compressed_channels=8)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 8, 4, 5)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert a(x).shape == (1, 8, 12, 15)


def test_upsample_init_like_mmcv():
    torch.manual_seed(0)
    m = CARAFEUpsample(64, compressed_channels=64)
    # content encoder ~ N(0, 0.001), biases zero, compressor xavier-uniform bound sqrt(6 / (fan_in + fan_out))
    assert m.content_encoder.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert m.content_encoder.bias.abs().max().item() == 0
    assert m.channel_compressor.bias.abs().max().item() == 0
    bound = (6 / (64 + 64)) ** 0.5
    assert m.channel_compressor.weight.abs().max().item() <= bound
    assert m.channel_compressor.weight.abs().max().item() > 0.9 * bound


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (1, 1)])
def test_downsample_shapes_and_semantics(hw):
    torch.manual_seed(0)
    m = CARAFEDownsample(8, scale_factor=2, kernel_size=5, group=2, compressed_channels=4).double().eval()
    x = torch.randn(2, 8, *hw, dtype=torch.float64)
    with torch.no_grad():
        out = m(x)
        kern = m.content_encoder(m.channel_compressor(x))
    ho, wo = -(-hw[0] // 2), -(-hw[1] // 2)
    assert out.shape == (2, 8, ho, wo)
    assert kern.shape == (2, 2 * 25, ho, wo)
    kern = F.softmax(kern.view(2, 2, 25, ho, wo), dim=2).view(2, 50, ho, wo)
    ref = carafe_reference(x.numpy(), kern.numpy(), 5, 2, 2, "down")
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_downsample_state_dict_names():
    m = CARAFEDownsample(32)
    assert set(m.state_dict()) == {
        "channel_compressor.conv.weight",
        "channel_compressor.bn.weight",
        "channel_compressor.bn.bias",
        "channel_compressor.bn.running_mean",
        "channel_compressor.bn.running_var",
        "channel_compressor.bn.num_batches_tracked",
        "content_encoder.weight",
        "content_encoder.bias",
    }
    assert m.content_encoder.weight.shape == (25, 16, 3, 3)
    assert m.content_encoder.stride == (2, 2)
    plain = CARAFEDownsample(32, norm=False)
    assert set(plain.state_dict()) == {"channel_compressor.conv.weight", "channel_compressor.conv.bias",
                                       "content_encoder.weight", "content_encoder.bias"}


def test_modules_train_end_to_end():
    torch.manual_seed(0)
    net = torch.nn.Sequential(CARAFEDownsample(4, compressed_channels=4), CARAFEUpsample(4, compressed_channels=4))
    x = torch.randn(2, 4, 8, 8)
    net(x).square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net[1].content_encoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "cls,kwargs,words",
    [
        (CARAFEUpsample, {"channels": 16, "up_kernel": 4}, ["up_kernel", "odd"]),
        (CARAFEUpsample, {"channels": 16, "up_group": 3}, ["channels (16)", "up_group (3)"]),
        (CARAFEUpsample, {"channels": 16, "scale_factor": 0}, ["scale_factor", ">= 1"]),
        (CARAFEDownsample, {"channels": 16, "kernel_size": 2}, ["kernel_size", "odd"]),
        (CARAFEDownsample, {"channels": 16, "group": 5}, ["channels (16)", "group (5)"]),
        (CARAFEDownsample, {"channels": 0}, ["channels", ">= 1"]),
    ],
)
def test_bad_module_arguments(cls, kwargs, words):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_nearest_resample_is_the_one_tap_carafe():
    # nearest x s is carafe with a 1x1 kernel of ones ("up"); the top-left pixel of each cell is its "down" form
    from carafe_deploy.nn import NearestResample
    from carafe_deploy.ops import carafe

    x = torch.randn(2, 3, 5, 7)
    for mode, s in (("up", 2), ("up", 3), ("down", 2), ("down", 3)):
        out = NearestResample(s, mode)(x)
        ho, wo = out.shape[2:]
        torch.testing.assert_close(out, carafe(x, torch.ones(2, 1, ho, wo), 1, 1, s, mode), rtol=0, atol=0)
    with pytest.raises(ValueError, match="mode must be 'up' or 'down'"):
        NearestResample(2, "sideways")


def test_with_nearest_resampling_replaces_every_carafe_module():
    from carafe_deploy.nn import NearestResample, with_nearest_resampling

    net = torch.nn.Sequential(CARAFEDownsample(4, compressed_channels=4),
                              torch.nn.Sequential(CARAFEUpsample(4, scale_factor=3, compressed_channels=4)))
    x = torch.randn(1, 4, 9, 9)
    shape = net(x).shape
    with_nearest_resampling(net)
    assert [type(m) for m in net.modules() if isinstance(m, (CARAFEUpsample, CARAFEDownsample))] == []
    assert (net[0].mode, net[0].scale_factor, net[1][0].mode, net[1][0].scale_factor) == ("down", 2, "up", 3)
    assert isinstance(net[0], NearestResample) and net(x).shape == shape and list(net.parameters()) == []
