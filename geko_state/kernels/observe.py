"""Observe: fold a batch of training results into the per-sample state (DESIGN section 2).

Both implementations validate the whole batch first and mutate nothing when it is bad; they
return ``(code, index, skipped, newly_seen)`` where ``code`` is one of the ``OBS_*`` constants and ``index``
the position of the first offending element and
``newly_seen`` the number of samples observed for the first time. Arithmetic is done in float64 in the same order in
both, then stored as float32, so they agree bit for bit.

State columns (all shape ``[N]`` except ``window``: ``[N, LOSS_WINDOW]``) are updated in place.
Batch arrays have shape ``[B]``: ids int64, losses float32, confidences float32, correct uint8,
margins float32 (``[0]`` when the caller has none). ``aum`` is the running mean of the margins
with ``times_seen`` as its count (the first margin sets it): GEKO's trackers pass a margin with
every observation. A margin that is not finite (NaN: unknown) leaves ``aum`` unchanged.
``wrong_streak`` saturates at 255.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ..schema import LOSS_WINDOW

__all__ = [
    "OBS_OK",
    "OBS_BAD_ID",
    "OBS_NONFINITE_LOSS",
    "OBS_NEGATIVE_LOSS",
    "OBS_NONFINITE_CONFIDENCE",
    "OBS_CONFIDENCE_RANGE",
    "observe_numpy",
    "observe_numba",
    "observe_numba_serial",
    "observe_numba_parallel",
]

OBS_OK = 0
OBS_BAD_ID = 1
OBS_NONFINITE_LOSS = 2
OBS_NEGATIVE_LOSS = 3
OBS_NONFINITE_CONFIDENCE = 4
OBS_CONFIDENCE_RANGE = 5

# wrong_streak is a uint8 column: it stops counting here.
WRONG_STREAK_MAX = 255


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask)) if mask.any() else -1


def observe_numpy(
    times_seen, last_loss, confidence, correct, window, quality, q_value,
    aum, wrong_streak,
    ids, losses, confs, corr, margins, q_lr, loss_scale, skip_nonfinite,
):
    """Readable reference. Duplicate ids are applied in batch order, one occurrence per round."""
    n = times_seen.shape[0]
    bad_id = (ids < 0) | (ids >= n)
    if bad_id.any():
        return OBS_BAD_ID, _first(bad_id), 0, 0
    loss_nf = ~np.isfinite(losses)
    conf_nf = ~np.isfinite(confs)
    nonfinite = loss_nf | conf_nf
    if not skip_nonfinite:
        if loss_nf.any():
            return OBS_NONFINITE_LOSS, _first(loss_nf), 0, 0
        if conf_nf.any():
            return OBS_NONFINITE_CONFIDENCE, _first(conf_nf), 0, 0
    with np.errstate(invalid="ignore"):
        neg = ~nonfinite & (losses < 0)
        out = ~nonfinite & ((confs < 0) | (confs > 1))
    if neg.any():
        return OBS_NEGATIVE_LOSS, _first(neg), 0, 0
    if out.any():
        return OBS_CONFIDENCE_RANGE, _first(out), 0, 0

    keep = ~nonfinite
    skipped = int(nonfinite.sum())
    if margins.shape[0] == 0:
        margins = np.full(ids.shape[0], np.nan, dtype=np.float32)
    ids, losses, confs, corr, margins = ids[keep], losses[keep], confs[keep], corr[keep], margins[keep]
    # Occurrence rank of each id inside the batch: round r applies every id's r-th occurrence.
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.r_[0, np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, sorted_ids.size]))
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size) - run_start
    a = np.float64(q_lr)
    newly_seen = 0
    for r in range(int(rank.max()) + 1 if ids.size else 0):
        sel = rank == r
        s, l, c, k, mg = ids[sel], losses[sel], confs[sel], corr[sel], margins[sel]
        seen = times_seen[s].astype(np.int64)
        newly_seen += int((seen == 0).sum())
        now = k != 0
        wrong_streak[s] = np.where(now, 0, np.minimum(wrong_streak[s].astype(np.int64) + 1, WRONG_STREAK_MAX))
        has = np.isfinite(mg)
        sm, m = s[has], mg[has].astype(np.float64)
        old = aum[sm].astype(np.float64)
        aum[sm] = np.where(np.isnan(old), m, old + (m - old) / (seen[has] + 1)).astype(np.float32)
        window[s, seen % LOSS_WINDOW] = l
        cnt = np.minimum(seen + 1, LOSS_WINDOW)
        times_seen[s] = seen + 1
        last_loss[s] = l
        confidence[s] = c
        correct[s] = k

        w = window[s].astype(np.float64)
        valid = np.arange(LOSS_WINDOW)[None, :] < cnt[:, None]
        total = np.zeros(s.size)
        for j in range(LOSS_WINDOW):
            total = total + np.where(valid[:, j], w[:, j], 0.0)
        mean = total / cnt
        sq = np.zeros(s.size)
        for j in range(LOSS_WINDOW):
            d = w[:, j] - mean
            sq = sq + np.where(valid[:, j], d * d, 0.0)
        std = np.sqrt(sq / cnt)
        qual = np.maximum(0.0, 1.0 - np.minimum(std, 1.0))
        upd = cnt >= 2
        quality[s[upd]] = qual[upd].astype(np.float32)

        target = 1.0 - np.minimum(l.astype(np.float64) / np.float64(loss_scale), 1.0)
        q_value[s] = ((1.0 - a) * q_value[s].astype(np.float64) + a * target).astype(np.float32)
    return OBS_OK, -1, skipped, newly_seen


@numba.njit(cache=True, nogil=True)
def _validate(n, ids, losses, confs, skip_nonfinite):
    b = ids.shape[0]
    for i in range(b):
        if ids[i] < 0 or ids[i] >= n:
            return OBS_BAD_ID, i
    if not skip_nonfinite:
        for i in range(b):
            if not np.isfinite(losses[i]):
                return OBS_NONFINITE_LOSS, i
        for i in range(b):
            if not np.isfinite(confs[i]):
                return OBS_NONFINITE_CONFIDENCE, i
    for i in range(b):
        if np.isfinite(losses[i]) and np.isfinite(confs[i]) and losses[i] < 0:
            return OBS_NEGATIVE_LOSS, i
    for i in range(b):
        if np.isfinite(losses[i]) and np.isfinite(confs[i]) and (confs[i] < 0 or confs[i] > 1):
            return OBS_CONFIDENCE_RANGE, i
    return OBS_OK, -1


@intrinsic
def _prefetch_row(typingctx, arr, row):
    """Hint that ``arr[row]`` (its first element, for a 2-D array) is about to be written.

    Emits ``llvm.prefetch`` (write, keep in all cache levels): no effect on results, never faults.
    """
    if not isinstance(arr, types.Array) or not isinstance(row, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        row_ = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [row_] + [zero] * (aty.ndim - 1),
                                       wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, row), codegen


# Ids whose rows are prefetched ahead of their updates (8 or 9 columns each: within L1/L2).
PREFETCH_BLOCK = 64


@numba.njit(cache=True, nogil=True, inline="always")
def _apply(s, l, c, k, mg, times_seen, last_loss, confidence, correct, window, quality, q_value,
           aum, wrong_streak, a, scale):
    seen = np.int64(times_seen[s])
    if k != 0:
        wrong_streak[s] = 0
    elif wrong_streak[s] < WRONG_STREAK_MAX:
        wrong_streak[s] = wrong_streak[s] + 1
    if np.isfinite(mg):
        old = np.float64(aum[s])
        m = np.float64(mg)
        aum[s] = np.float32(m if np.isnan(old) else old + (m - old) / (seen + 1))
    window[s, seen % LOSS_WINDOW] = l
    cnt = min(seen + 1, LOSS_WINDOW)
    times_seen[s] = seen + 1
    last_loss[s] = l
    confidence[s] = c
    correct[s] = k
    if cnt >= 2:
        total = 0.0
        for j in range(LOSS_WINDOW):
            if j < cnt:
                total = total + np.float64(window[s, j])
        mean = total / cnt
        sq = 0.0
        for j in range(LOSS_WINDOW):
            if j < cnt:
                d = np.float64(window[s, j]) - mean
                sq = sq + d * d
        std = np.sqrt(sq / cnt)
        quality[s] = np.float32(max(0.0, 1.0 - min(std, 1.0)))
    target = 1.0 - min(np.float64(l) / scale, 1.0)
    q_value[s] = np.float32((1.0 - a) * np.float64(q_value[s]) + a * target)
    return seen == 0


@numba.njit(cache=True, nogil=True)
def observe_numba_serial(
    times_seen, last_loss, confidence, correct, window, quality, q_value,
    aum, wrong_streak,
    ids, losses, confs, corr, margins, q_lr, loss_scale, skip_nonfinite,
):
    code, idx = _validate(times_seen.shape[0], ids, losses, confs, skip_nonfinite)
    if code != OBS_OK:
        return code, idx, 0, 0
    a = np.float64(q_lr)
    scale = np.float64(loss_scale)
    skipped = 0
    newly_seen = 0
    b = ids.shape[0]
    has_m = margins.shape[0] > 0
    # Batch order, so duplicates behave like successive observations. Each block's rows are
    # prefetched first: on a large state every row is a cache (and TLB) miss in 7 columns, and the
    # update loop alone waits for them one id at a time; the prefetches overlap them.
    for lo in range(0, b, PREFETCH_BLOCK):
        hi = min(b, lo + PREFETCH_BLOCK)
        for i in range(lo, hi):
            s = ids[i]
            _prefetch_row(times_seen, s)
            _prefetch_row(window, s)
            _prefetch_row(last_loss, s)
            _prefetch_row(confidence, s)
            _prefetch_row(correct, s)
            _prefetch_row(quality, s)
            _prefetch_row(q_value, s)
            _prefetch_row(wrong_streak, s)
            if has_m:
                _prefetch_row(aum, s)
        for i in range(lo, hi):
            if not (np.isfinite(losses[i]) and np.isfinite(confs[i])):
                skipped += 1
                continue
            mg = margins[i] if has_m else np.float32(np.nan)
            newly_seen += _apply(ids[i], losses[i], confs[i], corr[i], mg, times_seen, last_loss, confidence,
                                 correct, window, quality, q_value, aum, wrong_streak, a, scale)
    return OBS_OK, -1, skipped, newly_seen


@numba.njit(cache=True, nogil=True, parallel=True)
def observe_numba_parallel(
    times_seen, last_loss, confidence, correct, window, quality, q_value,
    aum, wrong_streak,
    ids, losses, confs, corr, margins, q_lr, loss_scale, skip_nonfinite, parts,
):
    code, idx = _validate(times_seen.shape[0], ids, losses, confs, skip_nonfinite)
    if code != OBS_OK:
        return code, idx, 0, 0
    a = np.float64(q_lr)
    scale = np.float64(loss_scale)
    skipped = np.zeros(parts, dtype=np.int64)
    newly_seen = np.zeros(parts, dtype=np.int64)
    has_m = margins.shape[0] > 0
    # Thread t owns the ids with id % parts == t and walks the batch in order: every sample's
    # updates stay in batch order (duplicates included) and no two threads touch one sample.
    for t in numba.prange(parts):
        for i in range(ids.shape[0]):
            s = ids[i]
            if s % parts != t:
                continue
            if not (np.isfinite(losses[i]) and np.isfinite(confs[i])):
                skipped[t] += 1
                continue
            mg = margins[i] if has_m else np.float32(np.nan)
            newly_seen[t] += _apply(s, losses[i], confs[i], corr[i], mg, times_seen, last_loss, confidence,
                                    correct, window, quality, q_value, aum, wrong_streak, a, scale)
    return OBS_OK, -1, skipped.sum(), newly_seen.sum()


# Below this batch size starting threads costs more than it saves.
PARALLEL_MIN_BATCH = 1024


def observe_numba(
    times_seen, last_loss, confidence, correct, window, quality, q_value,
    aum, wrong_streak,
    ids, losses, confs, corr, margins, q_lr, loss_scale, skip_nonfinite,
):
    """Serial for small batches, id-partitioned across threads for large ones (same result)."""
    if ids.shape[0] >= PARALLEL_MIN_BATCH and numba.get_num_threads() > 1:
        return observe_numba_parallel(
            times_seen, last_loss, confidence, correct, window, quality, q_value,
            aum, wrong_streak,
            ids, losses, confs, corr, margins, q_lr, loss_scale, skip_nonfinite, numba.get_num_threads(),
        )
    return observe_numba_serial(
        times_seen, last_loss, confidence, correct, window, quality, q_value,
        aum, wrong_streak,
        ids, losses, confs, corr, margins, q_lr, loss_scale, skip_nonfinite,
    )
