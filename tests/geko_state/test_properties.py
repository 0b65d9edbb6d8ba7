"""Invariants of the engine under random sequences of observe / repartition / plan calls (hypothesis).

Each example runs one sequence on two stores, one per kernel backend, and checks after every step:
bucket counts cover exactly the unpruned samples; q_value, quality and confidence stay in [0, 1];
no engine plan holds a FREEZE, pruned or over-limit sample (``times_seen >= max_times_seen``), and
every drawn sample weighs > 0 in its segment (unless no eligible one does: then all are drawn
uniformly); the selection policies keep their own promises (GEKO's keep_fraction: only unpruned,
observed, under-limit mastered samples kept, distinct, their weights summing to the pool); and the
numba and numpy backends hold byte-identical state and draw identical plans.
"""
import warnings

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pytest import approx

from geko_state import PRESETS, Bucket, StateStore, plan_selection
from geko_state.planning import class_weight_vector
from geko_state.selection import SelectionConfig
from tests.conftest import snapshot

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Values on and around the thresholds of every preset, mixed with arbitrary ones.
LOSSES = st.one_of(st.sampled_from([0.0, 0.01, 0.3, 0.5, 1.0, 10.0, 25.0]),
                   st.floats(0, 30, allow_nan=False, width=32))
CONFIDENCES = st.one_of(st.sampled_from([0.0, 0.6, 0.61, 0.75, 0.8, 0.85, 0.86, 0.9, 0.95, 1.0]),
                        st.floats(0, 1, width=32))
BUDGETS = st.one_of(st.sampled_from(["trainable", "full", 0.5, 1.0]), st.integers(0, 40))


@st.composite
def configs(draw):
    base = PRESETS[draw(st.sampled_from(sorted(PRESETS)))]
    return base.replace(
        log_bucket_stats=False,
        # a fast Q (1.0: the last loss alone) lets samples freeze after two good passes, still
        # under max_times_seen, so plans meet FREEZE and pruned samples they could otherwise draw
        q_value_lr=draw(st.sampled_from([base.q_value_lr, 1.0])),
        max_times_seen=draw(st.sampled_from([1, 2, 4, 8, 50])),  # mostly small, so samples reach it
        prune_frozen_after=draw(st.integers(0, 3)),
        repartition_every=draw(st.integers(1, 2)),
    )


@st.composite
def observe_op(draw, n):
    b = draw(st.integers(0, 2 * n))
    ids = draw(st.lists(st.integers(0, n - 1), min_size=b, max_size=b))  # duplicates included
    return ("observe", ids, draw(st.lists(LOSSES, min_size=b, max_size=b)),
            draw(st.lists(CONFIDENCES, min_size=b, max_size=b)), draw(st.lists(st.booleans(), min_size=b, max_size=b)))


@st.composite
def master_op(draw, n):
    """Several confident, correct, low-loss passes over some samples: they reach FREEZE (and pruning)."""
    ids = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    return ("master", ids, draw(st.integers(2, 12)))


@st.composite
def plan_op(draw):
    return ("plan", draw(st.integers(0, 3)), draw(BUDGETS), draw(st.booleans()),
            draw(st.sampled_from([None, (0.0, 0.3), (0.3, 0.7), (0.6, 1.0)])))


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 24))
    # Epochs of training (a few observe batches, some of them "mastering" passes), each closed by a
    # repartition and followed by a plan, as a trainer does; plans are also drawn mid-epoch.
    train = st.one_of(observe_op(n), master_op(n), plan_op())
    epoch = st.tuples(st.lists(train, max_size=3), plan_op())
    ops = []
    for train_ops, plan in draw(st.lists(epoch, min_size=1, max_size=6)):
        ops += [*train_ops, ("repartition",), plan]
    return n, draw(configs()), ops


