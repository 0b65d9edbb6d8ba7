"""A ``torch.utils.data.Sampler`` that yields the store's epoch plan, with a resumable position."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from geko_state import EpochPlan, StateStore
from geko_state.curriculum import MOUNTAIN, Phase
from geko_state.errors import ConfigError, InputError
from geko_state.planning import Budget, BudgetKind, parse_budget, shard
from geko_state.selection import SelectionConfig, SelectionKind, plan_selection
from geko_state.validate import check_int, check_rank, is_int

from .distributed import dist_rank_world
from .threads import torch_threads_kept

__all__ = ["DEFAULT_REPLACEMENT", "GEKOSampler", "shard_from"]

# Training draws without replacement by default: every drawn sample trains at most once per epoch
# (measured: docs/benchmarks.md "Choosing the defaults"). The engine's plan_epoch keeps the seeds' algorithm
# (with replacement, DESIGN section 2); every training entry point (this sampler, both trainers,
# geko train) uses this one default.
DEFAULT_REPLACEMENT = False


def shard_from(ids: np.ndarray, offset: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's share of ``ids[offset:]``: :func:`geko_state.planning.shard` with an offset
    (kept under this name for callers of the sampler module)."""
    return np.ascontiguousarray(shard(ids, rank, world_size, offset))


def _state_int(state: dict[str, Any], key: str, default: int | None = None) -> int:
    """An integer entry of a sampler state (TypeError for anything else, KeyError when missing)."""
    v = state[key] if default is None else state.get(key, default)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if not is_int(v):
        raise TypeError(f"{key} must be an integer, got {v!r}")
    return int(v)


