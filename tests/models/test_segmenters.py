"""UperNet-CARAFE segmenters: structure, CARAFE++ backbone, checkpoints, ONNX parity at a small input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from carafe_deploy.models import build, spec
from carafe_deploy.models.checkpoint import CheckpointMismatchError, save_checkpoint
from carafe_deploy.models.resnet import ResNet, load_backbone_weights
from carafe_deploy.models.segmenters import _adaptive_avg_pool, count_carafe_modules
from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample

SMALL = dict(num_classes=5, channels=16, base_channels=8, stage_blocks=(1, 1, 1, 1), compressed_channels=8)


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return {name: build(name) for name in ("upernet_r50_carafe", "upernet_r50_carafe_pp")}


def test_registered_with_export_metadata():
    for name in ("upernet_r50_carafe", "upernet_r50_carafe_pp"):
        s = spec(name)
        assert s.input_names == ("image",) and s.output_names == ("logits",)
        assert s.dynamic_axes["image"] == {0: "batch", 2: "height", 3: "width"}


@pytest.mark.parametrize("name, up, down", [("upernet_r50_carafe", 10, 0), ("upernet_r50_carafe_pp", 10, 7)])
def test_module_counts(r50, name, up, down):
    # CARAFE paper §4.2: 4 PPM branches + 3 FPN top-down steps + 3 FUSE steps; CARAFE++ §4.1: stem + 2 × Res-3/4/5
    assert count_carafe_modules(r50[name]) == {"up": up, "down": down}
    assert r50[name].decode_head.conv_seg.out_channels == 150
    assert count_carafe_modules(build(name, **SMALL)) == {"up": up, "down": down}


def test_carafe_pp_placement():
    bb = ResNet(50, base_channels=8, carafe_pp=True, stage_blocks=(1, 2, 1, 1))
    assert isinstance(bb.maxpool, CARAFEDownsample)
    for n in (2, 3, 4):
        first = getattr(bb, f"layer{n}")[0]
        assert isinstance(first.carafe, CARAFEDownsample) and isinstance(first.shortcut_carafe, CARAFEDownsample)
        assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    assert bb.layer1[0].carafe is None and bb.layer2[1].carafe is None


def test_carafe_pp_backbone_sizes_match_plain():
    plain = ResNet(50, base_channels=8, stage_blocks=(1, 1, 1, 1)).eval()
    pp = ResNet(50, base_channels=8, stage_blocks=(1, 1, 1, 1), carafe_pp=True).eval()
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        assert [o.shape for o in plain(x)] == [o.shape for o in pp(x)]


def test_imagenet_resnet_weights_load_into_both_backbones():
    # a torchvision-layout checkpoint: the plain network's names plus the classifier
    torch.manual_seed(1)
    source = ResNet(50, base_channels=8)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(10, 256), torch.randn(10)
    for carafe_pp in (False, True):
        model = build("upernet_r50_carafe_pp" if carafe_pp else "upernet_r50_carafe", base_channels=8,
                      pretrained_backbone=state)
        own = model.backbone.state_dict()
        for k, v in source.state_dict().items():
            assert torch.equal(own[k], v), k


def test_pretrained_backbone_wrong_shape_is_reported():
    state = ResNet(50, base_channels=8).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(CheckpointMismatchError, match=r"layer1\.0\.conv1\.weight"):
        load_backbone_weights(ResNet(50, base_channels=8), state)


def test_carafe_in_head_runs_at_the_expected_sizes():
    model = build("upernet_r50_carafe", **SMALL)
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, CARAFEUpsample):
            m.register_forward_hook(lambda mod, i, o, name=name: seen.update({name: (i[0].shape, o.shape)}))
    x = torch.randn(1, 3, 96, 160)  # 1/32: 3×5, 1/16: 6×10, 1/8: 12×20, 1/4: 24×40
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 5, 96, 160)
    c = SMALL["channels"]
    for i in range(4):  # bilinear to half of 3×5 (2×3), CARAFE ×2 -> 4×6 (then cropped to 3×5)
        assert seen[f"decode_head.psp_upsamplers.{i}"] == ((1, c, 2, 3), (1, c, 4, 6))
    assert seen["decode_head.fpn_upsamplers.2"] == ((1, c, 3, 5), (1, c, 6, 10))
    assert seen["decode_head.fpn_upsamplers.0"] == ((1, c, 12, 20), (1, c, 24, 40))
    assert seen["decode_head.fuse_upsamplers.0"] == ((1, c, 3, 5), (1, c, 6, 10))
    assert seen["decode_head.fuse_upsamplers.2"] == ((1, 3 * c, 12, 20), (1, 3 * c, 24, 40))


@pytest.mark.parametrize("bins", [1, 2, 3, 6])
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (16, 16)])
def test_adaptive_pool_matches_torch(bins, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(_adaptive_avg_pool(x, bins), F.adaptive_avg_pool2d(x, bins))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(2)
    model = build("upernet_r50_carafe_pp", **SMALL).train()
    with torch.no_grad():  # move BN statistics away from their defaults so the round trip carries them
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    path = tmp_path / "seg.pth"
    save_checkpoint(model, path, {"model": "upernet_r50_carafe_pp"})
    loaded = build("upernet_r50_carafe_pp", checkpoint=str(path), **SMALL)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not loaded.training


def test_r50_state_dict_round_trip(r50):
    state = r50["upernet_r50_carafe"].state_dict()
    fresh = build("upernet_r50_carafe", checkpoint={"state_dict": state})
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_bad_checkpoints_list_the_keys():
    good = build("upernet_r50_carafe", **SMALL).state_dict()
    missing = {k: v for k, v in good.items() if not k.startswith("decode_head.fuse_upsamplers.1.")}
    with pytest.raises(CheckpointMismatchError, match=r"missing: decode_head\.fuse_upsamplers\.1\.channel_comp"):
        build("upernet_r50_carafe", checkpoint=missing, **SMALL)
    extra = dict(good, **{"decode_head.aux.weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected: decode_head\.aux\.weight"):
        build("upernet_r50_carafe", checkpoint=extra, **SMALL)
    wrong = dict(good, **{"decode_head.fpn_bottleneck.conv.weight": torch.zeros(7, 64, 3, 3)})
    with pytest.raises(CheckpointMismatchError,
                       match=r"decode_head\.fpn_bottleneck\.conv\.weight \(checkpoint \(7, 64, 3, 3\)"):
        build("upernet_r50_carafe", checkpoint=wrong, **SMALL)
    # the class count is the checkpoint's, unless one is asked for: then one line says what the checkpoint holds
    seven = dict(good, **{"decode_head.conv_seg.weight": torch.zeros(7, SMALL["channels"], 1, 1),
                          "decode_head.conv_seg.bias": torch.zeros(7)})
    unsized = {k: v for k, v in SMALL.items() if k != "num_classes"}
    assert build("upernet_r50_carafe", checkpoint=seven, **unsized).num_classes == 7
    with pytest.raises(CheckpointMismatchError) as info:
        build("upernet_r50_carafe", checkpoint=seven, **SMALL)
    assert str(info.value) == ("the checkpoint holds num_classes=7 (decode_head.conv_seg.weight (7, 16, 1, 1)), but "
                               "num_classes=5 was asked for: leave it out to use the checkpoint's value, or give "
                               "num_classes=7")
    # a plain-backbone checkpoint is not a CARAFE++ one
    with pytest.raises(CheckpointMismatchError, match=r"this is upernet_r50_carafe, not upernet_r50_carafe_pp \(it "
                                                      r"has decode_head\.\* and a plain ResNet"):
        build("upernet_r50_carafe_pp", checkpoint=good, **SMALL)


@pytest.mark.slow
# one export per variant (an R50 export takes ~20 s on 2 cores): portable for CARAFE, decomposed for CARAFE++
@pytest.mark.parametrize("name, mode", [("upernet_r50_carafe", "portable"), ("upernet_r50_carafe_pp", "decomposed")])
def test_r50_onnx_matches_pytorch(r50, tmp_path, name, mode):
    from carafe_deploy import onnx as carafe_onnx

    model, s = r50[name], spec(name)
    path = tmp_path / f"{name}.onnx"
    carafe_onnx.export(model, (torch.randn(1, 3, 64, 64),), path, mode=mode, input_names=list(s.input_names),
                       output_names=list(s.output_names), dynamic_axes=s.dynamic_axes)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(3)
    for shape in [(1, 3, 64, 64), (2, 3, 48, 80)]:  # the second checks the dynamic batch/H/W
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"image": x.numpy()})[0]
        assert out.shape == ref.shape == (shape[0], 150, shape[2], shape[3])
        assert np.abs(out - ref).max() / np.abs(ref).max() <= 1e-4
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.999
