"""Real runs for the history / SQL / export / report / noise tests: simulate() or observe() + HistoryWriter.record()."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geko_state import GEKO_BALANCED, GEKOConfig, HistoryConfig, HistoryWriter, PartitionStats, StateStore
from geko_state.simulate import SyntheticTask, simulate


@dataclass
class RecordedRun:
    root: Path
    store: StateStore
    stats: list[PartitionStats] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    # bucket | pruned << 2 of every sample after each epoch, epoch 0 = the initial state
    codes: list[np.ndarray] = field(default_factory=list)
    snapshots: list[dict[str, np.ndarray]] = field(default_factory=list)


def make_run(
    root: Path, *, n: int = 2000, epochs: int = 8, prune_after: int = 2,
    history: HistoryConfig | None = None, extra: dict[Path, HistoryConfig] | None = None,
) -> RecordedRun:
    """Simulate ``epochs`` epochs on a state file in ``root``, recording history after every
    repartition (also into each ``extra`` directory with its own config)."""
    config = GEKO_BALANCED.replace(prune_frozen_after=prune_after, log_bucket_stats=False)
    store = StateStore.create(n, root / "state.arrow", config)
    writers = [HistoryWriter(root, history)] + [HistoryWriter(d, c) for d, c in (extra or {}).items()]
    run = RecordedRun(root, store)
    run.codes.append(np.full(n, 2, dtype=np.int8))
    for r in simulate(store, epochs, SyntheticTask(seed=1), seed=3, budget="full"):
        for w in writers:
            w.record(store, r.stats, samples_trained=r.trained, phase="PEAK" if r.epoch % 2 else None)
        run.stats.append(r.stats)
        run.trained.append(r.trained)
        run.codes.append(store.column("bucket") | (store.column("pruned").view(np.int8) << 2))
        run.snapshots.append({c: np.array(store.column(c)) for c in ("bucket", "q_value", "last_loss", "pruned")})
    store.flush()
    return run


NOISY = 4  # make_noisy_run's mislabeled samples: ids 0..NOISY-1


def make_noisy_run(root: Path, n: int = 20, epochs: int = 3, seed: int = 0) -> StateStore:
    """A run of ``n`` samples whose samples ``0..NOISY-1`` are wrong at every observation with a
    margin below -3 (a flipped label), the others learned from the second epoch on; the history
    recorded every epoch. No model: the observations are written directly."""
    rng = np.random.default_rng(seed)
    store = StateStore.create(n, root / "state.arrow", GEKOConfig())
    writer = HistoryWriter(root)
    ids = np.arange(n)
    for epoch in range(epochs):
        noisy = ids < NOISY
        correct = ~noisy & (epoch > 0)
        margins = np.where(noisy, -3 - rng.random(n), np.where(correct, 2.0, -0.5)).astype(np.float32)
        store.observe(ids, np.where(noisy, 3.0, 0.3), np.full(n, 0.6), correct, margins)
        stats = store.repartition()
        writer.record(store, stats, samples_trained=n)
    store.flush()
    return store
