"""Sample-selection policies on one engine: GEKO and the baselines it is measured against.

Every policy turns the state at an epoch's start into an :class:`~geko_state.planning.EpochPlan`,
as a pure function of (state columns, seed, epoch): the same trainer, sampler, checkpoints and
history serve all of them, so a comparison differs in the selection and nothing else.

* ``geko``: the store's weighted plan (:meth:`StateStore.build_plan`), optionally with a random
  share of FREEZE samples re-checked each epoch and full data in the last epochs. With
  ``keep_fraction`` GEKO skips mastered samples without bias: the weighted plan draws HARD and
  FOCUS only, and a seeded random share of FREEZE and LIGHT is trained with loss weight ``1 / share``.
* ``uniform``: every unpruned sample once per epoch, in random order (plain full-data training).
* ``random_subset``: a fixed number of distinct unpruned samples, drawn uniformly (equal compute).
* ``infobatch``: InfoBatch (Qin et al., ICLR 2024): observed samples whose last loss is below the
  mean are dropped with probability ``p``; the kept ones weigh ``1 / (1 - p)`` in the loss, so the
  expected gradient is unchanged; full data in the last epochs.
* ``rs2``: RS2 without replacement (Okanovic et al., ICLR 2024, "Repeated Random Sampling for
  Minimizing the Time-to-Accuracy of Learning"): ``random_subset``'s per-epoch size, but the
  epochs walk through seeded permutations of the unpruned ids, so every sample is trained once
  before any is trained twice.
"""
from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import known_fields, reject_unknown
from .errors import ConfigError, InputError
from .kernels.registry import get_kernels
from .noise import suspect_mask
from .planning import Budget, BudgetKind, EpochPlan, build_plan, parse_budget
from .schema import Bucket
from .store import StateStore
from .validate import check_int, check_number

__all__ = [
    "SELECTION_POLICIES",
    "PlanRequest",
    "SelectionConfig",
    "SelectionKind",
    "anneal_epochs",
    "full_permutation",
    "infobatch_plan",
    "is_annealed",
    "keep_mastered",
    "plan_selection",
    "random_subset_plan",
    "recheck_ids",
    "rs2_plan",
    "spread_into_segments",
    "subset_size",
]


class SelectionKind(str, enum.Enum):
    """Which policy decides an epoch's samples."""

    GEKO = "geko"
    UNIFORM = "uniform"
    INFOBATCH = "infobatch"
    RANDOM_SUBSET = "random_subset"
    RS2 = "rs2"


# InfoBatch's paper anneals the last 12.5% of epochs; the other policies do not anneal unless asked.
_DEFAULT_ANNEAL: dict[SelectionKind, float] = {SelectionKind.INFOBATCH: 0.125}

# Third word of every policy's SeedSequence: the streams of different policies (and of GEKO's
# re-check, anneal and keep draws) never coincide with each other or with build_plan's [seed, epoch].
_RNG_TAG: dict[str, int] = {"uniform": 1, "random_subset": 2, "infobatch": 3, "geko_recheck": 4, "geko_anneal": 5,
                        "rs2": 6, "geko_keep": 7}

# The buckets keep_fraction skips without bias: the samples the model already gets right.
_MASTERED = (Bucket.FREEZE, Bucket.LIGHT)


def _unit(name: str, value: Any, *, open_top: bool = False, open_bottom: bool = False) -> float:
    return check_number(value, f"SelectionConfig.{name}", 0, 1, low_open=open_bottom, high_open=open_top,
                        error=ConfigError)


