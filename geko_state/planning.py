"""Epoch plans: which sample ids an epoch trains on, in which order.

A plan is a pure function of (state at epoch start, seed, epoch, budget, weight segments): every
rank of a distributed job computes the same plan and keeps its own shard.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np

from .curriculum import Phase
from .errors import InputError
from .kernels.registry import KernelBackend
from .kernels.sampling import class_masses
from .validate import check_int, check_rank, is_int

__all__ = [
    "BudgetKind",
    "Budget",
    "parse_budget",
    "parse_budget_text",
    "WeightSegment",
    "EpochPlan",
    "class_weight_vector",
    "drawable_class_weights",
    "build_plan",
    "shard",
]


class BudgetKind(str, enum.Enum):
    """Named budgets: how many draws an epoch has."""

    TRAINABLE = "trainable"  # samples with weight > 0: compute shrinks as samples freeze
    FULL = "full"  # N draws every epoch (the seeds' behaviour)


Budget = Union[BudgetKind, str, int, float]


def parse_budget(budget: Budget) -> BudgetKind | int | float:
    """``"trainable"``, ``"full"``, a draw count (int >= 0) or a fraction of N (float in (0, 1])."""
    if isinstance(budget, BudgetKind):
        return budget
    if isinstance(budget, str):
        try:
            return BudgetKind(budget)
        except ValueError:
            pass
    elif is_int(budget):
        if budget >= 0:
            return int(budget)
    elif isinstance(budget, (float, np.floating)) and math.isfinite(budget) and 0 < budget <= 1:
        return float(budget)
    raise InputError(
        "budget must be 'trainable', 'full', a draw count (int >= 0) or a fraction of the "
        f"samples (float in (0, 1]), got {budget!r}"
    )


def parse_budget_text(text: str) -> BudgetKind | int | float:
    """A budget typed on a command line: ``"trainable"``, ``"full"``, ``"5000"`` or ``"0.5"``."""
    value: Budget = text
    for conv in (int, float):
        try:
            value = conv(text)
            break
        except ValueError:
            continue
    return parse_budget(value)


@dataclass(frozen=True)
class WeightSegment:
    """A share of the epoch drawn with one set of (HARD, FOCUS, LIGHT) weights."""

    fraction: float
    weights: tuple[float, float, float]
    phase: Phase | None = None


def class_weight_vector(weights: Sequence[float]) -> np.ndarray:
    """(HARD, FOCUS, LIGHT) -> float64 weights indexed by Bucket value (FREEZE=0 weighs 0)."""
    hard, focus, light = (float(w) for w in weights)
    return np.array([0.0, light, focus, hard], dtype=np.float64)


@dataclass(frozen=True)
class EpochPlan:
    """The global draw order of one epoch.

    ``ids``: int64 ``[K]``; ``segment_ends``: int64 ``[S]`` end position of each weight segment;
    ``phases``: the curriculum phase of each segment (None without curriculum);
    ``loss_weights``: float32 ``[N]`` loss multiplier per sample id (None: every sample weighs 1),
    set by selection policies that re-weight what they keep (InfoBatch, GEKO's ``keep_fraction``).
    """

    ids: np.ndarray
    seed: int
    epoch: int
    segment_ends: np.ndarray
    phases: tuple[Phase | None, ...]
    eligible: int = 0
    requested: int = 0
    extra: dict = field(default_factory=dict)
    loss_weights: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def phase_at(self, position: int) -> Phase | None:
        """Curriculum phase of the draw at ``position`` of the global plan."""
        i = int(np.searchsorted(self.segment_ends, position, side="right"))
        return self.phases[min(i, len(self.phases) - 1)] if self.phases else None

    def shard(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        return shard(self.ids, rank, world_size)


def shard(ids: np.ndarray, rank: int, world_size: int, offset: int = 0) -> np.ndarray:
    """This rank's share ``[ceil((K - offset) / world_size)]`` of ``ids[offset:]`` (``ids``: ``[K]``):
    the rest of the plan padded to a multiple of ``world_size`` with ids from the start of the
    whole plan (cyclically), then every ``world_size``-th id from ``rank``. All ranks get the same
    length, so collective training steps stay in lockstep, and together they cover the rest of the
    plan. ``offset`` (a resume's global plan position) pads from the start of the whole plan, not
    of the rest, so a same-world resume yields exactly what the uninterrupted run would have; a
    different world size simply re-shards what is left. An offset past the end leaves nothing.
    """
    check_rank(rank, world_size)
    check_int(offset, "offset", 0)
    rest = ids[offset:] if offset else ids
    k = rest.shape[0]
    if world_size == 1 or k == 0:
        return rest
    pad = (-k) % world_size
    if pad:
        rest = np.concatenate([rest, np.resize(ids, pad)])
    return np.ascontiguousarray(rest[rank::world_size])


def _segment_draws(budget, segments, sizes, n_samples) -> list[int]:
    """Draw count per segment; cumulative rounding so shares add up to the whole budget."""
    draws, acc, prev = [], 0.0, 0
    for seg in segments:
        cw = class_weight_vector(seg.weights)
        if budget is BudgetKind.TRAINABLE:
            b = float(sum(int(sizes[c]) for c in range(1, 4) if cw[c] > 0))
        elif budget is BudgetKind.FULL:
            b = float(n_samples)
        elif isinstance(budget, int):
            b = float(budget)
        else:
            b = budget * n_samples
        acc += seg.fraction * b
        end = int(math.floor(acc + 0.5))
        draws.append(end - prev)
        prev = end
    return draws


def drawable_class_weights(weights: Sequence[float], sizes: np.ndarray) -> np.ndarray:
    """The class weights a segment is drawn with (``sizes``: int64 ``[4]`` eligible count per
    class): its own (:func:`class_weight_vector`), or 1 for every eligible class when its own weigh
    every eligible sample 0 (e.g. PEAK's LIGHT weight 0 once every sample is LIGHT). Without that
    a fixed budget's draws (``"full"``, a count, a fraction) would have nowhere to go and the
    epoch would train nothing; ``"trainable"`` gives such a segment no draws anyway."""
    cw = class_weight_vector(weights)
    if np.any((cw[1:] > 0) & (sizes[1:] > 0)):
        return cw
    fallback = (sizes > 0).astype(np.float64)
    fallback[0] = 0.0  # FREEZE: never drawn
    return fallback


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))


def build_plan(
    kernels: KernelBackend,
    bucket: np.ndarray,
    pruned: np.ndarray,
    times_seen: np.ndarray,
    *,
    max_seen: int,
    segments: Sequence[WeightSegment],
    budget: Budget = BudgetKind.TRAINABLE,
    seed: int = 0,
    epoch: int = 0,
    replacement: bool = True,
) -> EpochPlan:
    """Plan one epoch from the state columns (each ``[N]``).

    FREEZE, pruned and ``times_seen >= max_seen`` samples are never drawn. With replacement, each
    segment's draws are independent weighted picks; without, no id repeats within the epoch and
    the plan holds at most the eligible count. A segment whose weights give every eligible sample
    0 draws them uniformly (:func:`drawable_class_weights`).
    """
    for name, v in (("seed", seed), ("epoch", epoch)):
        check_int(v, name, 0)
    budget = parse_budget(budget)
    n = int(bucket.shape[0])
    members, offsets = kernels.members(bucket, pruned, times_seen, np.int32(max_seen))
    sizes = np.diff(offsets)
    draws = _segment_draws(budget, segments, sizes, n)
    class_weights = [drawable_class_weights(seg.weights, sizes) for seg in segments]
    rng = _rng(int(seed), int(epoch))
    parts: list[np.ndarray] = []
    if replacement:
        for cw, k in zip(class_weights, draws):
            cum = class_masses(offsets, cw)
            if k <= 0 or cum[-1] <= 0:
                parts.append(np.zeros(0, dtype=np.int64))
                continue
            u = rng.random(k)
            parts.append(kernels.draw_with_replacement(members, offsets, cw, cum, u))
    else:
        # Uniform order inside each class, consumed from the front by successive segments.
        perm = members.copy()
        for c in range(1, 4):
            lo, hi = offsets[c], offsets[c + 1]
            if hi > lo:
                perm[lo:hi] = rng.permutation(perm[lo:hi])
        used = np.zeros(4, dtype=np.int64)
        for cw, k in zip(class_weights, draws):
            runs, keys, run_class = [0], [], []
            for c in range(1, 4):
                remaining = int(sizes[c] - used[c])
                if cw[c] <= 0 or remaining <= 0 or k <= 0:
                    continue
                t = min(remaining, k)
                e = rng.standard_exponential(t)
                keys.append(np.cumsum(e / (remaining - np.arange(t))) / cw[c])
                runs.append(runs[-1] + t)
                run_class.append(c)
            if not keys:
                parts.append(np.zeros(0, dtype=np.int64))
                continue
            key_arr = np.concatenate(keys)
            run_off = np.asarray(runs, dtype=np.int64)
            take = min(k, int(run_off[-1]))
            pos = kernels.merge_keys(run_off, key_arr, take)
            run = np.searchsorted(run_off, pos, side="right") - 1
            cls = np.asarray(run_class, dtype=np.int64)[run]
            within = pos - run_off[run]
            parts.append(perm[offsets[cls] + used[cls] + within])
            used += np.bincount(cls, minlength=4)
    ids = parts[0] if len(parts) == 1 else np.concatenate(parts)  # no 800 MB copy at 100M
    ends = np.cumsum([p.shape[0] for p in parts]).astype(np.int64)
    eligible = int(sizes[1:].sum())
    return EpochPlan(
        ids=ids.astype(np.int64, copy=False),
        seed=int(seed),
        epoch=int(epoch),
        segment_ends=ends,
        phases=tuple(s.phase for s in segments),
        eligible=eligible,
        requested=int(sum(draws)),
    )