def _apply(store: StateStore, op) -> None:
    if op[0] == "observe":
        _, ids, losses, confs, correct = op
        store.observe(np.array(ids, dtype=np.int64), np.array(losses, dtype=np.float32),
                      np.array(confs, dtype=np.float32), np.array(correct, dtype=bool))
    elif op[0] == "master":
        _, ids, times = op
        ids = np.array(ids * times, dtype=np.int64)
        store.observe(ids, np.full(ids.size, 0.01, np.float32), np.full(ids.size, 0.97, np.float32),
                      np.ones(ids.size, bool))
    elif op[0] == "repartition":
        stats = store.repartition()
        assert sum(stats.counts.values()) == stats.active == store.n_samples - stats.pruned
        assert stats.counts == store.bucket_counts()


def _check_state(store: StateStore) -> None:
    for name in ("q_value", "quality", "confidence"):
        v = store.column(name)
        assert np.all((v >= 0) & (v <= 1)), (name, v)
    pruned = store.column("pruned") != 0
    assert sum(store.bucket_counts().values()) == store.n_samples - int(pruned.sum())
    # pruning is only ever of FREEZE samples, and for good
    assert np.all(store.column("bucket")[pruned] == int(Bucket.FREEZE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = store.weights()
    excluded = pruned | (store.column("bucket") == int(Bucket.FREEZE)) | (
        store.column("times_seen") >= store.config.max_times_seen)
    assert np.all(w[excluded] == 0) and np.all(w >= 0)


def _check_engine_plan(store: StateStore, plan, segments, replacement: bool) -> None:
    ids = plan.ids
    bucket, pruned, seen = store.column("bucket"), store.column("pruned"), store.column("times_seen")
    assert ids.dtype == np.int64 and np.all((ids >= 0) & (ids < store.n_samples))
    assert not np.any(bucket[ids] == int(Bucket.FREEZE)), "FREEZE sample drawn"
    assert not np.any(pruned[ids]), "pruned sample drawn"
    assert not np.any(seen[ids] >= store.config.max_times_seen), "sample past max_times_seen drawn"
    start = 0
    assert len(plan.segment_ends) == len(segments)
    eligible = (bucket != int(Bucket.FREEZE)) & (pruned == 0) & (seen < store.config.max_times_seen)
    for end, seg in zip(plan.segment_ends, segments):
        w = class_weight_vector(seg.weights)
        if np.any(w[bucket[eligible]] > 0):  # else the segment draws the eligible samples uniformly
            assert np.all(w[bucket[ids[start:end]]] > 0), "sample drawn from a bucket weighing 0"
        start = int(end)
    if not replacement:
        assert np.unique(ids).size == ids.size


def _plans(store: StateStore, op):
    """Every kind of plan for the current state, each checked; returns their ids for the backend
    comparison."""
    _, seed, budget, replacement, progress = op
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the plan is empty" / "no progress given" are legal here
        segs = store.weight_segments(progress=progress)
        plan = store.build_plan(seed, budget=budget, replacement=replacement, progress=progress)
        _check_engine_plan(store, plan, segs, replacement)
        shard = store.plan_epoch(seed, budget=budget, replacement=replacement, progress=progress, rank=1, world_size=2)
        assert np.array_equal(shard, plan.shard(1, 2))
        out = [plan.ids]
        same = plan_selection(store, "geko", seed=seed, budget=budget, replacement=replacement)
        if progress is None:
            assert np.array_equal(same.ids, plan.ids)  # bit-identical to the engine's plan
        out.append(same.ids)

        recheck = plan_selection(store, SelectionConfig(recheck_fraction=0.5), seed=seed, budget=budget,
                                 replacement=replacement)
        k = recheck.extra.get("recheck", 0)
        base, extra = recheck.ids[: len(recheck) - k], recheck.ids[len(recheck) - k:]
        assert np.array_equal(base, same.ids)
        b, p, t = store.column("bucket"), store.column("pruned"), store.column("times_seen")
        assert np.all(b[extra] == int(Bucket.FREEZE)) and not np.any(p[extra])
        assert np.all(t[extra] < store.config.max_times_seen) and np.unique(extra).size == extra.size
        out.append(recheck.ids)

        keep = plan_selection(store, SelectionConfig(keep_fraction=0.5), seed=seed, budget=budget,
                              replacement=replacement)
        mastered = np.isin(b[keep.ids], [int(Bucket.FREEZE), int(Bucket.LIGHT)])
        kept = keep.ids[mastered]
        assert not np.any(p[keep.ids]) and np.all(t[keep.ids] < store.config.max_times_seen)
        assert np.all(t[kept] > 0) and np.unique(kept).size == kept.size == keep.extra["keep"]
        assert np.all(keep.loss_weights[kept] >= 1) and np.all(keep.loss_weights[keep.ids[~mastered]] == 1)
        assert keep.loss_weights[kept].astype(np.float64).sum() == approx(keep.extra["keep_pool"], rel=1e-5)
        out += [keep.ids, keep.loss_weights]

        live = np.flatnonzero(store.column("pruned") == 0)
        for policy in ("uniform", "infobatch", "random_subset"):
            ids = plan_selection(store, policy, seed=seed, budget=budget).ids
            assert not np.any(p[ids]) and np.unique(ids).size == ids.size, policy
            if policy == "uniform":
                assert np.array_equal(np.sort(ids), live)
            out.append(ids)
        annealed = plan_selection(store, SelectionConfig(anneal_fraction=1.0), seed=seed,
                                  total_epochs=store.epoch + 1).ids
        assert np.array_equal(np.sort(annealed), live)  # the last epochs train on every unpruned sample
    return out


@SETTINGS
@given(scenarios())
def test_invariants_hold_and_backends_agree_after_every_step(scenario):
    n, config, ops = scenario
    stores = {k: StateStore.create(n, None, config, kernels=k) for k in ("numba", "numpy")}
    seen: set[str] = set()
    for op in ops:
        results = {}
        for name, store in stores.items():
            if op[0] == "plan":
                results[name] = _plans(store, op)
            else:
                _apply(store, op)
            _check_state(store)
        nb, np_ = stores["numba"], stores["numpy"]
        assert snapshot(nb) == snapshot(np_), f"backends disagree after {op[0]}"
        assert nb._meta == np_._meta
        if op[0] == "plan":
            for a, b in zip(results["numba"], results["numpy"]):
                assert np.array_equal(a, b), "backends drew different plans"
            live = np_.column("pruned") == 0
            seen |= {"planned with " + what for what, present in (
                ("FREEZE", np.any(live & (np_.column("bucket") == int(Bucket.FREEZE)))),
                ("pruned", np.any(~live)),
                ("over-limit", np.any(live & (np_.column("times_seen") >= config.max_times_seen))),
                ("pruned under the limit", np.any(~live & (np_.column("times_seen") < config.max_times_seen))),
            ) if present}
    for what in sorted(seen):  # what the plans were tested against: --hypothesis-show-statistics
        event(what)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(1, 16), configs(), st.lists(st.tuples(st.integers(0, 15), LOSSES, CONFIDENCES, st.booleans()),
                                               min_size=1, max_size=40))
def test_duplicates_in_a_batch_apply_in_order(n, config, rows):
    """One batch with repeated ids equals the same observations made one at a time."""
    rows = [(i % n, lo, c, k) for i, lo, c, k in rows]
    ids, losses, confs, correct = (np.array(x) for x in zip(*rows))
    for kernels in ("numba", "numpy"):
        batch = StateStore.create(n, None, config, kernels=kernels)
        batch.observe(ids, losses.astype(np.float32), confs.astype(np.float32), correct)
        single = StateStore.create(n, None, config, kernels=kernels)
        for row in rows:
            single.observe([row[0]], np.float32([row[1]]), np.float32([row[2]]), [row[3]])
        assert snapshot(batch) == snapshot(single)
        _check_state(batch)
