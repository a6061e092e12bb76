"""The demo's and the samples' CPU threads: the cores free of other work, at least one."""

import sys

import numpy as np
import pytest
import torch

from carafe_deploy.tasks import segmentation_sample, threads, training


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)


@pytest.mark.parametrize("free, want", [(0.0, 1), (0.6, 1), (1.0, 1), (1.7, 1), (1.8, 2), (2.0, 2), (5.0, 2)])
def test_threads_for_free_cores(two_cores, free, want):
    assert threads.threads_for(free) == want


def test_free_cores_subtract_this_process(two_cores, monkeypatch):
    # /proc/stat: the machine was busy 3.0 s of CPU over 2 s of wall time; 1.0 s of it was this process
    clock = iter([10.0, 12.0])
    readings = iter([(100.0, 5.0), (103.0, 6.0)])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads, "_busy_and_own", lambda: next(readings))
    monitor = threads.CoreMonitor()
    # others: (3.0 - 1.0) / 2 = 1 core busy -> 1 free
    assert monitor.free_cores() == pytest.approx(1.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_proc_stat_is_read():
    busy, own = threads._busy_and_own()
    assert busy > 0 and own > 0
    n, why = threads.auto_threads(wait=0.05)
    assert 1 <= n <= threads.cores() and "busy with other work" in why


def test_training_follows_the_free_cores(monkeypatch):
    """With automatic threads the count is measured again during training and torch's thread count follows; one
    line estimates the training time."""
    before = torch.get_num_threads()
    monkeypatch.setattr(training, "RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(training, "threads_for", lambda free: 1)
    torch.set_num_threads(2)
    try:
        model = segmentation_sample.small_segmenter(0)
        images = np.zeros((4, 32, 32, 3), np.uint8)
        labels = np.zeros((4, 32, 32), np.int64)
        cfg = segmentation_sample.TrainConfig(steps=5, batch=2, size=32, train_count=4, test_count=2)
        lines = []
        segmentation_sample.train(model, images, labels, cfg, progress=False, threads=None, log=lines.append)
        assert torch.get_num_threads() == 1
        # the estimate, once, after the first steps
        assert len(lines) == 1 and lines[0].startswith("training time estimate: ") and "for 5 steps" in lines[0]
    finally:
        torch.set_num_threads(before)
