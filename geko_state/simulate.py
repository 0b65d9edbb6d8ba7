"""A synthetic learner for exercising the engine without a model.

Each sample has a learning rate drawn from a mix of easy, hard and mislabeled samples; the
probability the "model" assigns to a sample's label grows with the number of times it was
trained on (mislabeled samples are confidently wrong and never learned). It exercises the full
observe / repartition / plan cycle at any N, offline, in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import InputError
from .stats import PartitionStats
from .store import StateStore
from .validate import check_int

__all__ = ["SyntheticTask", "EpochResult", "simulate"]


@dataclass(frozen=True)
class SyntheticTask:
    """Shares of easy / hard / mislabeled samples (the rest are medium)."""

    easy: float = 0.5
    hard: float = 0.2
    mislabeled: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        shares = (self.easy, self.hard, self.mislabeled)
        if any(s < 0 for s in shares) or sum(shares) > 1:
            raise InputError(f"task shares must be >= 0 and sum to <= 1, got {shares}")

    def rates(self, n: int) -> np.ndarray:
        """Per-sample learning rate, float64 ``[n]``; -1 marks a mislabeled sample."""
        rng = np.random.default_rng(self.seed)
        u = rng.random(n)
        rate = np.full(n, 0.35)  # medium
        rate[u < self.easy] = 1.5
        hard = (u >= self.easy) & (u < self.easy + self.hard)
        rate[hard] = 0.12
        rate[(u >= self.easy + self.hard) & (u < self.easy + self.hard + self.mislabeled)] = -1.0
        return rate

    def signals(self, rates: np.ndarray, times_seen: np.ndarray, rng: np.random.Generator):
        """(losses, confidences, correct, margins) for one training pass over samples with these rates.

        The margin treats the rest of the probability mass as one competing class:
        ``log(p) - log(1 - p)`` for label probability ``p`` (a mislabeled sample: about -2.9)."""
        p = 1.0 - 0.8 * np.exp(-rates * (times_seen + 1.0))
        p = np.clip(p * np.exp(rng.normal(0.0, 0.03, p.shape)), 1e-4, 0.999)
        mis = rates < 0
        p[mis] = 0.05  # the label is wrong; the model is confident in the other class
        loss = (-np.log(p)).astype(np.float32)
        conf = np.where(mis, 0.9, p).astype(np.float32)
        margin = (np.log(p) - np.log1p(-p)).astype(np.float32)
        return loss, conf, loss < 0.5, margin


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    trained: int  # sample passes this epoch
    stats: PartitionStats


def simulate(
    store: StateStore,
    epochs: int,
    task: SyntheticTask = SyntheticTask(),
    *,
    seed: int = 0,
    batch_size: int = 4096,
    budget: str | int | float = "trainable",
) -> Iterator[EpochResult]:
    """Train the synthetic learner for ``epochs`` epochs on ``store``; yields each epoch's result."""
    for name, v, low in (("epochs", epochs, 1), ("seed", seed, 0), ("batch_size", batch_size, 1)):
        check_int(v, f"simulate: {name}", low)
    rates = task.rates(store.n_samples)
    rng = np.random.default_rng([seed, 1])
    first = store.epoch
    total = first + epochs
    for _ in range(epochs):
        plan = store.plan_epoch(seed=seed, budget=budget, total_epochs=total)
        for lo in range(0, plan.shape[0], batch_size):
            ids = plan[lo: lo + batch_size]
            loss, conf, ok, margin = task.signals(rates[ids], store.column("times_seen")[ids], rng)
            store.observe(ids, loss, conf, ok, margin)
        stats = store.repartition()
        yield EpochResult(stats.epoch, int(plan.shape[0]), stats)
