"""Repartition: assign every unpruned sample to a bucket and advance freeze streaks / pruning.

The freeze rule is DESIGN's (correct, confidence, quality and Q above their thresholds) when
``freeze_margin`` is NaN, else margin-based: correct with ``aum > freeze_margin``.

Inputs are state columns of shape ``[N]``; ``bucket``, ``consecutive_frozen``,
``frozen_at_epoch`` and ``pruned`` are updated in place. Thresholds are float32 so numba and numpy
compare at exactly the same boundary. Returns int64 counts of shape ``[N_COUNTS]``, indexed by
the ``C_*`` constants. ``C_SEEN`` is left 0: the store keeps the number of samples ever observed
(observe counts first observations), which saves reading ``times_seen`` here; correct implies
seen, so ``C_CORRECT_SEEN`` needs no ``times_seen`` either. A sample's freeze streak is read from
its old bucket (FREEZE exactly when ``consecutive_frozen > 0``).
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
C_SEEN = 6  # unpruned samples observed at least once: filled by the caller (see module doc)
C_CORRECT_SEEN = 7
C_ENTERED_FREEZE = 8
C_CHANGED = 9  # unpruned samples whose bucket changed
N_COUNTS = 10

_FREEZE, _LIGHT, _FOCUS, _HARD = 0, 1, 2, 3
# Fixed chunk count keeps per-chunk partial sums independent of the thread count.
_CHUNKS = 256


def repartition_numpy(
    correct, confidence, quality, q_value, aum, pruned,
    bucket, consecutive_frozen, frozen_at_epoch,
    freeze_conf, freeze_quality, focus_conf, min_q, freeze_margin, epoch, prune_after,
):
    """Readable vectorised reference."""
    counts = np.zeros(N_COUNTS, dtype=np.int64)
    live = pruned == 0
    ok = correct != 0
    if np.isnan(freeze_margin):
        freeze = ok & (confidence > freeze_conf) & (quality > freeze_quality) & (q_value >= min_q)
    else:
        freeze = ok & (aum > freeze_margin)
    new = np.where(
        freeze, _FREEZE, np.where(ok, _LIGHT, np.where(confidence <= focus_conf, _FOCUS, _HARD))
    ).astype(np.int8)
    counts[C_CHANGED] = int((live & (new != bucket)).sum())
    old_freeze = bucket == _FREEZE
    entered = live & freeze & ~old_freeze
    counts[C_ENTERED_FREEZE] = int(entered.sum())
    frozen_at_epoch[entered] = epoch
    frozen_at_epoch[live & ~freeze] = -1
    consecutive_frozen[live & freeze & old_freeze] += 1
    consecutive_frozen[entered] = 1
    consecutive_frozen[live & ~freeze] = 0
    bucket[live] = new[live]
    newly = live & freeze & (prune_after > 0) & (consecutive_frozen >= prune_after)
    pruned[newly] = 1
    counts[C_NEWLY_PRUNED] = int(newly.sum())
    live = live & ~newly
    for b in (_FREEZE, _LIGHT, _FOCUS, _HARD):
        counts[b] = int((live & (bucket == b)).sum())
    counts[C_PRUNED] = int((pruned != 0).sum())
    counts[C_CORRECT_SEEN] = int((live & ok).sum())
    return counts


@numba.njit(cache=True, parallel=True, nogil=True)
def repartition_numba(
    correct, confidence, quality, q_value, aum, pruned,
    bucket, consecutive_frozen, frozen_at_epoch,
    freeze_conf, freeze_quality, focus_conf, min_q, freeze_margin, epoch, prune_after,
):
    n = correct.shape[0]
    use_margin = not np.isnan(freeze_margin)
    partial = np.zeros((_CHUNKS, N_COUNTS), dtype=np.int64)
    step = (n + _CHUNKS - 1) // _CHUNKS
    for c in numba.prange(_CHUNKS):
        lo = c * step
        hi = min(n, lo + step)
        # Bucket choice and counters are computed without branches: on mixed buckets an if/elif
        # chain mispredicts and costs more than the memory traffic. Only the rare writes branch.
        n_freeze = n_light = n_focus = n_hard = 0
        n_pruned = n_new_pruned = n_correct_seen = n_entered = n_changed = 0
        for i in range(lo, hi):
            if pruned[i] != 0:
                n_pruned += 1
                continue
            ok = correct[i] != 0
            conf = confidence[i]
            if use_margin:  # loop-invariant: the other rule's columns are never read
                fr = ok & (aum[i] > freeze_margin)
            else:
                fr = ok & (conf > freeze_conf) & (quality[i] > freeze_quality) & (q_value[i] >= min_q)
            new = np.int8(0 if fr else (1 if ok else 2 + np.int8(conf > focus_conf)))
            old = bucket[i]
            if new != old:
                bucket[i] = new
            n_changed += new != old
            # A sample is in a freeze streak exactly when its old bucket is FREEZE, so the streak
            # columns are only read and written on the (few) samples entering, in or leaving it.
            if fr:
                cf = consecutive_frozen[i] + 1
                if old != 0:
                    cf = 1
                    frozen_at_epoch[i] = epoch
                    n_entered += 1
                consecutive_frozen[i] = cf
                if prune_after > 0 and cf >= prune_after:
                    pruned[i] = 1
                    n_new_pruned += 1
                    n_pruned += 1
                    continue
            elif old == 0:
                consecutive_frozen[i] = 0
                frozen_at_epoch[i] = -1
            n_freeze += fr
            n_light += new == 1
            n_focus += new == 2
            n_hard += new == 3
            n_correct_seen += ok
        partial[c, C_FREEZE] = n_freeze
        partial[c, C_LIGHT] = n_light
        partial[c, C_FOCUS] = n_focus
        partial[c, C_HARD] = n_hard
        partial[c, C_PRUNED] = n_pruned
        partial[c, C_NEWLY_PRUNED] = n_new_pruned
        partial[c, C_CORRECT_SEEN] = n_correct_seen
        partial[c, C_ENTERED_FREEZE] = n_entered
        partial[c, C_CHANGED] = n_changed
    counts = np.zeros(N_COUNTS, dtype=np.int64)
    for c in range(_CHUNKS):
        for k in range(N_COUNTS):
            counts[k] += partial[c, k]
    return counts
