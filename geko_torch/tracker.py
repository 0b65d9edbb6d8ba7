"""The tracker: turns a batch's logits into per-sample losses and records them in the state store.

Observations are copied to the host asynchronously and applied to the store once the copy has
landed (on CUDA usually one step later), so tracking never makes the training step wait for the
GPU. They are always applied in the order the batches were seen.
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

from geko_state import HistoryConfig, HistoryWriter, PartitionStats, StateStore
from geko_state.errors import InputError

from .sampler import GEKOSampler
from .signals import SampleSignals, TaskKind, apply_custom, compute_signals, infer_task
from .threads import torch_threads_kept

__all__ = ["GEKOTracker", "TrackerStats"]

log = logging.getLogger("geko_torch")


@dataclass
class _Pending:
    ids: torch.Tensor  # int64 [B] on the host (never cast through float: ids above 2^24 stay exact)
    values: torch.Tensor  # float32 [4, B] on the host: loss, confidence, correct, valid
    event: Any  # torch.cuda.Event, or None once the copy is known to be complete


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
        token_accuracy: float | None = None,
        compute_confidence: Callable[[Any, Any], torch.Tensor] | None = None,
        compute_correctness: Callable[[Any, Any], torch.Tensor] | None = None,
        max_pending: int = 8,
        record_history: bool = True,
    ) -> None:
        if not isinstance(store, StateStore):
            raise InputError(f"store must be a StateStore, got {type(store).__name__}")
        if sampler is not None and not isinstance(sampler, GEKOSampler):
            raise InputError(f"sampler must be a GEKOSampler, got {type(sampler).__name__}")
        if sampler is not None and sampler.store is not store:
            raise InputError("sampler was built on another StateStore than the tracker's")
        for name, fn in (("compute_confidence", compute_confidence), ("compute_correctness", compute_correctness)):
            if fn is not None and not callable(fn):
                raise InputError(f"{name} must be a callable fn(outputs, batch) -> Tensor[B], got {type(fn).__name__}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise InputError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self.store = store
        self.sampler = sampler
        if task != "auto":
            try:
                task = TaskKind(task)
            except ValueError:
                raise InputError(f"task must be 'auto' or one of {[k.value for k in TaskKind]}, got {task!r}") from None
        self.task = task
        self._lm_options = {
            "ignore_index": ignore_index, "correct_loss_below": correct_loss_below, "token_accuracy": token_accuracy,
        }
        self.compute_confidence = compute_confidence
        self.compute_correctness = compute_correctness
        self.max_pending = max_pending
        # Only one process writes history (rank 0 under torch.distributed).
        self.history = (
            HistoryWriter(run_dir, history) if run_dir is not None and record_history else None
        )
        self.run_dir = run_dir
        self._pending: deque[_Pending] = deque()
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
        # Ids come from the DataLoader on the host, so checking them costs no device sync; the
        # store checks again (device-resident ids included) before applying anything.
        if not ids.is_cuda and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_samples):
            bad = ids[(ids < 0) | (ids >= n_samples)][0].item()
            raise InputError(f"sample_ids holds {bad}; expected ids in [0, {n_samples}) (the dataset index)")
        values = torch.stack([
            signals.loss.detach().float(), signals.confidence.float(),
            signals.correct.float(), signals.valid.float(),
        ])
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
        n = int(ids.shape[0])
        self.epoch_stats.samples += n
        self.samples_total += n
        if self.sampler is not None:
            self.sampler.advance(n)
        self._drain(block=len(self._pending) > self.max_pending)

    def _drain(self, *, block: bool, everything: bool = False) -> None:
        while self._pending:
            p = self._pending[0]
            if p.event is not None and not p.event.query():
                if not (block or everything):
                    return
                p.event.synchronize()
            self._pending.popleft()
            self._apply(p)
            block = False

    def _apply(self, p: _Pending) -> None:
        v = p.values.numpy()
        keep = v[3] > 0
        ids = p.ids.numpy()
        if not keep.all():
            ids, v = ids[keep], v[:, keep]
        if ids.shape[0] == 0:
            return
        with torch_threads_kept():
            applied = self.store.observe(ids, v[0], v[1], v[2] > 0)
        self.epoch_stats.observed += applied
        if applied == ids.shape[0]:
            self.epoch_stats.loss_sum += float(np.sum(v[0], dtype=np.float64))
        else:  # nan_policy="skip" dropped some: average only what the store kept
            finite = np.isfinite(v[0])
            self.epoch_stats.loss_sum += float(np.sum(v[0][finite], dtype=np.float64))

    def flush(self) -> None:
        """Apply every queued observation now (waits for outstanding device copies)."""
        self._drain(block=True, everything=True)

    @property
    def pending(self) -> int:
        return len(self._pending)

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
        if self._pending:
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
        self.epoch_stats = TrackerStats(int(state["samples"]), int(state["observed"]), float(state["loss_sum"]))
        self.samples_total = int(state["samples_total"])