def _state_ids(state: dict[str, Any], key: str) -> np.ndarray:
    """An int64 ``[K]`` entry of a sampler state (ValueError for another shape or a non-integer dtype)."""
    arr = np.asarray(state[key])
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{key} must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class GEKOSampler(Sampler[int]):
    """Yields this rank's sample ids of the current epoch's plan.

    The plan of epoch ``store.epoch`` is built from the state when first needed (``len()`` or
    ``iter()``) and kept until the store is repartitioned; it is deterministic in (state, seed,
    epoch, budget), so every rank builds the same one and takes its own shard. ``total_epochs``
    places each epoch on the Mountain Curriculum. The position inside the epoch advances by
    :meth:`advance` (the tracker calls it for every batch it sees), not by iteration, because a
    DataLoader's workers read ahead of what was trained. ``selection`` chooses the policy that plans
    the epochs (default: GEKO; see :mod:`geko_state.selection` for the baselines).
    """

    def __init__(
        self,
        store: StateStore,
        *,
        seed: int = 0,
        total_epochs: int | None = None,
        budget: Budget = BudgetKind.TRAINABLE,
        replacement: bool = DEFAULT_REPLACEMENT,
        rank: int | None = None,
        world_size: int | None = None,
        selection: SelectionConfig | str | None = None,
    ) -> None:
        if not isinstance(store, StateStore):
            raise InputError(f"store must be a StateStore, got {type(store).__name__}")
        # Settings of the sampler: ConfigError (geko_state.errors); the store it works on: InputError.
        for name, v, low in (("seed", seed, 0), ("total_epochs", total_epochs, 1)):
            if v is not None:
                check_int(v, name, low, error=ConfigError)
        try:
            parse_budget(budget)
        except InputError as e:
            raise ConfigError(str(e)) from None
        selection = SelectionConfig.coerce(selection)
        if (rank is None) != (world_size is None):
            raise ConfigError("give both rank and world_size, or neither (then torch.distributed decides)")
        if rank is None:
            rank, world_size = dist_rank_world()
        check_rank(rank, world_size, error=ConfigError)
        self.store = store
        self.seed = int(seed)
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.budget = budget
        self.replacement = bool(replacement)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.selection = selection
        self._plan: EpochPlan | None = None
        self._offset = 0  # global plan position this rank's shard starts from (non-zero after a resume)
        self._ids: np.ndarray | None = None
        self._consumed = 0  # ids of this rank's shard trained so far this epoch

    # ------------------------------------------------------------------ the plan
    @property
    def epoch(self) -> int:
        return self.store.epoch

    def _current(self) -> tuple[EpochPlan, np.ndarray]:
        if self._plan is None or self._plan.epoch != self.store.epoch:
            if self.total_epochs is not None and self.store.epoch >= self.total_epochs:
                # Training is over: nothing left to draw (a finished run's checkpoint holds this).
                empty = np.zeros(0, dtype=np.int64)
                self._plan = EpochPlan(empty, self.seed, self.store.epoch, empty, (None,))
            else:
                with torch_threads_kept():
                    self._plan = plan_selection(
                        self.store, self.selection, seed=self.seed, budget=self.budget,
                        replacement=self.replacement, total_epochs=self.total_epochs,
                    )
            self._offset, self._consumed = 0, 0
            self._ids = None
        if self._ids is None:
            self._ids = shard_from(self._plan.ids, self._offset, self.rank, self.world_size)
        return self._plan, self._ids

    @property
    def plan(self) -> EpochPlan:
        """The whole (all ranks) plan of the current epoch."""
        return self._current()[0]

    @property
    def policy(self) -> SelectionKind:
        return self.selection.policy

    def loss_weights_for(self, ids: torch.Tensor | np.ndarray, device: torch.device | str | None = None
                         ) -> torch.Tensor | None:
        """The current plan's loss multipliers of ``ids`` (int ``[B]``), float32 ``[B]`` on ``device``;
        None when the plan weighs every sample 1 (GEKO without keep_fraction, uniform, random_subset, rs2,
        annealed epochs)."""
        w = self._current()[0].loss_weights
        if w is None:
            return None
        idx = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        out = torch.from_numpy(np.ascontiguousarray(w[idx.astype(np.int64, copy=False)]))
        return out if device is None else out.to(device, non_blocking=True)

    def set_epoch(self, epoch: int) -> None:
        """For loops written for ``DistributedSampler``: the plan always follows the store's epoch,
        so this only checks that the loop and the state agree.
        """
        if not is_int(epoch):
            raise InputError(f"set_epoch: epoch must be an integer (the store's epoch, {self.store.epoch}), got {epoch!r}")
        if int(epoch) != self.store.epoch:
            raise InputError(
                f"set_epoch({epoch}) but the state is at epoch {self.store.epoch}; call "
                "tracker.end_epoch() (store.repartition()) exactly once at the end of every epoch"
            )

    def __len__(self) -> int:
        """This rank's ids for the current epoch, from the resume point on."""
        return int(self._current()[1].shape[0])

    def __iter__(self) -> Iterator[int]:
        _, ids = self._current()
        start = self._consumed
        return iter(ids[start:].tolist())

    # ------------------------------------------------------------------ position
    @property
    def consumed(self) -> int:
        """Ids of this rank's shard trained so far in the current epoch."""
        return self._consumed

    def advance(self, n: int) -> None:
        """Mark ``n`` more ids of this rank's shard as trained."""
        check_int(n, "advance: n", 0, note=" (ids trained)")
        self._current()
        self._consumed = min(self._consumed + int(n), int(self._ids.shape[0]))

    def padding_mask(self, n: int) -> np.ndarray:
        """bool ``[n]``: which of this rank's next ``n`` ids only pad its shard (their global
        position is past the end of the plan; see :func:`shard_from`)."""
        plan, _ = self._current()
        j = np.arange(self._consumed, self._consumed + int(n), dtype=np.int64)
        return self._offset + j * self.world_size + self.rank >= len(plan)

    @property
    def global_position(self) -> int:
        """Draws of the global plan trained by all ranks together (ranks move in lockstep)."""
        plan, _ = self._current()
        return min(self._offset + self._consumed * self.world_size, len(plan))

    @property
    def progress(self) -> float:
        """Fraction of the whole training done, for the curriculum and the LR schedule (needs
        ``total_epochs``): ``(epoch + draws done / plan length) / total_epochs``.

        This is the share of the planned sample passes done, with the passes still to come
        re-estimated at every epoch start as the current plan's length times the epochs left, and
        the share already done carried over (so it never jumps at an epoch boundary when a plan
        shrinks or grows): within an epoch every draw moves it by what is left over the passes
        estimated to remain, which works out to the formula above. It is exactly 1.0 after the
        last draw of the last epoch, however long the epochs were; stateless, so a resumed run
        gets the same values."""
        if not self.total_epochs:
            return 0.0
        plan, _ = self._current()
        within = self.global_position / len(plan) if len(plan) else 1.0
        return min(1.0, (self.store.epoch + within) / self.total_epochs)

    def phase(self) -> Phase | None:
        """Curriculum phase of the next draw (None without curriculum, and for baseline policies)."""
        plan, _ = self._current()
        if (not self.store.config.use_curriculum or self.total_epochs is None
                or self.selection.policy is not SelectionKind.GEKO):
            return None
        if len(plan) == 0:
            return MOUNTAIN.phase(self.progress)
        return plan.phase_at(min(self.global_position, len(plan) - 1))

    def phase_label(self) -> str | None:
        """The phases the current epoch spans, e.g. ``"ASCENT>PEAK"`` (history's phase column)."""
        plan, _ = self._current()
        names: list[str] = []
        for p in plan.phases:
            if p is not None and p.name not in names:
                names.append(p.name)
        return ">".join(names) or None

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Epoch, global position and the plan itself (the state changes during the epoch, so the
        plan could not be rebuilt from it). Arrays are numpy; nothing needs pickle.
        """
        plan, _ = self._current()
        state: dict[str, Any] = {
            "policy": self.selection.policy.value,
            "selection": self.selection.to_dict(),
            "epoch": plan.epoch,
            "seed": self.seed,
            "global_position": self.global_position,
            "world_size": self.world_size,
            "plan_ids": plan.ids,
            "segment_ends": plan.segment_ends,
            "phases": [None if p is None else p.value for p in plan.phases],
            "eligible": plan.eligible,
            "requested": plan.requested,
        }
        if plan.loss_weights is not None:  # absent means every sample weighs 1
            state["loss_weights"] = plan.loss_weights
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a plan where it stopped, with this sampler's rank and (possibly other) world size."""
        expected = "expected GEKOSampler.state_dict() output"
        if not isinstance(state, dict):
            raise InputError(f"sampler state must be a dict, got {type(state).__name__}; {expected}")
        try:
            epoch = _state_int(state, "epoch")
            pos = _state_int(state, "global_position")
            seed = _state_int(state, "seed", self.seed)
            eligible = _state_int(state, "eligible", 0)
            requested = _state_int(state, "requested", 0)
            ids = _state_ids(state, "plan_ids")
            ends = _state_ids(state, "segment_ends")
            phases = tuple(None if p is None else Phase(p) for p in state["phases"])
            weights = state.get("loss_weights")
            if weights is not None:
                weights = np.asarray(weights)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"sampler state is malformed ({e!r}); {expected}") from None
        # States written before selection policies existed are GEKO plans.
        policy = state.get("policy", SelectionKind.GEKO.value)
        if policy != self.selection.policy.value:
            raise InputError(
                f"sampler state was saved by a {policy!r} selection run, this sampler uses "
                f"{self.selection.policy.value!r}; resume with the same selection policy"
            )
        if weights is not None and (weights.dtype != np.float32 or weights.shape != (self.store.n_samples,)):
            raise InputError(
                f"sampler state holds loss weights of dtype {weights.dtype} and shape {weights.shape}; "
                f"expected float32 [{self.store.n_samples}] (one per sample)"
            )
        if epoch != self.store.epoch:
            raise InputError(
                f"sampler state is for epoch {epoch} but the state store is at epoch {self.store.epoch}; "
                "restore the store from the same checkpoint"
            )
        if not 0 <= pos <= ids.shape[0]:
            raise InputError(
                f"sampler state: global_position {pos} is outside its plan; expected an integer in [0, {ids.shape[0]}]"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.store.n_samples):
            raise InputError(
                f"sampler state: plan_ids hold ids outside the store; expected sample ids in [0, {self.store.n_samples})"
            )
        if seed != self.seed:
            raise InputError(f"sampler state was saved with seed={seed}, this sampler has seed={self.seed}")
        self._plan = EpochPlan(
            ids=ids, seed=self.seed, epoch=epoch, segment_ends=ends, phases=phases,
            eligible=eligible, requested=requested, loss_weights=weights,
        )
        self._offset, self._consumed, self._ids = pos, 0, None
