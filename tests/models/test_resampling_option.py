"""models.build(..., resampling="nearest"): the papers' baseline twin of every detector and segmenter."""

import pytest
import torch

from carafe_deploy import models
from carafe_deploy.models.segmenters import count_carafe_modules
from carafe_deploy.nn import NearestResample


@pytest.mark.parametrize("name", ["faster_rcnn_r50_fpn_carafe", "upernet_r50_carafe_pp"])
def test_nearest_twin_has_the_same_outputs_shapes_and_no_carafe(name):
    torch.manual_seed(0)
    small = {"base_channels": 16}
    if "rcnn" in name:  # few proposals: the test is about the graph, not about NMS
        small.update(rpn_nms_pre=50, rpn_max_per_img=20, max_per_img=10)
    carafe_model = models.build(name, **small)
    twin = models.build(name, resampling="nearest", **small)
    counts = count_carafe_modules(carafe_model)
    assert counts["up"] > 0 and count_carafe_modules(twin) == {"up": 0, "down": 0}
    assert sum(isinstance(m, NearestResample) for m in twin.modules()) == counts["up"] + counts["down"]
    image = torch.rand(1, 3, 96, 128) * 255
    with torch.no_grad():
        a, b = carafe_model(image), twin(image)
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    assert [t.shape for t in a] == [t.shape for t in b]
    # everything but the CARAFE modules is the same network: its parameters load into the twin unchanged
    shared = {k: v for k, v in carafe_model.state_dict().items() if k in twin.state_dict()}
    assert set(shared) == set(twin.state_dict())
    twin.load_state_dict(shared)


def test_unknown_resampling_is_refused():
    with pytest.raises(ValueError, match="resampling must be one of .*'carafe'.*'nearest'.*got 'bilinear'"):
        models.build("upernet_r50_carafe", resampling="bilinear")
