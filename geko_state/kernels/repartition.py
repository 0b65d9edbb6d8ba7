"""Repartition: assign every unpruned sample to a bucket and advance freeze streaks / pruning.

Inputs are state columns of shape ``[N]``; ``bucket``, ``consecutive_frozen``,
``frozen_at_epoch`` and ``pruned`` are updated in place. Thresholds are float32 so numba and numpy
compare at exactly the same boundary. Returns int64 counts of shape ``[N_COUNTS]``, indexed by
the ``C_*`` constants.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "C_FREEZE", "C_LIGHT", "C_FOCUS", "C_HARD", "C_PRUNED", "C_NEWLY_PRUNED", "C_SEEN",
    "C_CORRECT_SEEN", "C_ENTERED_FREEZE", "C_CHANGED", "N_COUNTS",
    "repartition_numpy", "repartition_numba",
]

# Bucket counts use the Bucket integer values 0..3 as their index.
C_FREEZE, C_LIGHT, C_FOCUS, C_HARD = 0, 1, 2, 3
C_PRUNED = 4  # all pruned samples after this repartition
C_NEWLY_PRUNED = 5
C_SEEN = 6  # unpruned samples observed at least once
C_CORRECT_SEEN = 7
C_ENTERED_FREEZE = 8
C_CHANGED = 9  # unpruned samples whose bucket changed
N_COUNTS = 10

_FREEZE, _LIGHT, _FOCUS, _HARD = 0, 1, 2, 3
# Fixed chunk count keeps per-chunk partial sums independent of the thread count.
_CHUNKS = 256


def repartition_numpy(
    correct, confidence, quality, q_value, times_seen, pruned,
    bucket, consecutive_frozen, frozen_at_epoch,
    freeze_conf, freeze_quality, focus_conf, min_q, epoch, prune_after,
):
    """Readable vectorised reference."""
    counts = np.zeros(N_COUNTS, dtype=np.int64)
    live = pruned == 0
    ok = correct != 0
    freeze = ok & (confidence > freeze_conf) & (quality > freeze_quality) & (q_value >= min_q)
    new = np.where(
        freeze, _FREEZE, np.where(ok, _LIGHT, np.where(confidence <= focus_conf, _FOCUS, _HARD))
    ).astype(np.int8)
    counts[C_CHANGED] = int((live & (new != bucket)).sum())
    entered = live & freeze & (consecutive_frozen == 0)
    counts[C_ENTERED_FREEZE] = int(entered.sum())
    frozen_at_epoch[entered] = epoch
    frozen_at_epoch[live & ~freeze] = -1
    consecutive_frozen[live & freeze] += 1
    consecutive_frozen[live & ~freeze] = 0
    bucket[live] = new[live]
    newly = live & freeze & (prune_after > 0) & (consecutive_frozen >= prune_after)
    pruned[newly] = 1
    counts[C_NEWLY_PRUNED] = int(newly.sum())
    live = live & ~newly
    for b in (_FREEZE, _LIGHT, _FOCUS, _HARD):
        counts[b] = int((live & (bucket == b)).sum())
    counts[C_PRUNED] = int((pruned != 0).sum())
    seen = live & (times_seen > 0)
    counts[C_SEEN] = int(seen.sum())
    counts[C_CORRECT_SEEN] = int((seen & ok).sum())
    return counts


@numba.njit(cache=True, parallel=True, nogil=True)
def repartition_numba(
    correct, confidence, quality, q_value, times_seen, pruned,
    bucket, consecutive_frozen, frozen_at_epoch,
    freeze_conf, freeze_quality, focus_conf, min_q, epoch, prune_after,
):
    n = correct.shape[0]
    partial = np.zeros((_CHUNKS, N_COUNTS), dtype=np.int64)
    step = (n + _CHUNKS - 1) // _CHUNKS
    for c in numba.prange(_CHUNKS):
        lo = c * step
        hi = min(n, lo + step)
        for i in range(lo, hi):
            if pruned[i] != 0:
                partial[c, C_PRUNED] += 1
                continue
            ok = correct[i] != 0
            conf = confidence[i]
            if ok:
                if conf > freeze_conf and quality[i] > freeze_quality and q_value[i] >= min_q:
                    new = _FREEZE
                else:
                    new = _LIGHT
            elif conf <= focus_conf:
                new = _FOCUS
            else:
                new = _HARD
            if new != bucket[i]:
                bucket[i] = new
                partial[c, C_CHANGED] += 1
            if new == _FREEZE:
                cf = consecutive_frozen[i]
                if cf == 0:
                    frozen_at_epoch[i] = epoch
                    partial[c, C_ENTERED_FREEZE] += 1
                cf += 1
                consecutive_frozen[i] = cf
                if prune_after > 0 and cf >= prune_after:
                    pruned[i] = 1
                    partial[c, C_NEWLY_PRUNED] += 1
                    partial[c, C_PRUNED] += 1
                    continue
            else:
                if consecutive_frozen[i] != 0:
                    consecutive_frozen[i] = 0
                if frozen_at_epoch[i] != -1:
                    frozen_at_epoch[i] = -1
            partial[c, new] += 1
            if times_seen[i] > 0:
                partial[c, C_SEEN] += 1
                if ok:
                    partial[c, C_CORRECT_SEEN] += 1
    counts = np.zeros(N_COUNTS, dtype=np.int64)
    for c in range(_CHUNKS):
        for k in range(N_COUNTS):
            counts[k] += partial[c, k]
    return counts
