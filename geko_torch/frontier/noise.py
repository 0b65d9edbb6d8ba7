"""Label noise for the frontier's tasks: pure functions, seeded, applied to the training split only."""
from __future__ import annotations

import numpy as np

from geko_state.errors import InputError

__all__ = ["corrupt_count", "flip_labels", "shuffle_targets"]


def corrupt_count(n: int, noise: float) -> int:
    """How many of ``n`` samples a noise rate corrupts (rounded, so 10% of 2000 is exactly 200)."""
    if not 0.0 <= noise < 1.0:
        raise InputError(f"noise must be in [0, 1), got {noise!r}")
    return int(round(noise * n))


def flip_labels(labels: np.ndarray, classes: int, noise: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric label noise: a ``noise`` share of the samples, chosen at random, get a class other
    than their own, uniformly. Returns the new labels and the sorted int64 ids of the flipped samples."""
    labels = np.asarray(labels, dtype=np.int64)
    flipped = np.sort(rng.choice(labels.shape[0], corrupt_count(labels.shape[0], noise), replace=False))
    out = labels.copy()
    out[flipped] = (labels[flipped] + 1 + rng.integers(0, classes - 1, flipped.shape[0])) % classes
    return out, flipped.astype(np.int64)


def shuffle_targets(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled responses: a permutation ``source`` of ``range(n)`` that gives a ``noise`` share of the
    samples another sample's response (a cyclic shift among them, so none keeps its own), and the
    sorted int64 ids of those samples. Sample i's response becomes response ``source[i]``."""
    k = corrupt_count(n, noise)
    source = np.arange(n, dtype=np.int64)
    if k < 2:  # one sample cannot swap with anyone
        return source, np.zeros(0, dtype=np.int64)
    chosen = rng.choice(n, k, replace=False)
    source[chosen] = np.roll(chosen, 1)
    return source, np.sort(chosen).astype(np.int64)
