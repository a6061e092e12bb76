"""The loop of the samples' training on the CPU (:mod:`.segmentation_sample`, :mod:`.detection_sample`): the steps with
a progress bar, one line that estimates the training time after the first steps, and torch's thread count following
the cores free of other work (:mod:`.threads`) when none was chosen."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .threads import CoreMonitor, auto_threads, threads_for

__all__ = ["TrainingSteps", "fit", "one_cycle", "start_threads", "threads_label", "duration"]

# the first step pays for lazy initialisation; the estimate of the training time is taken over the next ones
ESTIMATE_STEPS = 3
# with automatic threads, the free cores are measured again this often (seconds) and the thread count follows
RECHECK_SECONDS = 5.0


def one_cycle(optimizer, lr: float, steps: int):
    """AdamW's schedule in the samples: one cycle, warming up over the first tenth of the steps. torch divides by
    the warm-up's length less one step, which is zero at exactly 10 steps: there the warm-up takes two."""
    warmup = 0.1 if float(0.1 * steps) - 1 != 0 else 0.2  # torch's own expression for the warm-up's last step
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=warmup)


def threads_label(n: int) -> str:
    return f"{n} thread{'s' * (n != 1)}"


def duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class TrainingSteps:
    """``for step in TrainingSteps(steps, threads, ...)``: ``range(steps)`` with the progress bar, the estimate and the
    thread count. ``threads``: torch's CPU threads for the whole run; ``None`` follows the free cores, measured every
    few seconds. :meth:`show_loss` puts the recent mean loss on the bar."""

    def __init__(self, steps: int, threads: int | None, progress: bool = True, log=print):
        if threads:
            torch.set_num_threads(threads)
        self.steps = steps
        self.monitor = CoreMonitor() if threads is None else None
        self.bar = tqdm(range(steps), desc=self._desc(), unit="step", disable=not progress, dynamic_ncols=True)
        self.say = self.bar.write if progress else log

    @staticmethod
    def _desc() -> str:
        return f"training ({threads_label(torch.get_num_threads())})"

    def __iter__(self):
        checked = time.monotonic()
        t1 = time.perf_counter()
        try:
            for step in self.bar:
                if step == 1:
                    t1 = time.perf_counter()
                elif step == 1 + ESTIMATE_STEPS and self.steps > step:
                    per_step = (time.perf_counter() - t1) / ESTIMATE_STEPS
                    self.say(f"training time estimate: {duration(per_step * self.steps)} for {self.steps} steps "
                             f"({per_step:.2f} s per step over the first steps, "
                             f"{threads_label(torch.get_num_threads())})")
                if self.monitor is not None and time.monotonic() - checked > RECHECK_SECONDS:
                    checked, n = time.monotonic(), threads_for(self.monitor.free_cores())
                    if n != torch.get_num_threads():
                        torch.set_num_threads(n)
                        self.bar.set_description(self._desc())
                yield step
        finally:
            self.bar.close()

    def show_loss(self, losses: list[float]) -> None:
        self.bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")


def start_threads(threads: int | None) -> str:
    """Set torch's threads for a sample (``None``: the cores free now, followed later by :class:`TrainingSteps`);
    returns what to say about them."""
    if threads is None:
        n, why = auto_threads()
        torch.set_num_threads(n)
        return f"{threads_label(n)} to start with ({why})"
    return threads_label(threads)


def fit(model: torch.nn.Module, batch_loss: Callable[[], torch.Tensor], steps: int, lr: float,
        threads: int | None = None, progress: bool = True, log=print) -> list[float]:
    """The samples' training: AdamW (weight decay 1e-4) with the one-cycle schedule, ``steps`` times the loss of
    ``batch_loss()`` (which draws its own batch); the model in training mode meanwhile, in eval mode after. Returns the
    loss per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = one_cycle(opt, lr, steps)
    model.train()
    losses: list[float] = []
    bar = TrainingSteps(steps, threads, progress, log)
    for _ in bar:
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.show_loss(losses)
    model.eval()
    return losses
