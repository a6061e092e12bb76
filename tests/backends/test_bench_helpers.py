"""carafe_deploy.bench's timing helpers, on a scripted clock (no real timing)."""

from __future__ import annotations

import pytest

from carafe_deploy.bench import paired_medians


def test_paired_medians_runs_in_turn_and_takes_each_median():
    calls = []
    ticks = iter([0, 1, 1, 11, 11, 14, 14, 24, 24, 29, 29, 39])  # a: 1, 3, 5 s; b: 10, 10, 10 s
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    medians = paired_medians(fns, 3, clock=lambda: next(ticks))
    assert medians == {"a": 3, "b": 10}
    assert calls == ["a", "b"] + ["a", "b"] * 3  # one warm-up each, then alternating


def test_paired_medians_refuses_no_repeat():
    with pytest.raises(ValueError, match="repeat >= 1"):
        paired_medians({"a": lambda: None}, 0)
