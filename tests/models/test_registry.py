"""The model registry: names known without torch (for --help) are the registered ones; every model names a task."""

from carafe_deploy import models


def test_static_names_are_the_registered_ones():
    assert list(models.MODEL_NAMES) == models.available()


def test_every_model_has_a_known_task_and_a_tiny_variant():
    for name in models.available():
        s = models.spec(name)
        assert s.task in ("generic", "detection", "segmentation"), name
        assert s.tiny, f"{name} has no narrow variant for quick checks"
