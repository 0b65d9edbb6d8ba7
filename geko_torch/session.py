"""``GEKOSession``: the GEKO side of training that every trainer shares.

``GEKOTrainer`` (its own loop) and ``GEKOHFTrainer`` (``transformers.Trainer`` glue) both hand the
GEKO lifecycle to one session, so the two cannot drift apart:

* build the state store, the sampler and the tracker; start a fresh run or resume a checkpoint
  (with the compatibility checks and the one rule for restoring the run's history);
* the training loss of a micro-batch: record the signals, apply the plan's loss weights, mask
  samples without a label token, padding draws and (``nan_policy="skip"``) non-finite results, and
  normalise over the valid samples of the whole accumulated batch on every rank;
* the curriculum's learning-rate multiplier;
* end an epoch (repartition, history, learning progress; stop when the state is mastered or,
  with ``stop_on_plateau``, when few learnable samples are still improving);
* write and read the GEKO part of a checkpoint (:mod:`geko_torch.checkpoint`'s ``geko_*`` files).

Settings come in one validated dataclass, :class:`GEKOSettings`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geko_state import GEKO_DEFAULT, GEKOConfig, HistoryConfig, PartitionStats, Run, StateStore
from geko_state.config import reject_unknown
from geko_state.curriculum import MOUNTAIN
from geko_state.errors import ConfigError, InputError
from geko_state.planning import Budget, BudgetKind, parse_budget
from geko_state.progress import LearningProgress, PlateauStop, store_progress
from geko_state.selection import SelectionConfig, SelectionKind
from geko_state.validate import check_int, check_number, check_rank

from .checkpoint import (
    load_geko_part,
    read_geko_meta,
    remove_leftovers,
    restore_run_history,
    restore_state,
    write_geko_part,
)
from .data import SAMPLE_ID
from .distributed import replica_path
from .sampler import DEFAULT_REPLACEMENT, GEKOSampler
from .signals import DEFAULT_TOKEN_ACCURACY, IGNORE_INDEX, TaskKind, lm_labels
from .tracker import GEKOTracker

__all__ = ["DEFAULT_REPLACEMENT", "EpochEnd", "GEKOSession", "GEKOSettings"]

log = logging.getLogger("geko_torch")

_TASKS = ("auto", "causal_lm", "classification")


@dataclass(frozen=True)
class GEKOSettings:
    """Everything GEKO needs to know about a training run, validated on construction
    (``ConfigError`` naming the field). ``GEKOTrainingArgs`` derives one
    (:meth:`~geko_torch.GEKOTrainingArgs.geko_settings`); ``GEKOHFTrainer`` takes one as
    ``geko_args=``."""

    config: GEKOConfig = GEKO_DEFAULT  # the algorithm's thresholds and rates
    run_dir: str | os.PathLike | None = None  # None: the trainer's default (GEKOHFTrainer: <output_dir>/geko)
    budget: Budget = BudgetKind.TRAINABLE  # draws per epoch: "trainable", "full", a count or a fraction of N
    # without replacement every drawn sample trains at most once per epoch (the measured default,
    # docs/benchmarks.md "Choosing the defaults"); True draws as the seeds did
    replacement: bool = DEFAULT_REPLACEMENT
    selection: SelectionConfig | str = "geko"  # "geko" (a SelectionConfig for its options) or a baseline name
    history: HistoryConfig = field(default_factory=HistoryConfig)
    task: str = "auto"  # "auto", "causal_lm" or "classification"
    correct_loss_below: float = 0.5  # causal LM with token_accuracy=None: correct when its loss is below this
    # causal LM: correct when this share of its response tokens is right (None: mean loss < correct_loss_below)
    token_accuracy: float | None = DEFAULT_TOKEN_ACCURACY
    compute_confidence: Callable[[Any, Any], torch.Tensor] | None = None  # fn(outputs, batch) -> Tensor[B]
    compute_correctness: Callable[[Any, Any], torch.Tensor] | None = None  # fn(outputs, batch) -> Tensor[B]
    stop_when_mastered: bool = True  # stop after an epoch whose state is mastered (GEKO selection only)
    # stop after an epoch where few learnable samples still improve (any policy; None: never)
    stop_on_plateau: PlateauStop | None = None
    sync_every: int = 1  # torch.distributed: exchange the ranks' observations every N micro-batches

    def __post_init__(self) -> None:
        if not isinstance(self.config, GEKOConfig):
            raise ConfigError(f"config must be a geko_state.GEKOConfig, got {type(self.config).__name__}")
        if self.run_dir is not None and (not isinstance(self.run_dir, (str, os.PathLike)) or not str(self.run_dir)):
            raise ConfigError(f"run_dir must be None or a non-empty path, got {self.run_dir!r}")
        try:
            parse_budget(self.budget)
        except InputError as e:
            raise ConfigError(str(e)) from None
        for name in ("replacement", "stop_when_mastered"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        try:
            object.__setattr__(self, "selection", SelectionConfig.coerce(self.selection))
        except ConfigError as e:
            raise ConfigError(f"selection: {e}") from None
        if not isinstance(self.history, HistoryConfig):
            raise ConfigError(f"history must be a geko_state.HistoryConfig, got {type(self.history).__name__}")
        task = self.task.value if isinstance(self.task, TaskKind) else self.task
        if task not in _TASKS:
            raise ConfigError(f"task must be 'auto', 'causal_lm' or 'classification', got {self.task!r}")
        object.__setattr__(self, "task", task)
        check_number(self.correct_loss_below, "correct_loss_below", 0, low_open=True, error=ConfigError,
                     what="a finite number")
        if self.token_accuracy is not None:
            check_number(self.token_accuracy, "token_accuracy", 0, 1, low_open=True, error=ConfigError,
                         what="None or a share")
        for name in ("compute_confidence", "compute_correctness"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be a callable fn(outputs, batch) -> Tensor[B], got {type(fn).__name__}")
        if self.stop_on_plateau is not None and not isinstance(self.stop_on_plateau, PlateauStop):
            raise ConfigError("stop_on_plateau must be None or a geko_state.progress.PlateauStop, got "
                              f"{type(self.stop_on_plateau).__name__}")
        object.__setattr__(self, "sync_every", check_int(self.sync_every, "sync_every", 1, error=ConfigError))

    def replace(self, **changes: Any) -> GEKOSettings:
        """A validated copy with some fields changed."""
        reject_unknown(type(self), changes)
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class EpochEnd:
    """What ending an epoch gave: the partition, the epoch's figures, and whether to stop."""

    stats: PartitionStats
    mean_loss: float  # mean observed per-sample loss of the epoch (NaN when nothing was observed)
    samples_trained: int  # sample passes trained in the epoch (every rank)
    progress: LearningProgress  # learned / learning / suspect counts after the epoch
    stop_reason: str | None  # "mastered" or "plateau" when training stops here, else None

    @property
    def stop(self) -> bool:
        return self.stop_reason is not None


