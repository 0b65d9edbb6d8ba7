"""Wall seconds a training run spent per phase, so a run can say how much of it was GEKO's own work.

A run's wall time alone cannot tell GEKO's cost from the model's: the sample passes GEKO saves are
paid for with per-sample signals, recording, plans, epoch ends and plots, and evaluation is a fixed
cost either way. :class:`PhaseTimes` sums ``time.perf_counter()`` spans per phase (a few hundred
nanoseconds each, cheap enough for every step). On a GPU these are the host's seconds: a phase that
only queues kernels looks cheap, and the wait lands in whatever synchronises next.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PhaseTimes"]


class PhaseTimes:
    """Seconds per phase name, summed over every ``with times(phase):`` block since :meth:`reset`.

    ``GEKOTrainer`` uses :attr:`GEKO` (signals, recording, plans, epoch ends with the history, the
    final report), :attr:`PLOTS`, :attr:`EVAL` and :attr:`CHECKPOINTS`; the rest of a run is the
    training steps themselves (data, forward, backward, optimizer).
    """

    GEKO = "geko"
    PLOTS = "plots"
    EVAL = "eval"
    CHECKPOINTS = "checkpoints"

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def __getitem__(self, phase: str) -> float:
        return self.seconds.get(phase, 0.0)
