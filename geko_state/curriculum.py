"""Mountain Curriculum: bucket weights and LR multiplier as a function of training progress."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import InputError
from .validate import check_number

__all__ = ["Phase", "PhaseSpec", "MountainCurriculum", "MOUNTAIN", "Segment"]


class Phase(enum.Enum):
    WARMUP = "warmup"
    ASCENT = "ascent"
    PEAK = "peak"
    DESCENT = "descent"
    CONSOLIDATE = "consolidate"


@dataclass(frozen=True)
class PhaseSpec:
    phase: Phase
    start: float  # progress where the phase begins (inclusive)
    hard: float
    focus: float
    light: float
    lr_multiplier: float

    @property
    def weights(self) -> tuple[float, float, float]:
        """(HARD, FOCUS, LIGHT) sampling weights."""
        return (self.hard, self.focus, self.light)


@dataclass(frozen=True)
class Segment:
    """A stretch ``[start, end)`` of training progress spent in one phase."""

    start: float
    end: float
    spec: PhaseSpec

    @property
    def length(self) -> float:
        return self.end - self.start


def _check_progress(name: str, p: float) -> float:
    return check_number(p, name, 0, 1, what="a training progress")


@dataclass(frozen=True)
class MountainCurriculum:
    """Easy -> hard -> easy schedule (DESIGN section 2). Progress is the fraction of training done."""

    phases: tuple[PhaseSpec, ...] = (
        PhaseSpec(Phase.WARMUP, 0.00, 1, 2, 3, 0.5),
        PhaseSpec(Phase.ASCENT, 0.15, 2, 3, 1, 0.8),
        PhaseSpec(Phase.PEAK, 0.35, 5, 2, 0, 1.0),
        PhaseSpec(Phase.DESCENT, 0.65, 2, 3, 1, 0.8),
        PhaseSpec(Phase.CONSOLIDATE, 0.85, 1, 2, 3, 0.3),
    )

    def spec_at(self, progress: float) -> PhaseSpec:
        p = _check_progress("progress", progress)
        current = self.phases[0]
        for spec in self.phases:
            if p >= spec.start:
                current = spec
        return current

    def phase(self, progress: float) -> Phase:
        return self.spec_at(progress).phase

    def weights(self, progress: float) -> tuple[float, float, float]:
        """(HARD, FOCUS, LIGHT) weights at ``progress``."""
        return self.spec_at(progress).weights

    def lr_multiplier(self, progress: float) -> float:
        return self.spec_at(progress).lr_multiplier

    def segments(self, start: float, end: float) -> list[Segment]:
        """Split the progress span ``[start, end)`` at phase boundaries.

        An epoch spanning progress 0.3-0.7 of a run yields ASCENT, PEAK and DESCENT segments,
        so a plan built from them changes phase inside the epoch.
        """
        s, e = _check_progress("progress start", start), _check_progress("progress end", end)
        if e < s:
            raise InputError(f"progress span must have start <= end, got ({start!r}, {end!r})")
        if e == s:
            return [Segment(s, e, self.spec_at(s))]
        bounds = [p.start for p in self.phases[1:]]
        cuts = [s] + [b for b in bounds if s < b < e] + [e]
        return [Segment(a, b, self.spec_at(a)) for a, b in zip(cuts[:-1], cuts[1:])]


MOUNTAIN = MountainCurriculum()
