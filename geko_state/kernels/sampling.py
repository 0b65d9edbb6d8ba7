"""Weighted draws from per-class member lists.

With replacement (the default): one uniform ``u`` per draw picks a point on the line where class
``c`` occupies a stretch of length ``w_c * n_c``; the class is found among 4 cumulative masses and
the member by one division, so a draw is O(1) and never builds an [N] CDF (no 2^24 category
limit, unlike ``torch.multinomial``).

Without replacement: Efraimidis-Spirakis exponential keys ``E / w``. Inside a class all weights
are equal, so the class's sorted keys are generated directly as exponential spacings; the plan is
the merge of the (already sorted) per-class key streams.
"""
from __future__ import annotations

import numba
import numpy as np

from .weights import N_CLASSES

__all__ = [
    "class_masses",
    "draw_with_replacement_numpy", "draw_with_replacement_numba",
    "merge_keys_numpy", "merge_keys_numba",
]


def class_masses(offsets: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """Cumulative class masses, float64 ``[N_CLASSES]``: ``cum[c] = sum_{k<=c} w_k * n_k``."""
    sizes = np.diff(offsets).astype(np.float64)
    w = np.asarray(class_weights, dtype=np.float64).copy()
    w[0] = 0.0  # FREEZE is never drawn
    cum = np.zeros(N_CLASSES, dtype=np.float64)
    acc = 0.0
    for c in range(N_CLASSES):
        acc = acc + w[c] * sizes[c]
        cum[c] = acc
    return cum


def draw_with_replacement_numpy(members, offsets, class_weights, cum, u):
    """``u``: float64 uniforms in [0, 1), shape ``[K]``; returns int64 sample ids ``[K]``."""
    total = cum[N_CLASSES - 1]
    last = int(np.flatnonzero(np.diff(np.r_[0.0, cum]) > 0).max())
    x = u * total
    cls = np.minimum(np.searchsorted(cum, x, side="right"), last)
    prev = np.where(cls > 0, cum[np.maximum(cls - 1, 0)], 0.0)
    w = np.asarray(class_weights, dtype=np.float64)[cls]
    size = offsets[cls + 1] - offsets[cls]
    j = np.minimum(np.floor((x - prev) / w).astype(np.int64), size - 1)
    j = np.maximum(j, 0)
    return members[offsets[cls] + j]


@numba.njit(cache=True, parallel=True, nogil=True)
def draw_with_replacement_numba(members, offsets, class_weights, cum, u):
    k = u.shape[0]
    total = cum[N_CLASSES - 1]
    last = 0
    prev_mass = 0.0
    for c in range(N_CLASSES):
        if cum[c] > prev_mass:
            last = c
        prev_mass = cum[c]
    out = np.empty(k, dtype=np.int64)
    for d in numba.prange(k):
        x = u[d] * total
        cls = N_CLASSES
        for c in range(N_CLASSES):
            if x < cum[c]:
                cls = c
                break
        if cls > last:
            cls = last
        prev = cum[cls - 1] if cls > 0 else 0.0
        size = offsets[cls + 1] - offsets[cls]
        j = np.int64(np.floor((x - prev) / np.float64(class_weights[cls])))
        if j > size - 1:
            j = size - 1
        if j < 0:
            j = 0
        out[d] = members[offsets[cls] + j]
    return out


def merge_keys_numpy(keys_offsets, keys, take):
    """Positions (into ``keys``) of the ``take`` smallest keys, in ascending key order.

    ``keys`` concatenates per-class ascending key runs delimited by ``keys_offsets``
    (int64 ``[C + 1]``); ties go to the earlier run, then the earlier position.
    """
    order = np.argsort(keys, kind="stable")
    return order[:take].astype(np.int64)


@numba.njit(cache=True, nogil=True)
def merge_keys_numba(keys_offsets, keys, take):
    runs = keys_offsets.shape[0] - 1
    pos = keys_offsets[:-1].copy()
    out = np.empty(take, dtype=np.int64)
    for t in range(take):
        best = -1
        best_key = np.inf
        for r in range(runs):
            if pos[r] < keys_offsets[r + 1]:
                kv = keys[pos[r]]
                if best == -1 or kv < best_key:
                    best = r
                    best_key = kv
        out[t] = pos[best]
        pos[best] += 1
    return out