@dataclass(frozen=True)
class SelectionConfig:
    """Which selection policy plans the epochs, and its options.

    ``prune_probability``: InfoBatch's chance that a below-mean-loss sample is dropped, in [0, 1).
    ``anneal_fraction``: share of the last epochs trained on full data, in [0, 1]; None means the
    policy's default (0.125 for ``infobatch``, 0 otherwise). ``recheck_fraction``: GEKO only, share
    of FREEZE samples (not pruned, under ``max_times_seen``) drawn again each epoch to catch
    forgetting, in [0, 1]. ``keep_fraction``: GEKO only, in (0, 1] or None (off): unbiased skipping
    of mastered samples (:func:`keep_mastered`): each epoch a seeded random share of the FREEZE and
    of the LIGHT samples is trained, each with loss weight ``1 / keep_fraction`` (up to rounding),
    and the weighted plan draws HARD and FOCUS only; annealed epochs still train everything with
    weight 1. It re-draws FREEZE samples too, re-weighted, so it supersedes ``recheck_fraction``:
    setting both is an error. ``suspect_threshold``: GEKO only, None (off) or a ``streak_aum`` noise
    score (:mod:`geko_state.noise`, in [0, 1]): samples observed at least twice whose score is above it
    are probably mislabeled and are left out of the epoch's plan (annealed epochs train them too).
    0.75 means wrong at every observation so far with a negative mean margin.
    """

    policy: SelectionKind = SelectionKind.GEKO
    prune_probability: float = 0.5
    anneal_fraction: float | None = None
    recheck_fraction: float = 0.0
    keep_fraction: float | None = None
    suspect_threshold: float | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen dataclass
        try:
            set_("policy", SelectionKind(self.policy))
        except ValueError:
            raise ConfigError(
                f"SelectionConfig.policy must be one of {[k.value for k in SelectionKind]}, got {self.policy!r}"
            ) from None
        set_("prune_probability", _unit("prune_probability", self.prune_probability, open_top=True))
        if self.anneal_fraction is not None:
            set_("anneal_fraction", _unit("anneal_fraction", self.anneal_fraction))
        set_("recheck_fraction", _unit("recheck_fraction", self.recheck_fraction))
        if self.recheck_fraction > 0 and self.policy is not SelectionKind.GEKO:
            # Silently ignoring it would make a baseline look configured when it is not.
            raise ConfigError(
                f"SelectionConfig.recheck_fraction re-checks GEKO's FREEZE samples and needs policy='geko', "
                f"got policy={self.policy.value!r}"
            )
        if self.keep_fraction is not None:
            set_("keep_fraction", _unit("keep_fraction", self.keep_fraction, open_bottom=True))
            if self.policy is not SelectionKind.GEKO:
                raise ConfigError(
                    f"SelectionConfig.keep_fraction skips GEKO's mastered samples and needs policy='geko', "
                    f"got policy={self.policy.value!r}"
                )
            if self.recheck_fraction > 0:
                # Both would re-draw FREEZE samples, one re-weighted and one not: the mix is neither.
                raise ConfigError(
                    "SelectionConfig.keep_fraction already re-draws a share of the FREEZE samples (re-weighted, "
                    f"unbiased) and supersedes recheck_fraction; set one of them, got keep_fraction="
                    f"{self.keep_fraction!r} and recheck_fraction={self.recheck_fraction!r}"
                )

        if self.suspect_threshold is not None:
            set_("suspect_threshold", _unit("suspect_threshold", self.suspect_threshold))
            if self.policy is not SelectionKind.GEKO:
                raise ConfigError(
                    f"SelectionConfig.suspect_threshold sets GEKO's label-noise suspects aside and needs "
                    f"policy='geko', got policy={self.policy.value!r}"
                )

    @property
    def anneal(self) -> float:
        """The anneal fraction in effect (the policy's default when ``anneal_fraction`` is None)."""
        if self.anneal_fraction is not None:
            return self.anneal_fraction
        return _DEFAULT_ANNEAL.get(self.policy, 0.0)

    def replace(self, **changes: Any) -> SelectionConfig:
        """A validated copy with some fields changed."""
        reject_unknown(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the policy as its name)."""
        d = dataclasses.asdict(self)
        d["policy"] = self.policy.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectionConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        return cls(**known_fields(cls, data))

    @classmethod
    def coerce(cls, value: SelectionConfig | SelectionKind | str | None) -> SelectionConfig:
        """``None`` -> the default (GEKO); a policy name -> ``SelectionConfig(policy=name)``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):  # SelectionKind is a str too
            return cls(policy=value)
        raise ConfigError(
            f"selection must be a SelectionConfig or a policy name {[k.value for k in SelectionKind]}, "
            f"got {type(value).__name__}"
        )


@dataclass(frozen=True)
class PlanRequest:
    """What a policy is asked to plan: the epoch, its place in the run, and the draw budget."""

    seed: int
    epoch: int
    total_epochs: int | None = None
    budget: BudgetKind | int | float = BudgetKind.TRAINABLE
    replacement: bool = True


# ---------------------------------------------------------------------- pure functions of columns
def _rng(seed: int, epoch: int, tag: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, _RNG_TAG[tag]])))


