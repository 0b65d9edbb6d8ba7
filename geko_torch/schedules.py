"""Learning-rate decay schedules as pure functions of training progress (no torch).

A schedule maps training progress ``p`` in [0, 1] to a multiplier of the peak learning rate. It
is a function of *progress*, not of optimizer steps: a policy whose epochs shrink (GEKO, InfoBatch)
or are subsets (``random_subset``, ``rs2``) takes fewer steps than the full-data step count a
step-based schedule is sized with, and would end its run short of the schedule's end (a linear
decay stopped at half the peak LR, say). Progress is the sampler's
(:attr:`geko_torch.sampler.GEKOSampler.progress`): it reaches exactly 1.0 at the last draw of the
last planned epoch, so every policy ends at the schedule's end.

The trainers multiply the schedule by the linear warmup and by the Mountain Curriculum's LR
multiplier (GEKO only): ``lr = peak * warmup(step) * schedule(progress) * curriculum(progress)``.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

from geko_state.errors import ConfigError

__all__ = ["DEFAULT_LR_SCHEDULE", "LR_SCHEDULES", "LRScheduleKind", "lr_schedule", "lr_schedule_factor"]


class LRScheduleKind(str, enum.Enum):
    """The decay shape of the learning rate over training progress."""

    LINEAR = "linear"
    COSINE = "cosine"
    CONSTANT = "constant"


def _linear(p: float) -> float:
    return 1.0 - p


def _cosine(p: float) -> float:
    # Half a cosine period, as transformers' default cosine schedule (num_cycles=0.5); cos(pi) is
    # -1 only to rounding, so the end is pinned to exactly 0.
    return 0.0 if p >= 1.0 else 0.5 * (1.0 + math.cos(math.pi * p))


def _constant(p: float) -> float:
    return 1.0


LR_SCHEDULES: dict[LRScheduleKind, Callable[[float], float]] = {
    LRScheduleKind.LINEAR: _linear,
    LRScheduleKind.COSINE: _cosine,
    LRScheduleKind.CONSTANT: _constant,
}

# Linear decay to 0 is what fine-tuning recipes use; a constant LR made the final quality of plain
# uniform training vary a lot between seeds in the benchmarks (the last epochs still take full
# steps), which blurs every comparison against it.
DEFAULT_LR_SCHEDULE = LRScheduleKind.LINEAR


def lr_schedule(kind: LRScheduleKind | str, *, error: type[Exception] = ConfigError,
                name: str = "lr_scheduler_type") -> LRScheduleKind:
    """``kind`` as an :class:`LRScheduleKind` (``error`` naming ``name`` for anything else)."""
    try:
        return LRScheduleKind(kind)
    except ValueError:
        raise error(f"{name} must be one of {[k.value for k in LRScheduleKind]}, got {kind!r}") from None


def lr_schedule_factor(kind: LRScheduleKind | str, progress: Any) -> float:
    """The multiplier of the peak LR at ``progress`` (clamped to [0, 1]) under schedule ``kind``:
    linear ``1 - p``, cosine ``(1 + cos(pi p)) / 2``, constant 1. Exactly 0 at ``p = 1`` for the
    decaying ones."""
    p = min(1.0, max(0.0, float(progress)))
    return LR_SCHEDULES[lr_schedule(kind)](p)
