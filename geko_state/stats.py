"""PartitionStats: what one repartition found."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .kernels.repartition import (
    C_CHANGED, C_CORRECT_SEEN, C_ENTERED_FREEZE, C_FOCUS, C_FREEZE, C_HARD, C_LIGHT,
    C_NEWLY_PRUNED, C_PRUNED, C_SEEN,
)
from .schema import Bucket

__all__ = ["PartitionStats"]


@dataclass(frozen=True)
class PartitionStats:
    """Bucket counts after an epoch's repartition.

    Bucket counts cover unpruned samples only, so ``freeze + light + focus + hard == active``.
    ``accuracy`` is the share of correct samples among unpruned samples seen at least once (NaN if
    none). ``mastered`` is true when FREEZE plus pruned samples reach ``mastered_fraction`` of N.
    """

    epoch: int
    n_samples: int
    freeze: int
    light: int
    focus: int
    hard: int
    pruned: int
    newly_pruned: int
    seen: int
    correct_seen: int
    entered_freeze: int
    changed: int
    observations: int  # observe() results applied since the previous repartition
    skipped_nonfinite: int  # skipped since the previous repartition (nan_policy="skip")
    repartitioned: bool  # False on epochs that repartition_every skips (buckets carried over)
    mastered: bool

    @classmethod
    def from_counts(
        cls, counts: np.ndarray, *, epoch: int, n_samples: int, observations: int,
        skipped: int, repartitioned: bool, mastered_fraction: float,
    ) -> "PartitionStats":
        done = int(counts[C_FREEZE]) + int(counts[C_PRUNED])
        return cls(
            epoch=epoch,
            n_samples=n_samples,
            freeze=int(counts[C_FREEZE]),
            light=int(counts[C_LIGHT]),
            focus=int(counts[C_FOCUS]),
            hard=int(counts[C_HARD]),
            pruned=int(counts[C_PRUNED]),
            newly_pruned=int(counts[C_NEWLY_PRUNED]),
            seen=int(counts[C_SEEN]),
            correct_seen=int(counts[C_CORRECT_SEEN]),
            entered_freeze=int(counts[C_ENTERED_FREEZE]),
            changed=int(counts[C_CHANGED]),
            observations=observations,
            skipped_nonfinite=skipped,
            repartitioned=repartitioned,
            mastered=n_samples > 0 and done >= mastered_fraction * n_samples,
        )

    @property
    def active(self) -> int:
        """Unpruned samples."""
        return self.n_samples - self.pruned

    @property
    def counts(self) -> dict[Bucket, int]:
        return {Bucket.FREEZE: self.freeze, Bucket.LIGHT: self.light, Bucket.FOCUS: self.focus, Bucket.HARD: self.hard}

    @property
    def ratios(self) -> dict[Bucket, float]:
        """Share of each bucket among unpruned samples."""
        a = self.active
        return {b: (c / a if a else 0.0) for b, c in self.counts.items()}

    @property
    def accuracy(self) -> float:
        return self.correct_seen / self.seen if self.seen else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["active"] = self.active
        d["accuracy"] = self.accuracy
        return d

    def format_line(self) -> str:
        """One-line partition summary in the seeds' style."""
        a = max(self.active, 1)
        parts = [f"{b.name}: {c:>{len(str(self.n_samples))}} ({100 * c / a:5.1f}%)" for b, c in self.counts.items()]
        line = f"[GEKO] Epoch {self.epoch} Partition: " + " | ".join(parts)
        if self.pruned:
            line += f" | pruned: {self.pruned}"
        if self.skipped_nonfinite:
            line += f" | skipped non-finite: {self.skipped_nonfinite}"
        return line
