"""The tracker: turns a batch's logits into per-sample losses and records them in the state store.

Observations are copied to the host asynchronously and applied to the store once the copy has
landed (on CUDA usually one step later), so tracking never makes the training step wait for the
GPU. They are always applied in the order the batches were seen.

Under torch.distributed (more than one rank) every rank's observations go to every rank
(:mod:`geko_torch.distributed`): exchange ``k`` is launched when its batches are recorded and
applied when exchange ``k + 1`` is launched (or at a flush), at the same point on every rank, so
each replica applies the same observations in the same order and an error is raised everywhere
at once.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geko_state import (
    HistoryConfig,
    HistoryWriter,
    NanPolicy,
    PartitionStats,
    StateStore,
)
from geko_state.errors import ConfigError, InputError
from geko_state.validate import check_int, check_number

from .distributed import ObservationExchange, dist_rank_world
from .sampler import GEKOSampler
from .signals import DEFAULT_TOKEN_ACCURACY, SampleSignals, TaskKind, apply_custom, compute_signals, infer_task
from .threads import torch_threads_kept

__all__ = ["GEKOTracker", "TrackerStats"]

log = logging.getLogger("geko_torch")


@dataclass
class _Pending:
    ids: torch.Tensor  # int64 [B] on the host (never cast through float: ids above 2^24 stay exact)
    values: torch.Tensor  # float32 [4, B] on the host: loss, confidence, correct, valid
    event: Any  # torch.cuda.Event, or None once the copy is known to be complete

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return self.ids.numpy(), self.values.numpy()


@dataclass
class _Local:
    """One recorded batch waiting for the next exchange (distributed runs)."""

    ids: torch.Tensor  # int64 [B], host
    values: torch.Tensor  # float32 [4, B], device of the logits
    bad: int  # position of the first id outside the store, or -1


@dataclass
class TrackerStats:
    """Counters of the current epoch on this rank."""

    samples: int = 0  # ids passed to the tracker (sample passes trained)
    observed: int = 0  # of which had a label token and were sent to the store
    loss_sum: float = 0.0  # sum of the observed per-sample losses (for the epoch's mean loss)


def _as_ids(sample_ids: Any, batch_size: int) -> torch.Tensor:
    ids = torch.as_tensor(sample_ids)
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise InputError(f"sample_ids must be an integer tensor [B], got dtype {ids.dtype}")
    if ids.ndim != 1 or ids.shape[0] != batch_size:
        raise InputError(f"sample_ids must have shape [B] = [{batch_size}] (one id per sample), got {tuple(ids.shape)}")
    return ids.to(torch.int64)


class GEKOTracker:
    """Per-sample losses for backward, observations for the state store, epoch ends.

    ``tracker.loss(sample_ids, logits, labels)`` returns float32 ``[B]`` per-sample losses
    (attached to the graph) and queues the batch's (loss, confidence, correct) for the store.
    ``tracker.end_epoch()`` applies what is queued, repartitions the store and writes the epoch's
    history to ``run_dir`` (when given). ``sampler``, when given, is advanced by every batch so
    its position can be checkpointed.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        sampler: GEKOSampler | None = None,
        run_dir: str | os.PathLike | None = None,
        history: HistoryConfig | None = None,
        task: TaskKind | str = "auto",
        ignore_index: int = -100,
        correct_loss_below: float = 0.5,
        token_accuracy: float | None = DEFAULT_TOKEN_ACCURACY,
        compute_confidence: Callable[[Any, Any], torch.Tensor] | None = None,
        compute_correctness: Callable[[Any, Any], torch.Tensor] | None = None,
        max_pending: int = 8,
        record_history: bool = True,
        sync_every: int = 1,
        process_group: Any = None,
    ) -> None:
        if not isinstance(store, StateStore):
            raise InputError(f"store must be a StateStore, got {type(store).__name__}")
        if sampler is not None and not isinstance(sampler, GEKOSampler):
            raise InputError(f"sampler must be a GEKOSampler, got {type(sampler).__name__}")
        if sampler is not None and sampler.store is not store:
            raise InputError("sampler was built on another StateStore than the tracker's")
        # Settings of the tracker: ConfigError, worded as GEKOSettings words them (geko_state.errors).
        for name, fn in (("compute_confidence", compute_confidence), ("compute_correctness", compute_correctness)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be a callable fn(outputs, batch) -> Tensor[B], got {type(fn).__name__}")
        for name, v in (("max_pending", max_pending), ("sync_every", sync_every)):
            check_int(v, name, 1, error=ConfigError)
        check_number(correct_loss_below, "correct_loss_below", 0, low_open=True, error=ConfigError,
                     what="a finite number")
        if token_accuracy is not None:
            check_number(token_accuracy, "token_accuracy", 0, 1, low_open=True, error=ConfigError,
                         what="None or a share")
        self.store = store
        self.sampler = sampler
        if task != "auto":
            try:
                task = TaskKind(task)
            except ValueError:
                raise ConfigError(f"task must be 'auto' or one of {[k.value for k in TaskKind]}, got {task!r}") from None
        self.task = task
        self._lm_options = {
            "ignore_index": ignore_index, "correct_loss_below": correct_loss_below, "token_accuracy": token_accuracy,
        }
        self.compute_confidence = compute_confidence
        self.compute_correctness = compute_correctness
        self.max_pending = max_pending
        # Under torch.distributed every rank holds a replica and receives every rank's observations.
        rank, world = dist_rank_world()
        self.exchange: ObservationExchange | None = None
        if world > 1 or process_group is not None:
            self.exchange = ObservationExchange(process_group)
            rank, world = self.exchange.rank, self.exchange.world_size
            if sampler is not None and (sampler.rank, sampler.world_size) != (rank, world):
                raise InputError(
                    f"the sampler has rank {sampler.rank} of {sampler.world_size} but this process is rank "
                    f"{rank} of {world}; build the GEKOSampler without rank/world_size under torch.distributed"
                )
        self.rank, self.world_size = rank, world
        self.sync_every = sync_every
        self._local: list[_Local] = []
        # Only one process writes history (rank 0 under torch.distributed).
        self.history = (
            HistoryWriter(run_dir, history) if run_dir is not None and record_history and rank == 0 else None
        )
        self.run_dir = run_dir
        self._pending: deque[Any] = deque()  # _Pending, or in-flight exchanges (distributed)
        self._last_mask: torch.Tensor | None = None  # valid and not padding, of the last recorded batch
        self.epoch_stats = TrackerStats()
        self.samples_total = 0  # sample passes over the whole run (restored on resume)

    # ------------------------------------------------------------------ per step
    def signals(self, logits: torch.Tensor, labels: torch.Tensor, *, outputs: Any = None, batch: Any = None) -> SampleSignals:
        """The batch's per-sample signals (custom confidence / correctness callables applied)."""
        kind = infer_task(logits) if self.task == "auto" else self.task
        options = self._lm_options if kind is TaskKind.CAUSAL_LM else {}
        sig = compute_signals(logits, labels, kind, **options)
        if self.compute_confidence is not None or self.compute_correctness is not None:
            sig = apply_custom(
                sig, outputs, batch,
                compute_confidence=self.compute_confidence, compute_correctness=self.compute_correctness,
            )
        return sig

    def loss(
        self,
        sample_ids: Any,
        logits: torch.Tensor,
        labels: torch.Tensor,
        *,
        outputs: Any = None,
        batch: Any = None,
    ) -> torch.Tensor:
        """Per-sample loss float32 ``[B]`` for backward; the batch is queued for the store.

        ``sample_ids`` int ``[B]`` (the ``sample_id`` field the dataset wrapper adds), ``logits``
        ``[B, T, V]`` (causal LM) or ``[B, C]`` (classification), ``labels`` ``[B, T]`` / ``[B]``.
        A sample without any label token has loss 0 and is not observed.
        """
        ids = _as_ids(sample_ids, int(logits.shape[0]) if logits.ndim else -1)
        sig = self.signals(logits, labels, outputs=outputs, batch=batch)
        self.record(ids, sig)
        return sig.loss

    def record(self, sample_ids: Any, signals: SampleSignals) -> None:
        """Queue already computed signals for the store (``loss`` does this for you)."""
        ids = _as_ids(sample_ids, int(signals.loss.shape[0]))
        n_samples = self.store.n_samples
        loss = signals.loss.detach().float()
        # NaN: no margin (a hand-built SampleSignals); the store leaves the sample's AUM as it is.
        margin = torch.full_like(loss, float("nan")) if signals.margin is None else signals.margin.float()
        values = torch.stack([loss, signals.confidence.float(), signals.correct.float(), signals.valid.float(), margin])
        n = int(ids.shape[0])
        if self.exchange is not None:
            self._record_distributed(ids, values, n_samples)
            return
        self._last_mask = self._loss_mask(values)
        # Ids come from the DataLoader on the host, so checking them costs no device sync; the
        # store checks again (device-resident ids included) before applying anything.
        if not ids.is_cuda and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_samples):
            bad = ids[(ids < 0) | (ids >= n_samples)][0].item()
            raise InputError(f"sample_ids holds {bad}; expected ids in [0, {n_samples}) (the dataset index)")
        if values.is_cuda:
            host_values = torch.empty(values.shape, dtype=torch.float32, pin_memory=True)
            host_values.copy_(values, non_blocking=True)
            host_ids = torch.empty(ids.shape, dtype=torch.int64, pin_memory=True)
            host_ids.copy_(ids, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append(_Pending(host_ids, host_values, event))
        else:
            self._pending.append(_Pending(ids.cpu(), values.cpu(), None))
        if self.sampler is not None:
            self.sampler.advance(n)
        self._drain(block=len(self._pending) > self.max_pending)

    def _record_distributed(self, ids: torch.Tensor, values: torch.Tensor, n_samples: int) -> None:
        ids = ids.cpu()
        n = int(ids.shape[0])
        host = ids.numpy()
        bad = -1
        if n and (host.min() < 0 or host.max() >= n_samples):
            bad = int(np.flatnonzero((host < 0) | (host >= n_samples))[0])
        if self.sampler is not None:
            pad = self.sampler.padding_mask(n)
            if pad.any():  # trained to keep the ranks in step, but not observed (counted once already)
                values[3, torch.from_numpy(pad).to(values.device)] = 0.0
            self.sampler.advance(n)
        self._last_mask = self._loss_mask(values)
        self._local.append(_Local(ids, values, bad))
        if len(self._local) >= self.sync_every:
            self._send()
            # Apply every exchange but the newest: the same point on every rank (see module docs).
            self._drain(keep=1)

    def _loss_mask(self, values: torch.Tensor) -> torch.Tensor:
        """Which samples of the batch the training loss averages: valid ones (a label token, not a
        padding draw) and, under ``nan_policy="skip"``, only those with a finite result (the store
        skips and counts the others; their loss must not reach backward either)."""
        if self.store.config.nan_policy is NanPolicy.SKIP:
            return values[3] * (torch.isfinite(values[0]) & torch.isfinite(values[1]))
        return values[3]

    @property
    def loss_mask(self) -> torch.Tensor:
        """float ``[B]`` of the batch just recorded: 1 for the samples the training loss keeps (a
        label token, not a padding draw, and under ``nan_policy="skip"`` a finite result), else 0."""
        if self._last_mask is None:
            raise InputError("loss_mask: no batch recorded yet (tracker.loss / record first)")
        return self._last_mask

    def global_mean(self, losses: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate for the batch just recorded: the mean of ``losses`` (float
        ``[B]``, e.g. ``tracker.loss(...)`` times loss weights) over its samples that have a label
        token. Under torch.distributed it is the mean over the whole global batch (every rank's
        samples; draws that only pad a shard weigh 0), scaled so that DDP's average of the ranks'
        gradients equals the gradient of one process training that global batch. Costs one
        scalar all-reduce per step there (no host sync on NCCL). Under ``nan_policy="skip"``
        samples with a non-finite loss or confidence weigh 0 too.
        """
        mask = self._last_mask
        if mask is None or mask.shape != losses.shape:
            raise InputError(
                f"global_mean(losses) takes the [B] losses of the batch just recorded (tracker.loss / "
                f"record), got shape {tuple(losses.shape)}"
            )
        mask = mask.to(losses.device)
        total = torch.where(mask > 0, losses, losses.new_zeros(())).sum()  # a padded NaN must not leak in
        count = mask.sum()
        if self.exchange is None:
            return total / count.clamp(min=1)
        import torch.distributed as dist

        count = count.to(self.exchange.device, torch.float32)
        dist.all_reduce(count, group=self.exchange.group)
        return total * self.world_size / count.to(losses.device, losses.dtype).clamp(min=1)

    def _send(self) -> None:
        if not self._local:
            return
        local, self._local = self._local, []
        if len(local) == 1:
            ids, values = local[0].ids, local[0].values
        else:
            ids = torch.cat([x.ids for x in local])
            values = torch.cat([x.values for x in local], dim=1)
        bad, offset = -1, 0
        for x in local:
            if x.bad >= 0:
                bad = offset + x.bad
                break
            offset += int(x.ids.shape[0])
        self._pending.append(self.exchange.start(ids, values, bad))

    def _drain(self, *, block: bool = False, everything: bool = False, keep: int | None = None) -> None:
        if keep is not None:  # distributed: a fixed schedule, never "whatever has arrived"
            while len(self._pending) > keep:
                self._apply_exchange(self._pending.popleft())
            return
        while self._pending:
            p = self._pending[0]
            if not p.ready() and not (block or everything):
                return
            self._pending.popleft()
            ids, v = p.result()
            self._apply(ids, v, int(ids.shape[0]))
            block = False

    def _apply_exchange(self, inflight: Any) -> None:
        res = inflight.result()
        for r, pos in enumerate(res.bad.tolist()):
            if pos >= 0:
                raise InputError(
                    f"sample_ids on rank {r} hold an id outside [0, {self.store.n_samples}) (the dataset index), "
                    f"at position {pos} of its batch; nothing of this exchange was applied on any rank"
                )
        self._apply(res.ids, res.values, int(res.ids.shape[0]))

    def _apply(self, ids: np.ndarray, v: np.ndarray, n: int) -> None:
        self.epoch_stats.samples += n
        self.samples_total += n
        keep = v[3] > 0
        if not keep.all():
            ids, v = ids[keep], v[:, keep]
        if ids.shape[0] == 0:
            return
        try:
            with torch_threads_kept():
                applied = self.store.observe(ids, v[0], v[1], v[2] > 0, v[4])
        except InputError as e:
            bad = ids[~(np.isfinite(v[0]) & np.isfinite(v[1]))]
            if bad.size == 0:
                raise
            raise InputError(
                f"non-finite loss or confidence for sample id(s) {bad[:8].tolist()} in epoch {self.store.epoch + 1} "
                f"({e}). Set GEKOConfig(nan_policy='skip') to skip such results: they are counted "
                "(PartitionStats.skipped_nonfinite, the history and `geko report`) and weigh 0 in the loss; "
                "under fp16 the GradScaler then skips the optimizer step of an overflowing batch"
            ) from None
        self.epoch_stats.observed += applied
        if applied == ids.shape[0]:
            self.epoch_stats.loss_sum += float(np.sum(v[0], dtype=np.float64))
        else:  # nan_policy="skip" dropped some: average only what the store kept
            finite = np.isfinite(v[0])
            self.epoch_stats.loss_sum += float(np.sum(v[0][finite], dtype=np.float64))

    def flush(self) -> None:
        """Apply every queued observation now (waits for outstanding device copies). Under
        torch.distributed this exchanges what is left: call it on every rank at the same point
        (``end_epoch`` and ``save_checkpoint`` do)."""
        if self.exchange is not None:
            self._send()
            self._drain(keep=0)
        else:
            self._drain(block=True, everything=True)

    @property
    def pending(self) -> int:
        """Recorded batches not yet applied to the store."""
        return len(self._pending) + len(self._local)

    @property
    def is_main_process(self) -> bool:
        """Rank 0 (or a single process): the replica that writes history and checkpoints."""
        return self.rank == 0

    # ------------------------------------------------------------------ per epoch
    @property
    def epoch_mean_loss(self) -> float:
        s = self.epoch_stats
        return s.loss_sum / s.observed if s.observed else float("nan")

    def end_epoch(self, *, samples_trained: int | None = None, phase: str | None = None) -> PartitionStats:
        """Apply queued observations, repartition the store, and record the epoch's history.

        ``samples_trained`` (default: the sample passes this tracker saw this epoch) and
        ``phase`` (default: the sampler's curriculum phases) go to the history summary.
        """
        self.flush()
        if phase is None and self.sampler is not None:
            phase = self.sampler.phase_label()
        trained = self.epoch_stats.samples if samples_trained is None else samples_trained
        with torch_threads_kept():
            stats = self.store.repartition()
            if self.history is not None:
                self.history.record(self.store, stats, samples_trained=int(trained), phase=phase)
                self.store.flush()
        self.epoch_stats = TrackerStats()
        return stats

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Counters to checkpoint (call :meth:`flush` first so the store holds every observation)."""
        if self.pending:
            raise InputError("tracker.state_dict(): observations are still queued; call tracker.flush() first")
        s = self.epoch_stats
        return {"samples": s.samples, "observed": s.observed, "loss_sum": s.loss_sum, "samples_total": self.samples_total}

    def history_state(self) -> dict[str, Any] | None:
        """The history writer's memory between epochs (numpy arrays), or None without history."""
        return None if self.history is None else self.history.state_dict()

    def load_history_state(self, state: dict[str, Any] | None) -> None:
        if self.history is not None and state is not None:
            self.history.load_state_dict(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending.clear()
        self._local.clear()
        self.epoch_stats = TrackerStats(int(state["samples"]), int(state["observed"]), float(state["loss_sum"]))
        self.samples_total = int(state["samples_total"])