def anneal_epochs(fraction: float, total_epochs: int | None) -> int:
    """How many final epochs train on full data: ``ceil(fraction * total_epochs)`` (0 without
    ``total_epochs``)."""
    if total_epochs is None or fraction <= 0:
        return 0
    # The tolerance keeps e.g. 0.3 * 10 = 3.0000000000000004 at 3 epochs, not 4.
    return min(int(total_epochs), math.ceil(fraction * total_epochs - 1e-9))


def is_annealed(epoch: int, total_epochs: int | None, fraction: float) -> bool:
    """True when ``epoch`` is one of the last :func:`anneal_epochs` epochs of the run."""
    k = anneal_epochs(fraction, total_epochs)
    return k > 0 and epoch >= int(total_epochs) - k  # type: ignore[operator]


def full_permutation(pruned: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every unpruned id once, in random order: int64 ``[N - pruned]`` (``pruned``: ``[N]``)."""
    return rng.permutation(np.flatnonzero(pruned == 0).astype(np.int64))


def random_subset_plan(pruned: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``min(k, unpruned)`` distinct unpruned ids drawn uniformly, in random order: int64 ``[k]``."""
    live = np.flatnonzero(pruned == 0).astype(np.int64)
    k = min(int(k), int(live.shape[0]))
    return rng.choice(live, size=k, replace=False, shuffle=True)


def rs2_plan(pruned: np.ndarray, k: int, seed: int, epoch: int) -> np.ndarray:
    """RS2 without replacement: epoch ``epoch``'s ``min(k, unpruned)`` ids, int64 ``[k]``.

    The epochs read one endless sequence: seeded permutations of the unpruned ids (``pruned``:
    ``[N]``) laid end to end, permutation ``r`` drawn from ``[seed, r, tag]``; epoch ``e`` takes
    positions ``[e*k, (e+1)*k)``. Computed from (seed, epoch) alone, no state carried between
    epochs (a resumed run or another process gets the same ids). Every unpruned id is trained
    once before any is trained twice; an epoch that straddles two permutations may therefore
    hold an id twice (once from the end of one, once from the start of the next).
    """
    live = np.flatnonzero(pruned == 0).astype(np.int64)
    n = int(live.shape[0])
    k = min(int(k), n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    start = int(epoch) * k
    r, offset = divmod(start, n)
    ids = _rng(seed, r, "rs2").permutation(live)[offset:offset + k]
    if ids.shape[0] < k:  # this permutation runs out: finish it and go on with the next one
        ids = np.concatenate([ids, _rng(seed, r + 1, "rs2").permutation(live)[:k - ids.shape[0]]])
    return ids


def infobatch_plan(
    last_loss: np.ndarray, pruned: np.ndarray, rng: np.random.Generator, prune_probability: float,
) -> tuple[np.ndarray, np.ndarray | None]:
    """InfoBatch's soft pruning of one epoch (``last_loss``, ``pruned``: ``[N]``).

    Unpruned samples never observed (NaN loss) are always kept. Among the observed unpruned ones,
    those with a loss below their mean are dropped with probability ``prune_probability``; the kept
    ones get loss weight ``1 / (1 - prune_probability)``. Returns the kept ids in random order,
    int64 ``[K]``, and float32 ``[N]`` loss weights by sample id (None when nothing is re-weighted).
    """
    n = int(pruned.shape[0])
    live = pruned == 0
    seen = live & np.isfinite(last_loss)
    keep = live
    weights = None
    if prune_probability > 0 and seen.any():
        # Compared in the column's float32: the threshold is the float64 mean rounded once.
        mean = np.float32(np.mean(last_loss[seen], dtype=np.float64))
        low = np.flatnonzero(seen & (last_loss < mean))
        drop = rng.random(low.shape[0]) < prune_probability
        keep = live.copy()
        keep[low[drop]] = False
        weights = np.ones(n, dtype=np.float32)
        weights[low[~drop]] = np.float32(1.0 / (1.0 - prune_probability))
    return rng.permutation(np.flatnonzero(keep).astype(np.int64)), weights


def recheck_ids(
    bucket: np.ndarray, pruned: np.ndarray, times_seen: np.ndarray, max_seen: int, fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """GEKO's re-check draw: ``fraction`` of the eligible FREEZE samples (not pruned, seen fewer
    than ``max_seen`` times), rounded half up, distinct, in random order. Returns int64 ``[k]``
    and the eligible FREEZE count."""
    pool = np.flatnonzero((bucket == int(Bucket.FREEZE)) & (pruned == 0) & (times_seen < max_seen)).astype(np.int64)
    k = math.floor(fraction * pool.shape[0] + 0.5)
    return rng.choice(pool, size=min(k, int(pool.shape[0])), replace=False, shuffle=True), int(pool.shape[0])


def keep_mastered(
    bucket: np.ndarray, pruned: np.ndarray, times_seen: np.ndarray, max_seen: int, fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    """GEKO's unbiased skipping of mastered samples (columns ``[N]``).

    In each mastered bucket (FREEZE, LIGHT) the pool is its samples not pruned, observed at least
    once and seen fewer than ``max_seen`` times; ``k = max(1, fraction * pool rounded half up)`` of
    them are kept, distinct and drawn uniformly, each with loss weight ``pool / k``: ``1 / fraction``
    up to the rounding of ``k``. Every pool sample is thus kept with probability ``k / pool`` and
    its expected loss weight is exactly 1, so the expected gradient over the mastered samples is
    their full-data gradient (and the kept weights sum to the pool size in every epoch). Returns
    the kept ids in random order, int64 ``[K]``, their float32 ``[K]`` weights, and the pool size.
    """
    ids, weights, total = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.float32)], 0
    live = (pruned == 0) & (times_seen > 0) & (times_seen < max_seen)
    for b in _MASTERED:
        pool = np.flatnonzero(live & (bucket == int(b))).astype(np.int64)
        if pool.shape[0] == 0:
            continue
        # At least one: a pool with no kept sample would weigh 0, not 1, in expectation.
        k = max(1, math.floor(fraction * pool.shape[0] + 0.5))
        ids.append(rng.choice(pool, size=k, replace=False))
        weights.append(np.full(k, np.float32(pool.shape[0] / k)))
        total += int(pool.shape[0])
    kept, w = np.concatenate(ids), np.concatenate(weights)
    order = rng.permutation(kept.shape[0])  # FREEZE and LIGHT mixed, not one after the other
    return kept[order], w[order], total


def spread_into_segments(
    ids: np.ndarray, segment_ends: np.ndarray, extra: np.ndarray, fractions: Sequence[float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``extra`` (int64 ``[E]``, in random order) inserted into a plan (``ids`` int64 ``[K]``,
    ``segment_ends`` int64 ``[S]``): segment ``s`` gets its ``fractions[s]`` share of ``extra``
    (cumulative rounding, so the shares add up), each at a uniformly random position among the
    segment's draws, which keep their order. Returns the new ids ``[K + E]`` and segment ends ``[S]``.
    Spread, not appended: a block of re-weighted samples at every epoch's end would make its last
    batches unlike the rest."""
    cuts = np.floor(np.cumsum(np.asarray(fractions, dtype=np.float64)) * extra.shape[0] + 0.5).astype(np.int64)
    cuts[-1] = extra.shape[0]
    parts, start, taken = [], 0, 0
    for end, cut in zip(segment_ends.tolist(), cuts.tolist()):
        seg, add = ids[start:end], extra[taken:cut]
        merged = np.empty(seg.shape[0] + add.shape[0], dtype=np.int64)
        at = np.zeros(merged.shape[0], dtype=bool)
        at[rng.choice(merged.shape[0], size=add.shape[0], replace=False)] = True
        merged[at], merged[~at] = add, seg
        parts.append(merged)
        start, taken = end, cut
    return np.concatenate(parts), np.cumsum([p.shape[0] for p in parts]).astype(np.int64)


def _flat_plan(ids: np.ndarray, req: PlanRequest, eligible: int, policy: SelectionKind,
               weights: np.ndarray | None = None, **extra: Any) -> EpochPlan:
    """A baseline's plan: one segment, no curriculum phase."""
    ids = ids.astype(np.int64, copy=False)
    return EpochPlan(
        ids=ids, seed=req.seed, epoch=req.epoch, segment_ends=np.array([ids.shape[0]], dtype=np.int64),
        phases=(None,), eligible=int(eligible), requested=int(ids.shape[0]),
        extra={"policy": policy.value, **extra}, loss_weights=weights,
    )


def _unpruned(store: StateStore) -> int:
    return int(store.n_samples - np.count_nonzero(store.column("pruned")))


# ---------------------------------------------------------------------- the policies
def _geko(store: StateStore, sel: SelectionConfig, req: PlanRequest) -> EpochPlan:
    if is_annealed(req.epoch, req.total_epochs, sel.anneal):
        ids = full_permutation(store.column("pruned"), _rng(req.seed, req.epoch, "geko_anneal"))
        return _flat_plan(ids, req, ids.shape[0], sel.policy, annealed=True)
    plan = _geko_weighted(store, sel, req)
    if sel.suspect_threshold is None:
        return plan
    drop = suspect_mask(store.column("aum"), store.column("wrong_streak"), store.column("times_seen"),
                        sel.suspect_threshold)
    return without_ids(plan, drop)


def without_ids(plan: EpochPlan, drop: np.ndarray) -> EpochPlan:
    """``plan`` without the draws of the samples where ``drop`` (bool ``[N]``) is set; segments
    shrink by what each lost, order is kept. ``extra["suspects"]``: the draws removed."""
    keep = ~drop[plan.ids]
    if keep.all():
        return dataclasses.replace(plan, extra={**plan.extra, "suspects": 0})
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    ends = kept_before[plan.segment_ends].astype(np.int64)
    removed = int(keep.shape[0] - np.count_nonzero(keep))
    return dataclasses.replace(plan, ids=plan.ids[keep], segment_ends=ends, requested=plan.requested - removed,
                               extra={**plan.extra, "suspects": removed})


def _geko_weighted(store: StateStore, sel: SelectionConfig, req: PlanRequest) -> EpochPlan:
    """GEKO's plan before suspects are set aside: the store's weighted plan, with keep or recheck."""
    if sel.keep_fraction is not None:
        return _geko_keep(store, sel, req)
    plan = store.build_plan(req.seed, epoch=req.epoch, budget=req.budget, replacement=req.replacement,
                            total_epochs=req.total_epochs)
    if sel.recheck_fraction <= 0:
        return plan  # bit-identical to the engine's plan
    extra_ids, pool = recheck_ids(
        store.column("bucket"), store.column("pruned"), store.column("times_seen"),
        store.config.max_times_seen, sel.recheck_fraction, _rng(req.seed, req.epoch, "geko_recheck"),
    )
    k = int(extra_ids.shape[0])
    ends = plan.segment_ends.copy()
    if ends.shape[0]:
        ends[-1] += k
    return dataclasses.replace(
        plan, ids=np.concatenate([plan.ids, extra_ids]), segment_ends=ends, requested=plan.requested + k,
        extra={**plan.extra, "recheck": k, "recheck_pool": pool},
    )


def _geko_keep(store: StateStore, sel: SelectionConfig, req: PlanRequest) -> EpochPlan:
    """GEKO with ``keep_fraction``: the weighted plan over HARD and FOCUS (LIGHT taken out as
    FREEZE is: the keep draw covers it), with the kept mastered samples spread through it."""
    bucket, pruned, seen = store.column("bucket"), store.column("pruned"), store.column("times_seen")
    max_seen = store.config.max_times_seen
    segments = store.weight_segments(total_epochs=req.total_epochs, epoch=req.epoch)
    # Same [seed, epoch] stream as the store's plan: without LIGHT samples the weighted part is it.
    weighted_only = bucket.copy()
    weighted_only[bucket == int(Bucket.LIGHT)] = int(Bucket.FREEZE)
    plan = build_plan(get_kernels(store.kernels), weighted_only, pruned, seen, max_seen=max_seen, segments=segments,
                      budget=req.budget, seed=req.seed, epoch=req.epoch, replacement=req.replacement)
    rng = _rng(req.seed, req.epoch, "geko_keep")
    kept, kept_weights, pool = keep_mastered(bucket, pruned, seen, max_seen, sel.keep_fraction, rng)
    ids, ends = spread_into_segments(plan.ids, plan.segment_ends, kept, [s.fraction for s in segments], rng)
    weights = np.ones(store.n_samples, dtype=np.float32)
    weights[kept] = kept_weights
    k = int(kept.shape[0])
    return dataclasses.replace(
        plan, ids=ids, segment_ends=ends, eligible=plan.eligible + pool, requested=plan.requested + k,
        extra={**plan.extra, "keep": k, "keep_pool": pool}, loss_weights=weights,
    )


def _uniform(store: StateStore, sel: SelectionConfig, req: PlanRequest) -> EpochPlan:
    # The budget does not apply: uniform is plain full-data training (random_subset sizes it).
    ids = full_permutation(store.column("pruned"), _rng(req.seed, req.epoch, "uniform"))
    return _flat_plan(ids, req, ids.shape[0], sel.policy)


def subset_size(budget: Budget, n_samples: int, unpruned: int) -> int:
    """Draws per epoch of the fixed-size policies (``random_subset``, ``rs2``): a count as given,
    a fraction of ``n_samples`` rounded half up, or every unpruned sample for ``"trainable"`` /
    ``"full"`` (the caller caps it at the unpruned count)."""
    budget = parse_budget(budget)
    if isinstance(budget, BudgetKind):
        return int(unpruned)
    if isinstance(budget, int):
        return budget
    return math.floor(budget * n_samples + 0.5)


def _random_subset(store: StateStore, sel: SelectionConfig, req: PlanRequest) -> EpochPlan:
    pruned = store.column("pruned")
    live = _unpruned(store)
    k = subset_size(req.budget, store.n_samples, live)
    ids = random_subset_plan(pruned, k, _rng(req.seed, req.epoch, "random_subset"))
    return _flat_plan(ids, req, live, sel.policy)


def _rs2(store: StateStore, sel: SelectionConfig, req: PlanRequest) -> EpochPlan:
    live = _unpruned(store)
    k = subset_size(req.budget, store.n_samples, live)
    ids = rs2_plan(store.column("pruned"), k, req.seed, req.epoch)
    return _flat_plan(ids, req, live, sel.policy)


def _infobatch(store: StateStore, sel: SelectionConfig, req: PlanRequest) -> EpochPlan:
    pruned = store.column("pruned")
    rng = _rng(req.seed, req.epoch, "infobatch")
    if is_annealed(req.epoch, req.total_epochs, sel.anneal):
        ids = full_permutation(pruned, rng)
        return _flat_plan(ids, req, ids.shape[0], sel.policy, annealed=True)
    ids, weights = infobatch_plan(store.column("last_loss"), pruned, rng, sel.prune_probability)
    return _flat_plan(ids, req, _unpruned(store), sel.policy, weights)


Policy = Callable[[StateStore, SelectionConfig, PlanRequest], EpochPlan]

SELECTION_POLICIES: dict[SelectionKind, Policy] = {
    SelectionKind.GEKO: _geko,
    SelectionKind.UNIFORM: _uniform,
    SelectionKind.RANDOM_SUBSET: _random_subset,
    SelectionKind.INFOBATCH: _infobatch,
    SelectionKind.RS2: _rs2,
}


def plan_selection(
    store: StateStore,
    selection: SelectionConfig | SelectionKind | str | None = None,
    *,
    seed: int,
    epoch: int | None = None,
    total_epochs: int | None = None,
    budget: Budget = BudgetKind.TRAINABLE,
    replacement: bool = True,
) -> EpochPlan:
    """The global plan of an epoch (default: ``store.epoch``) under ``selection``.

    Deterministic in (state, seed, epoch). ``budget`` and ``replacement`` shape GEKO's draws;
    ``random_subset`` and ``rs2`` take their size from ``budget`` (a count, a fraction of N, or all
    unpruned samples for ``"trainable"`` / ``"full"``); ``uniform`` and ``infobatch`` ignore both.
    ``total_epochs`` places the epoch in the run (curriculum, annealing); without it nothing anneals.
    """
    if not isinstance(store, StateStore):
        raise InputError(f"store must be a StateStore, got {type(store).__name__}")
    try:
        sel = SelectionConfig.coerce(selection)
    except ConfigError as e:
        raise InputError(str(e)) from None
    e = store.epoch if epoch is None else epoch
    for name, v, low in (("seed", seed, 0), ("epoch", e, 0), ("total_epochs", total_epochs, 1)):
        if name == "total_epochs" and v is None:
            continue
        check_int(v, name, low)
    req = PlanRequest(
        seed=int(seed), epoch=int(e), total_epochs=None if total_epochs is None else int(total_epochs),
        budget=parse_budget(budget), replacement=bool(replacement),
    )
    return SELECTION_POLICIES[sel.policy](store, sel, req)
