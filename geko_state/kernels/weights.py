"""Sampling weights and eligible-sample grouping.

A sample's weight depends only on its class (its bucket), so plans are drawn from per-class member
lists instead of a per-sample CDF; that keeps planning O(draws) with no float prefix sum over N.
Eligible means: not pruned, not FREEZE, and ``times_seen < max_seen``.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "weights_numpy", "weights_numba", "members_numpy", "members_numba", "N_CLASSES",
]

N_CLASSES = 4  # classes are the Bucket values 0..3; class 0 (FREEZE) is never eligible
_CHUNKS = 256


def weights_numpy(bucket, pruned, times_seen, class_weights, max_seen):
    """Per-sample float32 weights, shape ``[N]``. ``class_weights``: float32 ``[4]`` by bucket."""
    w = class_weights[bucket.astype(np.int64)]
    eligible = (pruned == 0) & (bucket != 0) & (times_seen < max_seen)
    return np.where(eligible, w, np.float32(0)).astype(np.float32)


@numba.njit(cache=True, parallel=True, nogil=True)
def weights_numba(bucket, pruned, times_seen, class_weights, max_seen):
    n = bucket.shape[0]
    out = np.empty(n, dtype=np.float32)
    for i in numba.prange(n):
        b = bucket[i]
        if pruned[i] != 0 or b == 0 or times_seen[i] >= max_seen:
            out[i] = np.float32(0)
        else:
            out[i] = class_weights[b]
    return out


def members_numpy(bucket, pruned, times_seen, max_seen):
    """Eligible sample ids grouped by class, ascending within a class.

    Returns ``(members int64 [M], offsets int64 [N_CLASSES + 1])``: class ``c`` is
    ``members[offsets[c]:offsets[c + 1]]``.
    """
    eligible = (pruned == 0) & (bucket != 0) & (times_seen < max_seen)
    parts = [np.zeros(0, dtype=np.int64)]
    offsets = np.zeros(N_CLASSES + 1, dtype=np.int64)
    for c in range(1, N_CLASSES):
        ids = np.flatnonzero(eligible & (bucket == c)).astype(np.int64)
        parts.append(ids)
        offsets[c + 1] = offsets[c] + ids.size
    return np.concatenate(parts), offsets


@numba.njit(cache=True, parallel=True, nogil=True)
def members_numba(bucket, pruned, times_seen, max_seen):
    n = bucket.shape[0]
    step = (n + _CHUNKS - 1) // _CHUNKS
    counts = np.zeros((_CHUNKS, N_CLASSES), dtype=np.int64)
    for ch in numba.prange(_CHUNKS):
        lo = ch * step
        hi = min(n, lo + step)
        for i in range(lo, hi):
            b = bucket[i]
            if b != 0 and pruned[i] == 0 and times_seen[i] < max_seen:
                counts[ch, b] += 1
    offsets = np.zeros(N_CLASSES + 1, dtype=np.int64)
    for c in range(N_CLASSES):
        total = 0
        for ch in range(_CHUNKS):
            total += counts[ch, c]
        offsets[c + 1] = offsets[c] + total
    # Write position of each (chunk, class): chunks in order keep ids ascending within a class.
    start = np.zeros((_CHUNKS, N_CLASSES), dtype=np.int64)
    for c in range(N_CLASSES):
        pos = offsets[c]
        for ch in range(_CHUNKS):
            start[ch, c] = pos
            pos += counts[ch, c]
    members = np.empty(offsets[N_CLASSES], dtype=np.int64)
    for ch in numba.prange(_CHUNKS):
        lo = ch * step
        hi = min(n, lo + step)
        cur = start[ch].copy()
        for i in range(lo, hi):
            b = bucket[i]
            if b != 0 and pruned[i] == 0 and times_seen[i] < max_seen:
                members[cur[b]] = i
                cur[b] += 1
    return members, offsets