class GEKOSession:
    """The GEKO lifecycle of one training run (see the module docstring).

    ``run_dir``: the run directory (rank 0's state file, history). ``seed``: the plans' seed.
    ``rank`` / ``world_size``: this process among the data-parallel ranks; with more than one, the
    session creates its private process group here, so construct it on every rank at the same point.
    """

    def __init__(self, settings: GEKOSettings, *, run_dir: str | os.PathLike, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if not isinstance(settings, GEKOSettings):
            raise ConfigError(f"settings must be a GEKOSettings, got {type(settings).__name__}")
        check_int(seed, "seed", 0, error=ConfigError)
        check_rank(rank, world_size, error=ConfigError)
        self.settings = settings
        self.run = Run(Path(run_dir))
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.store: StateStore | None = None
        self.sampler: GEKOSampler | None = None
        self.tracker: GEKOTracker | None = None
        self.stop_pending = False  # an epoch ended at resume said stop: the trainer stops before training
        self._group: Any = None
        if self.world_size > 1:
            # Creating a process group is collective: here, where every rank builds its trainer.
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise ConfigError(
                    f"world_size={world_size} but torch.distributed is not initialised; launch with torchrun / "
                    "accelerate launch"
                )
            self._group = dist.new_group()

    # ------------------------------------------------------------------ properties
    @property
    def is_main(self) -> bool:
        """Rank 0: its replica is the run directory's file and it alone writes the history."""
        return self.rank == 0

    @property
    def config(self) -> GEKOConfig:
        """The live state's config (a resumed run keeps its checkpoint's), else the settings'."""
        return self.store.config if self.store is not None else self.settings.config

    @property
    def policy(self) -> SelectionKind:
        return self.settings.selection.policy

    @property
    def curriculum_on(self) -> bool:
        """The Mountain Curriculum is part of GEKO: baselines train with the plain schedule."""
        return self.config.use_curriculum and self.policy is SelectionKind.GEKO

    def schedule_progress(self) -> float:
        """Training progress in [0, 1] for the LR decay schedule (:mod:`geko_torch.schedules`): the
        sampler's :attr:`~geko_torch.sampler.GEKOSampler.progress`, exactly 1.0 after the last draw
        of the last planned epoch whatever the epochs' lengths (0 before the sampler exists)."""
        if self.sampler is None or self.sampler.total_epochs is None:
            return 0.0
        return self.sampler.progress

    def lr_multiplier(self) -> float:
        """The curriculum's learning-rate multiplier at the current training progress (1 without
        curriculum, for baselines, and before the sampler exists)."""
        if not self.curriculum_on or self.sampler is None or self.sampler.total_epochs is None:
            return 1.0
        return MOUNTAIN.spec_at(self.sampler.progress).lr_multiplier

    def loader_seed(self, epoch: int) -> int:
        """The seed of the train loader's private generator for ``epoch``: reseeded at every epoch
        start, so worker seeds (and anything else drawn from it) do not depend on how many loader
        iterators came before, and a resumed run draws what the uninterrupted one did."""
        return int(np.random.SeedSequence([self.seed, int(epoch)]).generate_state(1, np.uint64)[0] >> 1)

    # ------------------------------------------------------------------ start and resume
    def _create_store(self, n_samples: int) -> StateStore:
        if self.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
        # Rank 0's state is the run directory's file, the other ranks' are in-memory replicas.
        return StateStore.create(n_samples, replica_path(self.run.state_path), self.settings.config, overwrite=True)

    def _build(self, store: StateStore, total_epochs: int) -> None:
        s = self.settings
        self.store = store
        # Every rank builds the same plan (same state, seed, epoch) and draws its own shard of it.
        self.sampler = GEKOSampler(
            store, seed=self.seed, total_epochs=total_epochs, budget=s.budget, replacement=s.replacement,
            rank=self.rank, world_size=self.world_size, selection=s.selection,
        )
        self.tracker = GEKOTracker(
            store, sampler=self.sampler, run_dir=self.run.root, history=s.history, task=s.task,
            correct_loss_below=float(s.correct_loss_below), token_accuracy=s.token_accuracy,
            compute_confidence=s.compute_confidence, compute_correctness=s.compute_correctness,
            record_history=self.is_main, sync_every=s.sync_every, process_group=self._group,
        )

    def open(self, n_samples: int, total_epochs: int) -> None:
        """A state for ``n_samples`` samples (created once; kept while it fits) with its sampler and
        tracker, without touching the run's history (that is :meth:`start_fresh`'s)."""
        if self.store is not None:
            if self.store.n_samples == n_samples:
                if self.sampler.total_epochs != total_epochs:
                    self._build(self.store, total_epochs)
                return
            if self.store.epoch > 0 or self.store.observations_total > 0:
                raise InputError(
                    f"train_dataset now has {n_samples} items but the GEKO state has {self.store.n_samples} "
                    "and was trained on; keep the train dataset fixed during a run"
                )
            self.store.close()
        self._build(self._create_store(n_samples), total_epochs)

    def start_fresh(self, n_samples: int, total_epochs: int) -> None:
        """A new training run: a pristine state (recreated if this one was trained on) and no
        history left by an earlier run in the run directory (the summary first: readers see
        epochs through it)."""
        self.open(n_samples, total_epochs)
        store = self.store
        if store.epoch > 0 or store.observations_total > 0 or store.skipped_total > 0:
            store.close()
            store = self._create_store(n_samples)
        if self.is_main:
            self.run.epochs_path.unlink(missing_ok=True)
            for p in self.run.history_files().values():
                p.unlink(missing_ok=True)
        self._build(store, total_epochs)  # a new HistoryWriter: the old one cached the removed rows
        self.stop_pending = False

    def resume(self, checkpoint: str | os.PathLike, n_samples: int, total_epochs: int) -> dict[str, Any]:
        """Replace the live state by the checkpoint's GEKO part and continue its plan where it
        stopped; returns the part's metadata. Refuses (``InputError``) a checkpoint of another
        dataset size or selection policy; warns on another config or epoch count."""
        ckpt = Path(checkpoint)
        meta = read_geko_meta(ckpt)
        if int(meta["n_samples"]) != n_samples:
            raise InputError(
                f"{ckpt}: the checkpoint's GEKO state has {meta['n_samples']} samples but train_dataset has "
                f"{n_samples}; resume with the same train dataset"
            )
        saved_policy = (meta.get("selection") or {}).get("policy", SelectionKind.GEKO.value)
        if saved_policy != self.policy.value:
            raise InputError(
                f"{ckpt}: the checkpoint was trained with selection={saved_policy!r}, this run uses "
                f"{self.policy.value!r}; resume with the same selection policy"
            )
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
            # The temporary files of writes a stopped or killed run did not finish (live state,
            # summary, snapshots): only this process writes them, and it is not writing now.
            remove_leftovers(self.run.root, temp_files=True)
        # Every rank restores the same state: rank 0 into the run directory's file, the others
        # into in-memory replicas.
        store = restore_state(ckpt, replica_path(self.run.state_path))
        if store.config != self.settings.config:
            warnings.warn(f"{ckpt}: resuming with the checkpoint's GEKOConfig, not the config given", stacklevel=3)
        if self.is_main:
            restore_run_history(ckpt, self.run.root)
        self._build(store, total_epochs)
        if meta.get("total_epochs") is not None and meta["total_epochs"] != total_epochs:
            warnings.warn(
                f"{ckpt}: saved with {meta['total_epochs']} GEKO epochs, resumed with {total_epochs}; "
                "curriculum progress differs from the original run", stacklevel=3,
            )
        load_geko_part(ckpt, sampler=self.sampler, tracker=self.tracker, meta=meta)
        self.stop_pending = False
        return meta

    # ------------------------------------------------------------------ the loss
    def _valid_count(self, batch: Mapping[str, Any], exclude: torch.Tensor | None) -> torch.Tensor | None:
        """Samples of ``batch`` with at least one label token, ``exclude`` (bool ``[B]``) left out;
        a 0-dim tensor, or None when the labels do not say."""
        labels = batch.get("labels")
        if labels is None:
            labels = lm_labels(batch, IGNORE_INDEX)
        if not isinstance(labels, torch.Tensor):
            return None
        task = self.settings.task
        if task == "auto":
            task = "causal_lm" if labels.ndim == 2 else "classification" if labels.ndim == 1 else None
        if task == "causal_lm" and labels.ndim == 2:
            valid = (labels[:, 1:] != IGNORE_INDEX).any(dim=1)
        elif task == "classification" and labels.ndim == 1:
            valid = labels != IGNORE_INDEX
        else:
            return None
        if exclude is not None:
            valid = valid & ~exclude.to(valid.device)
        return valid.sum()

    def group_count(self, batches: Sequence[Mapping[str, Any]], device: torch.device | str | None = None
                    ) -> torch.Tensor | None:
        """The valid samples of one optimizer step's micro-batches (``batches``, in order, none
        recorded yet, each with its ``sample_id`` field) on every rank: the denominator of :meth:`train_loss`. Samples without a
        label token and draws that only pad a rank's shard are not counted. Collective under
        torch.distributed (one scalar all-reduce per optimizer step). None when a batch's labels
        do not say which samples are valid (then :meth:`train_loss` falls back to a per-micro-batch
        mean)."""
        sizes = [int(b[SAMPLE_ID].shape[0]) for b in batches]
        pad = torch.from_numpy(self.sampler.padding_mask(sum(sizes)))
        counts, start = [], 0
        for b, k in zip(batches, sizes):
            p = pad[start:start + k]
            counts.append(self._valid_count(b, p if bool(p.any()) else None))
            start += k
        if not counts or any(c is None for c in counts):
            return None
        total = counts[0].to(torch.int64)
        for c in counts[1:]:
            total = total + c.to(total.device, torch.int64)
        exchange = self.tracker.exchange
        if exchange is not None:
            import torch.distributed as dist

            total = total.to(exchange.device)
            dist.all_reduce(total, group=exchange.group)
        return total if device is None else total.to(device)

    def train_loss(self, sample_ids: Any, signals: Any, group_count: torch.Tensor | None = None,
                   accumulation_steps: int = 1) -> tuple[torch.Tensor, bool]:
        """Record a training micro-batch (``sample_ids`` int ``[B]``, its
        :class:`~geko_torch.signals.SampleSignals`) and return ``(loss, scaled)``: the loss to
        backpropagate, and whether it is already normalised for gradient accumulation.

        With ``group_count`` (:meth:`group_count` of the micro-batches of this optimizer step)
        the loss is ``world_size * sum(kept losses) / group_count``: summed over the micro-batches
        and averaged over the ranks by DDP, that is the gradient of one process training the whole
        accumulated global batch, however its valid samples are spread. Kept: a label token, not a
        padding draw, and under ``nan_policy="skip"`` a finite result (a skipped sample is still in
        the count: that is known only after the forward). Each loss is first multiplied by the
        plan's loss weight (InfoBatch, GEKO's keep_fraction). Without a count: the micro-batch's
        global mean divided by ``accumulation_steps`` (``scaled`` is True then as well, unless
        ``accumulation_steps`` is None: the caller divides)."""
        tracker = self.tracker
        tracker.record(sample_ids, signals)
        losses = signals.loss
        w = self.sampler.loss_weights_for(sample_ids, losses.device)
        if w is not None:
            losses = losses * w
        if group_count is None:
            loss = tracker.global_mean(losses)
            if accumulation_steps is None:
                return loss, False
            return loss / accumulation_steps, True
        mask = tracker.loss_mask.to(losses.device) > 0
        total = torch.where(mask, losses, losses.new_zeros(())).sum()  # a masked NaN must not leak in
        n = group_count.to(total.device, total.dtype).clamp(min=1)
        return total * float(self.world_size) / n, True

    # ------------------------------------------------------------------ epochs
    def epoch_done(self, drop_last_below: int = 0) -> bool:
        """Every draw of this rank's shard of the current plan was trained (``drop_last_below``:
        a remainder smaller than this is never trained, as with a loader's ``drop_last``)."""
        s = self.sampler
        remaining = len(s) - s.consumed
        return remaining <= 0 or remaining < drop_last_below

    def end_epoch(self) -> EpochEnd:
        """Apply what is queued (collective under torch.distributed: every rank ends the epoch
        here), repartition, record the history, read the learning progress, and decide whether
        training stops: the state is mastered (GEKO selection only: a baseline trains every epoch
        it was given), or ``stop_on_plateau`` says few learnable samples still improve (any policy)."""
        tracker = self.tracker
        tracker.flush()
        trained = tracker.epoch_stats.samples
        mean_loss = tracker.epoch_mean_loss
        stats = tracker.end_epoch()
        progress = store_progress(self.store)  # every rank holds the same state: the same decision
        reason, s = None, self.settings
        if self.store.epoch < self.sampler.total_epochs:
            if stats.mastered and s.stop_when_mastered and self.policy is SelectionKind.GEKO:
                reason = "mastered"
            elif s.stop_on_plateau is not None and s.stop_on_plateau.should_stop(progress):
                reason = "plateau"
        if reason:
            log.info("GEKO: stopping training after epoch %d (%s)", stats.epoch, reason)
        return EpochEnd(stats=stats, mean_loss=mean_loss, samples_trained=int(trained), progress=progress,
                        stop_reason=reason)

    def resume_epoch_end(self, drop_last_below: int = 0) -> EpochEnd | None:
        """After :meth:`resume`: a checkpoint saved after an epoch's last batch but before its end
        is ended now, as the uninterrupted run did right after that save (``stop_pending`` is set
        when it says stop). None when there was nothing to end."""
        s = self.sampler
        if not (s.global_position > 0 and self.epoch_done(drop_last_below) and self.store.epoch < s.total_epochs):
            return None
        end = self.end_epoch()
        self.stop_pending = end.stop
        return end

    @property
    def finished(self) -> bool:
        """Every planned epoch has ended."""
        return self.store is not None and self.store.epoch >= self.sampler.total_epochs

    def flush(self) -> None:
        """Apply every queued observation (collective under torch.distributed)."""
        if self.tracker is not None:
            self.tracker.flush()
            self.store.flush()

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | os.PathLike, **meta: Any) -> None:
        """Write the GEKO part of a checkpoint into ``directory`` (``geko_*`` files, metadata last).
        The tracker must have been flushed on every rank (:meth:`flush`); call on the writing
        process only, then flush the live state (``store.flush()``) once the checkpoint is in place.
        ``meta``: JSON-ready values added to ``geko_state.json``."""
        write_geko_part(Path(directory), store=self.store, sampler=self.sampler, tracker=self.tracker,
                        run_dir=self.run.root, meta=meta)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

