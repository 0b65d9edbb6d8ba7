"""Selection policies: GEKO and its baselines planned from the same state."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geko_state import (
    SELECTION_POLICIES,
    Bucket,
    ConfigError,
    EpochPlan,
    GEKOConfig,
    InputError,
    SelectionConfig,
    SelectionKind,
    StateStore,
    plan_selection,
)
from geko_state.selection import (
    anneal_epochs,
    infobatch_plan,
    is_annealed,
    keep_mastered,
    recheck_ids,
    rs2_plan,
    spread_into_segments,
    subset_size,
)

F32 = np.float32


def _mixed(n=4000, seed=0, pruned_every=0, unseen_every=0, **cfg) -> StateStore:
    """Buckets FREEZE, LIGHT, FOCUS, HARD by id % 4, random last losses; optionally every k-th
    sample pruned and every j-th never observed (NaN loss)."""
    s = StateStore.create(n, config=GEKOConfig(log_bucket_stats=False, **{"use_curriculum": False, **cfg}))
    b = np.arange(n) % 4
    cols = s._storage.columns
    cols["correct"][:] = b <= 1
    cols["confidence"][:] = np.where(b == 0, F32(0.95), np.where(b == 3, F32(0.9), F32(0.3)))
    cols["quality"][:] = F32(0.95)
    cols["q_value"][:] = F32(0.95)
    cols["times_seen"][:] = 1
    cols["last_loss"][:] = np.random.default_rng(seed).exponential(1.0, n).astype(F32)
    s.repartition()
    if unseen_every:
        cols["last_loss"][::unseen_every] = np.nan
    if pruned_every:
        cols["pruned"][1::pruned_every] = 1
    return s


def _live(s: StateStore) -> np.ndarray:
    return np.flatnonzero(s.column("pruned") == 0)


# ---------------------------------------------------------------------- geko
@pytest.mark.parametrize("kw", [{}, {"replacement": False}, {"budget": "full"}, {"budget": 0.3},
                                {"budget": 500, "replacement": False}])
def test_geko_policy_is_the_store_plan_bit_for_bit(kw):
    s = _mixed(pruned_every=9)
    for total in (None, 5):
        a = plan_selection(s, SelectionConfig(), seed=3, total_epochs=total, **kw)
        b = s.build_plan(3, total_epochs=total, **kw)
        assert a.ids.dtype == np.int64 and a.ids.tobytes() == b.ids.tobytes()
        np.testing.assert_array_equal(a.segment_ends, b.segment_ends)
        assert a.phases == b.phases and a.loss_weights is None
    # with the curriculum on, the phases come through too
    c = _mixed(use_curriculum=True)
    a = plan_selection(c, "geko", seed=1, total_epochs=3)
    b = c.build_plan(1, total_epochs=3)
    assert a.ids.tobytes() == b.ids.tobytes() and a.phases == b.phases and len(a.phases) > 1


def test_geko_recheck_appends_distinct_eligible_freeze_samples():
    s = _mixed(n=4000, pruned_every=8, max_times_seen=3)
    cols = s._storage.columns
    cols["times_seen"][::12] = 3  # some FREEZE samples (id % 4 == 0) past the limit
    base = s.build_plan(5)
    plan = plan_selection(s, SelectionConfig(recheck_fraction=0.05), seed=5)
    bucket, pruned, seen = s.column("bucket"), s.column("pruned"), s.column("times_seen")
    pool = np.flatnonzero((bucket == Bucket.FREEZE) & (pruned == 0) & (seen < 3))
    k = math.floor(0.05 * pool.size + 0.5)
    assert k > 0 and len(plan) == len(base) + k
    assert plan.ids[: len(base)].tobytes() == base.ids.tobytes()
    extra = plan.ids[len(base):]
    assert np.unique(extra).size == k and np.isin(extra, pool).all()
    assert plan.segment_ends[-1] == len(plan) and plan.requested == base.requested + k
    assert plan.extra["recheck"] == k
    assert not np.array_equal(extra, np.sort(extra))  # random order, not by id


def test_geko_anneal_trains_full_data_in_the_last_epochs():
    s = _mixed(pruned_every=7)
    sel = SelectionConfig(anneal_fraction=0.5)
    for epoch in (2, 3):  # ceil(0.5 * 4) = 2 last epochs
        plan = plan_selection(s, sel, seed=1, epoch=epoch, total_epochs=4)
        np.testing.assert_array_equal(np.sort(plan.ids), _live(s))
        assert plan.phases == (None,) and plan.extra["annealed"]
    early = plan_selection(s, sel, seed=1, epoch=1, total_epochs=4)
    assert early.ids.tobytes() == s.build_plan(1, epoch=1, total_epochs=4).ids.tobytes()
    # no total_epochs: nothing to anneal towards
    assert plan_selection(s, sel, seed=1, epoch=3).ids.tobytes() == s.build_plan(1, epoch=3).ids.tobytes()


# ---------------------------------------------------------------------- geko keep_fraction
def _mastered(s: StateStore) -> np.ndarray:
    """bool [N]: the samples keep_fraction draws from (FREEZE or LIGHT, unpruned, observed, under the limit)."""
    b = s.column("bucket")
    seen = s.column("times_seen")
    return (((b == Bucket.FREEZE) | (b == Bucket.LIGHT)) & (s.column("pruned") == 0) & (seen > 0)
            & (seen < s.config.max_times_seen))


@pytest.mark.parametrize("kw", [{}, {"replacement": False}, {"budget": "full"}, {"budget": 300, "replacement": False}])
def test_geko_keep_trains_a_share_of_each_mastered_bucket_reweighted_and_plans_the_rest_as_today(kw):
    s = _mixed(n=4000, pruned_every=10, max_times_seen=3)
    cols = s._storage.columns
    cols["times_seen"][4::40] = 3  # some FREEZE samples past the limit
    cols["times_seen"][5::40] = 0  # some LIGHT samples never observed
    pool = _mastered(s)
    b = s.column("bucket")
    plan = plan_selection(s, SelectionConfig(keep_fraction=0.5), seed=3, epoch=2, **kw)
    ids, w = plan.ids, plan.loss_weights
    kept = ids[np.isin(b[ids], [Bucket.FREEZE, Bucket.LIGHT])]
    assert pool[kept].all() and np.unique(kept).size == kept.size  # pruned, unseen, over-limit: never drawn
    assert w.dtype == np.float32 and w.shape == (4000,)
    for bucket in (Bucket.FREEZE, Bucket.LIGHT):
        n_pool = int((pool & (b == bucket)).sum())
        mine = kept[b[kept] == bucket]
        assert mine.size == math.floor(0.5 * n_pool + 0.5)  # the exact share, rounded half up
        np.testing.assert_array_equal(w[mine], np.float32(n_pool / mine.size))
        assert abs(w[mine[0]] - 2.0) < 2.0 / n_pool + 1e-6  # 1 / keep_fraction up to the rounding
    assert (w[np.setdiff1d(np.arange(4000), kept)] == 1.0).all()
    # HARD and FOCUS are planned as today: these weights (3, 1, 0) give LIGHT nothing anyway
    base = s.build_plan(3, epoch=2, **kw)
    rest = ids[~np.isin(ids, kept)]
    if kw.get("replacement", True):
        assert rest.tobytes() == base.ids.tobytes()
    else:  # the same draw, from a stream that no longer shuffles LIGHT first
        assert rest.size == base.ids.size and np.unique(rest).size == rest.size
        assert np.isin(b[rest], [Bucket.HARD, Bucket.FOCUS]).all()
    assert plan.extra == {"keep": kept.size, "keep_pool": int(pool.sum())}
    weighted = np.isin(b, [Bucket.HARD, Bucket.FOCUS]) & (s.column("pruned") == 0)  # all under the limit here
    assert plan.requested == base.requested + kept.size and plan.eligible == weighted.sum() + pool.sum()
    assert plan.segment_ends.tolist() == [len(plan)]
    assert not np.array_equal(kept, np.sort(kept))  # random order, not by id


def test_geko_keep_takes_light_out_of_the_weighted_draw_and_spreads_the_kept_through_the_phases():
    s = _mixed(n=4000, use_curriculum=True)
    b = s.column("bucket")
    for epoch in range(3):
        plan = plan_selection(s, SelectionConfig(keep_fraction=0.25), seed=1, epoch=epoch, total_epochs=3)
        ref = s.build_plan(1, epoch=epoch, total_epochs=3)
        assert plan.phases == ref.phases
        starts = np.r_[0, plan.segment_ends[:-1]]
        kept_per_segment = [int(np.isin(b[plan.ids[a:e]], [Bucket.FREEZE, Bucket.LIGHT]).sum())
                            for a, e in zip(starts, plan.segment_ends)]
        assert sum(kept_per_segment) == plan.extra["keep"] == 500  # 1000 FREEZE and 1000 LIGHT, a quarter each
        fractions = [x.fraction for x in s.weight_segments(total_epochs=3, epoch=epoch)]
        np.testing.assert_allclose(kept_per_segment, np.array(fractions) * 500, atol=1)
        # the weighted draws keep their order; LIGHT comes only through the keep draw
        weighted = plan.ids[~np.isin(b[plan.ids], [Bucket.FREEZE, Bucket.LIGHT])]
        assert weighted.size == plan.requested - 500 and weighted.size > 0
    # a LIGHT weight > 0 (WARMUP's 3) no longer draws LIGHT with weight 1
    assert plan_selection(s, SelectionConfig(keep_fraction=0.25), seed=1, epoch=0, total_epochs=3).loss_weights[
        b == Bucket.LIGHT].max() == 4.0


def test_geko_keep_anneals_to_full_data_with_weight_1():
    s = _mixed(pruned_every=7)
    sel = SelectionConfig(keep_fraction=0.5, anneal_fraction=0.25)
    last = plan_selection(s, sel, seed=1, epoch=3, total_epochs=4)  # ceil(0.25 * 4) = 1 last epoch
    np.testing.assert_array_equal(np.sort(last.ids), _live(s))
    assert last.loss_weights is None and last.extra["annealed"]
    before = plan_selection(s, sel, seed=1, epoch=2, total_epochs=4)
    assert before.loss_weights is not None and len(before) < len(_live(s))


def test_geko_keep_is_unbiased_over_seeds():
    s = _mixed(n=1001, pruned_every=9)
    pool = np.flatnonzero(_mastered(s))
    grad = np.random.default_rng(0).normal(size=(1001, 3))  # a stand-in per-sample gradient
    want = grad[pool].sum(0)
    runs, hits, total = 400, np.zeros(1001), np.zeros(3)
    for seed in range(runs):
        plan = plan_selection(s, SelectionConfig(keep_fraction=0.3), seed=seed, epoch=seed % 5)
        kept = plan.ids[np.isin(plan.ids, pool)]
        w = plan.loss_weights[kept].astype(np.float64)
        assert w.sum() == pytest.approx(pool.size, rel=1e-6)  # every epoch, not only on average
        total += (w[:, None] * grad[kept]).sum(0)
        hits[kept] += 1
    # the mean re-weighted gradient of the kept samples is the full-data one (sd of the mean ~ 1.3 each)
    sd = np.sqrt(runs * (1 / 0.3 - 1) * (grad[pool] ** 2).sum(0)) / runs
    assert (np.abs(total / runs - want) < 4 * sd).all()
    # each pool sample is kept about 30% of the time; samples outside the pool never
    assert abs(hits[pool].mean() / runs - 0.3) < 0.005 and hits[np.setdiff1d(np.arange(1001), pool)].max() == 0


def test_keep_mastered_and_spread_pure_function_edge_cases():
    rng = np.random.default_rng(0)
    hard = np.full(5, int(Bucket.HARD), np.uint8)
    ids, w, pool = keep_mastered(hard, np.zeros(5, np.uint8), np.ones(5, np.int32), 50, 0.5, rng)
    assert ids.dtype == np.int64 and w.dtype == np.float32 and ids.size == w.size == pool == 0
    # tiny pools: one FREEZE (kept, weight 1 rather than never kept) and three LIGHT (2 kept, weight 1.5)
    bucket = np.array([0, 1, 1, 1, 3], np.uint8)
    ids, w, pool = keep_mastered(bucket, np.zeros(5, np.uint8), np.ones(5, np.int32), 50, 0.1, rng)
    assert pool == 4 and sorted(ids.tolist())[:1] == [0] and ids.size == 2
    ids, w, pool = keep_mastered(bucket, np.zeros(5, np.uint8), np.ones(5, np.int32), 50, 0.5, rng)
    assert dict(zip(ids.tolist(), w.tolist()))[0] == 1.0 and sorted(w.tolist()) == [1.0, 1.5, 1.5]
    ids, w, pool = keep_mastered(bucket, np.zeros(5, np.uint8), np.ones(5, np.int32), 50, 1.0, rng)
    assert sorted(ids.tolist()) == [0, 1, 2, 3] and (w == 1.0).all()
    plan, ends = np.arange(10, 20, dtype=np.int64), np.array([4, 4, 10], np.int64)
    extra = np.array([1, 2, 3, 4, 5], np.int64)
    out, out_ends = spread_into_segments(plan, ends, extra, [0.4, 0.2, 0.4], rng)
    assert out_ends.tolist() == [6, 7, 15] and sorted(out.tolist()) == sorted(plan.tolist() + extra.tolist())
    assert out[:6][out[:6] >= 10].tolist() == [10, 11, 12, 13] and out[6].tolist() == 3  # plan order kept
    assert out[out >= 10].tolist() == plan.tolist()


# ---------------------------------------------------------------------- uniform, random_subset
def test_uniform_is_every_unpruned_sample_once_in_random_order():
    s = _mixed(pruned_every=5)
    for budget in ("trainable", "full", 10, 0.1):  # uniform is full-data training whatever the budget
        plan = plan_selection(s, "uniform", seed=2, budget=budget)
        assert plan.ids.dtype == np.int64
        np.testing.assert_array_equal(np.sort(plan.ids), _live(s))
        assert (s.column("pruned")[plan.ids] == 0).all()
    assert not np.array_equal(plan.ids, np.sort(plan.ids))
    assert plan.phases == (None,) and plan.segment_ends.tolist() == [len(plan)]
    assert plan.eligible == plan.requested == len(_live(s)) and plan.loss_weights is None


@pytest.mark.parametrize("budget, expected", [(250, 250), (0.1, 400), (10**9, None), ("trainable", None),
                                              ("full", None), (0, 0)])
def test_random_subset_size_follows_the_budget(budget, expected):
    s = _mixed(n=4000, pruned_every=4)
    live = _live(s)
    plan = plan_selection(s, "random_subset", seed=4, budget=budget)
    assert len(plan) == (live.size if expected is None else expected)
    assert plan.ids.dtype == np.int64 and np.unique(plan.ids).size == len(plan)
    assert np.isin(plan.ids, live).all()
    assert plan.eligible == live.size and plan.requested == len(plan)


def test_random_subset_is_uniform_over_unpruned_samples():
    s = _mixed(n=1000)
    counts = np.zeros(1000)
    for epoch in range(200):
        counts[plan_selection(s, "random_subset", seed=0, epoch=epoch, budget=0.5).ids] += 1
    # each sample is drawn with probability 1/2: 100 of 200 epochs, sd about 7
    assert abs(counts.mean() - 100) < 1e-9 and counts.min() > 65 and counts.max() < 135


# ---------------------------------------------------------------------- rs2
@pytest.mark.parametrize("budget, expected", [(250, 250), (0.1, 400), (10**9, None), ("trainable", None),
                                              ("full", None), (0, 0)])
def test_rs2_size_follows_the_budget_as_random_subset(budget, expected):
    s = _mixed(n=4000, pruned_every=4)
    live = _live(s)
    for epoch in range(3):
        plan = plan_selection(s, "rs2", seed=4, epoch=epoch, budget=budget)
        assert len(plan) == (live.size if expected is None else expected)
        assert len(plan) == len(plan_selection(s, "random_subset", seed=4, epoch=epoch, budget=budget))
        assert plan.ids.dtype == np.int64 and np.isin(plan.ids, live).all()  # pruned ids never drawn
        assert plan.eligible == live.size and plan.requested == len(plan) and plan.loss_weights is None
        assert plan.phases == (None,) and plan.extra["policy"] == "rs2"
    assert subset_size(0.1, 4000, 3000) == 400 and subset_size("trainable", 4000, 3000) == 3000


@pytest.mark.parametrize("n, k", [(100, 30), (100, 25), (100, 100), (7, 3), (10, 1)])
def test_rs2_sees_every_sample_once_before_any_twice(n, k):
    pruned = np.zeros(n, np.uint8)
    pruned[::9] = 1  # pruned ids are never drawn
    live = np.flatnonzero(pruned == 0)
    k_eff = min(k, live.size)
    epochs = 3 * math.ceil(live.size / k_eff) + 1  # several passes, crossing permutation boundaries
    stream = np.concatenate([rs2_plan(pruned, k, seed=5, epoch=e) for e in range(epochs)])
    assert all(rs2_plan(pruned, k, 5, e).shape == (k_eff,) for e in range(epochs))
    # the epochs read consecutive slices of permutations of the live ids laid end to end
    for r in range(len(stream) // live.size):
        chunk = stream[r * live.size:(r + 1) * live.size]
        np.testing.assert_array_equal(np.sort(chunk), live)
    # over ceil(n/k) epochs every live id appears, none twice before all have
    first = np.concatenate([rs2_plan(pruned, k, 5, e) for e in range(math.ceil(live.size / k_eff))])
    assert set(first.tolist()) == set(live.tolist())
    assert np.unique(first[:live.size]).size == live.size


def test_rs2_is_deterministic_in_seed_and_epoch_and_reshuffles_each_pass():
    pruned = np.zeros(50, np.uint8)
    a = [rs2_plan(pruned, 20, seed=1, epoch=e) for e in range(10)]
    b = [rs2_plan(pruned, 20, seed=1, epoch=e) for e in reversed(range(10))][::-1]  # no hidden state
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert not np.array_equal(a[0], rs2_plan(pruned, 20, seed=2, epoch=0))
    stream = np.concatenate(a)
    assert not np.array_equal(stream[:50], stream[50:100])  # a fresh permutation for each pass
    assert rs2_plan(np.ones(5, np.uint8), 3, 0, 4).shape == (0,)  # everything pruned: nothing to draw
    assert rs2_plan(pruned, 0, 0, 4).dtype == np.int64


# ---------------------------------------------------------------------- infobatch
def test_infobatch_drops_below_mean_samples_with_probability_p_and_reweights_the_rest():
    n = 20_000
    s = _mixed(n=n, pruned_every=10, unseen_every=7)
    p = 0.5
    plan = plan_selection(s, "infobatch", seed=11, epoch=2, total_epochs=8)
    loss, pruned = s.column("last_loss"), s.column("pruned")
    live = pruned == 0
    unseen = live & np.isnan(loss)
    seen = live & ~np.isnan(loss)
    low = seen & (loss < F32(loss[seen].astype(np.float64).mean()))
    kept = np.zeros(n, bool)
    kept[plan.ids] = True
    assert np.unique(plan.ids).size == len(plan) and not kept[~live].any()
    assert kept[unseen].all() and kept[seen & ~low].all()  # unseen and high-loss samples always kept
    n_low, dropped = int(low.sum()), int((low & ~kept).sum())
    sd = math.sqrt(n_low * p * (1 - p))
    assert n_low > 5000 and abs(dropped - p * n_low) < 4 * sd
    w = plan.loss_weights
    assert w.dtype == np.float32 and w.shape == (n,)
    assert (w[low & kept] == 2.0).all() and (w[kept & ~low] == 1.0).all()
    assert plan.phases == (None,) and plan.eligible == live.sum() and plan.requested == len(plan)


def test_infobatch_anneals_to_full_data_in_the_last_epoch():
    s = _mixed(pruned_every=6)
    last = plan_selection(s, "infobatch", seed=0, epoch=7, total_epochs=8)  # ceil(0.125 * 8) = 1
    np.testing.assert_array_equal(np.sort(last.ids), _live(s))
    assert last.loss_weights is None
    before = plan_selection(s, "infobatch", seed=0, epoch=6, total_epochs=8)
    assert len(before) < len(_live(s)) and before.loss_weights is not None
    short = plan_selection(s, "infobatch", seed=0, epoch=2, total_epochs=3)  # ceil(0.375) = 1: still the last
    assert short.loss_weights is None and len(short) == len(_live(s))
    # no total_epochs: never annealed; anneal_fraction=0: never annealed either
    assert plan_selection(s, "infobatch", seed=0, epoch=7).loss_weights is not None
    off = SelectionConfig(policy="infobatch", anneal_fraction=0.0)
    assert plan_selection(s, off, seed=0, epoch=7, total_epochs=8).loss_weights is not None


def test_infobatch_pure_function_edge_cases():
    rng = np.random.default_rng(0)
    pruned = np.zeros(6, np.uint8)
    nan = np.full(6, np.nan, F32)
    ids, w = infobatch_plan(nan, pruned, rng, 0.5)  # nothing observed yet: everything kept
    assert sorted(ids.tolist()) == list(range(6)) and w is None
    loss = np.array([0.1, 0.2, 5.0, 6.0, np.nan, 0.0], F32)
    ids, w = infobatch_plan(loss, pruned, rng, 0.0)  # p = 0: plain full data
    assert sorted(ids.tolist()) == list(range(6)) and w is None
    ids, w = infobatch_plan(loss, np.array([0, 0, 0, 1, 0, 0], np.uint8), rng, 0.75)
    assert 3 not in ids and {2, 4} <= set(ids.tolist())
    assert all(w[i] == 4.0 for i in ids if i in (0, 1, 5)) and w[2] == w[4] == 1.0


# ---------------------------------------------------------------------- determinism, registry, config
@pytest.mark.parametrize("sel", [SelectionConfig(), SelectionConfig(recheck_fraction=0.1),
                                 SelectionConfig(keep_fraction=0.5), "uniform",
                                 "random_subset", "infobatch", "rs2", SelectionConfig(anneal_fraction=1.0)])
def test_plans_are_pure_functions_of_state_seed_and_epoch(sel):
    s = _mixed(pruned_every=9)
    kw = {"budget": 0.5, "total_epochs": 10}
    a = plan_selection(s, sel, seed=1, epoch=3, **kw)
    b = plan_selection(s, sel, seed=1, epoch=3, **kw)
    assert a.ids.tobytes() == b.ids.tobytes()
    assert (a.loss_weights is None) == (b.loss_weights is None)
    if a.loss_weights is not None:
        assert a.loss_weights.tobytes() == b.loss_weights.tobytes()
    assert not np.array_equal(a.ids, plan_selection(s, sel, seed=1, epoch=4, **kw).ids)
    assert not np.array_equal(a.ids, plan_selection(s, sel, seed=2, epoch=3, **kw).ids)


def test_registry_covers_every_policy_and_the_default_epoch_is_the_stores():
    assert set(SELECTION_POLICIES) == set(SelectionKind)
    s = _mixed()
    s.repartition()
    for kind in SelectionKind:
        plan = plan_selection(s, kind, seed=0)
        assert isinstance(plan, EpochPlan) and plan.epoch == s.epoch == 2
    assert EpochPlan(np.zeros(0, np.int64), 0, 0, np.zeros(1, np.int64), (None,)).loss_weights is None


def test_selection_config_values_and_round_trip():
    assert SelectionConfig().policy is SelectionKind.GEKO and SelectionConfig().anneal == 0.0
    assert SelectionConfig(policy="infobatch").anneal == 0.125
    assert SelectionConfig(policy="infobatch", anneal_fraction=0.25).anneal == 0.25
    assert SelectionConfig(policy="uniform", anneal_fraction=0.5).anneal == 0.5
    cfg = SelectionConfig(policy="geko", recheck_fraction=0.02, anneal_fraction=0.1)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["policy"] == "geko" and SelectionConfig.from_dict(d) == cfg
    assert SelectionConfig.from_dict({"policy": "infobatch"}).to_dict()["anneal_fraction"] is None
    assert cfg.replace(recheck_fraction=0.0).recheck_fraction == 0.0
    keep = SelectionConfig(keep_fraction=0.25, anneal_fraction=0.1)
    assert SelectionConfig.from_dict(json.loads(json.dumps(keep.to_dict()))) == keep
    assert SelectionConfig().keep_fraction is None and SelectionConfig(keep_fraction=1).keep_fraction == 1.0


@pytest.mark.parametrize("kw, needle", [
    ({"policy": "random"}, "policy must be one of ['geko', 'uniform', 'infobatch', 'random_subset', 'rs2']"),
    ({"policy": 3}, "policy"),
    ({"prune_probability": 1.0}, "prune_probability"), ({"prune_probability": -0.1}, "prune_probability"),
    ({"prune_probability": True}, "prune_probability"), ({"anneal_fraction": 1.5}, "anneal_fraction"),
    ({"anneal_fraction": float("nan")}, "anneal_fraction"), ({"recheck_fraction": -0.01}, "recheck_fraction"),
    ({"recheck_fraction": "0.1"}, "recheck_fraction"),
    ({"policy": "uniform", "recheck_fraction": 0.1}, "recheck_fraction"),
    ({"keep_fraction": 0}, "SelectionConfig.keep_fraction must be a number in (0, 1], got 0"),
    ({"keep_fraction": 1.5}, "keep_fraction"), ({"keep_fraction": float("nan")}, "keep_fraction"),
    ({"keep_fraction": "0.5"}, "keep_fraction"),
    ({"policy": "infobatch", "keep_fraction": 0.5}, "keep_fraction skips GEKO's mastered samples and needs policy='geko'"),
    ({"keep_fraction": 0.5, "recheck_fraction": 0.1}, "supersedes recheck_fraction; set one of them"),
])
def test_selection_config_is_validated(kw, needle):
    with pytest.raises(ConfigError) as e:
        SelectionConfig(**kw)
    assert needle in str(e.value)


def test_from_dict_and_replace_refuse_unknown_fields():
    with pytest.raises(ConfigError, match="no field"):
        SelectionConfig.from_dict({"policy": "geko", "p": 1})
    with pytest.raises(ConfigError, match="no field"):
        SelectionConfig().replace(kind="uniform")


def test_plan_selection_refuses_bad_arguments():
    s = _mixed(n=100)
    for kw, needle in (({"seed": -1}, "seed"), ({"seed": 0, "epoch": -2}, "epoch"),
                       ({"seed": 0, "total_epochs": 0}, "total_epochs"), ({"seed": 0, "budget": "lots"}, "budget")):
        with pytest.raises(InputError, match=needle):
            plan_selection(s, "uniform", **kw)
    with pytest.raises(InputError, match="StateStore"):
        plan_selection("store", "uniform", seed=0)
    with pytest.raises(InputError, match="policy"):
        plan_selection(s, "bogus", seed=0)
    with pytest.raises(InputError, match="SelectionConfig"):
        plan_selection(s, 3, seed=0)


def test_anneal_epoch_count():
    assert anneal_epochs(0.125, 8) == 1 and anneal_epochs(0.125, 3) == 1 and anneal_epochs(0.125, 9) == 2
    assert anneal_epochs(0.3, 10) == 3 and anneal_epochs(1.0, 4) == 4 and anneal_epochs(0.0, 4) == 0
    assert anneal_epochs(0.5, None) == 0
    assert [is_annealed(e, 4, 0.5) for e in range(4)] == [False, False, True, True]


def test_recheck_with_no_freeze_sample_adds_nothing():
    rng = np.random.default_rng(0)
    ids, pool = recheck_ids(np.full(5, int(Bucket.HARD), np.uint8), np.zeros(5, np.uint8),
                            np.zeros(5, np.int32), 50, 0.5, rng)
    assert ids.size == 0 and ids.dtype == np.int64 and pool == 0


# ---------------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    policy=st.sampled_from(["uniform", "random_subset", "infobatch", "rs2"]),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 20),
    pruned_share=st.floats(0, 1),
    unseen_share=st.floats(0, 1),
    p=st.floats(0, 0.99),
    budget=st.one_of(st.integers(0, 400), st.floats(0.01, 1.0), st.sampled_from(["trainable", "full"])),
    total=st.one_of(st.none(), st.integers(1, 25)),
)
def test_baseline_plans_are_valid(n, policy, seed, epoch, pruned_share, unseen_share, p, budget, total):
    s = StateStore.create(n, config=GEKOConfig(log_bucket_stats=False))
    rng = np.random.default_rng(seed)
    cols = s._storage.columns
    cols["pruned"][:] = rng.random(n) < pruned_share
    loss = rng.exponential(1.0, n).astype(F32)
    loss[rng.random(n) < unseen_share] = np.nan
    cols["last_loss"][:] = loss
    sel = SelectionConfig(policy=policy, prune_probability=p)
    if total is not None and epoch >= total:
        epoch = total - 1
    plan = plan_selection(s, sel, seed=seed, epoch=epoch, total_epochs=total, budget=budget)
    ids = plan.ids
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ((ids >= 0) & (ids < n)).all()
    assert (cols["pruned"][ids] == 0).all()
    if policy != "rs2":  # an rs2 epoch straddling two permutations may hold an id twice
        assert np.unique(ids).size == ids.size
    assert plan.segment_ends.tolist() == [ids.size] and plan.requested == ids.size
    if plan.loss_weights is not None:
        w = plan.loss_weights
        assert w.dtype == np.float32 and w.shape == (n,) and (w >= 1).all()


# ---------------------------------------------------------------------- geko suspect_threshold
def _with_suspects(s: StateStore) -> np.ndarray:
    """Make every 10th HARD sample (id % 40 == 3) a suspect: seen twice, wrong both times, AUM -2.
    Other HARD samples were right once (streak 1 of 2). Returns the suspects' bool mask."""
    cols = s._storage.columns
    n = s.n_samples
    ids = np.arange(n)
    hard = ids % 4 == 3
    suspect = ids % 40 == 3
    cols["times_seen"][:] = 2
    cols["aum"][:] = np.where(hard, F32(-2.0), F32(3.0))
    cols["wrong_streak"][:] = np.where(suspect, 2, np.where(hard, 1, 0))
    return suspect


@pytest.mark.parametrize("kw", [{}, {"replacement": False}, {"budget": "full"}])
@pytest.mark.parametrize("keep", [None, 0.5])
def test_geko_sets_suspects_aside_and_plans_the_rest_as_without(kw, keep):
    s = _mixed()
    suspect = _with_suspects(s)
    base = plan_selection(s, SelectionConfig(keep_fraction=keep), seed=3, epoch=1, **kw)
    plan = plan_selection(s, SelectionConfig(keep_fraction=keep, suspect_threshold=0.75), seed=3, epoch=1, **kw)
    assert not suspect[plan.ids].any() and suspect[base.ids].any()
    np.testing.assert_array_equal(plan.ids, base.ids[~suspect[base.ids]])  # the same draws, in order
    assert plan.extra["suspects"] == int(suspect[base.ids].sum())
    assert plan.requested == base.requested - plan.extra["suspects"]
    # every segment lost exactly its suspects' draws
    starts = np.r_[0, base.segment_ends[:-1]]
    lost = [int(suspect[base.ids[a:b]].sum()) for a, b in zip(starts, base.segment_ends)]
    np.testing.assert_array_equal(np.diff(np.r_[0, base.segment_ends]) - lost, np.diff(np.r_[0, plan.segment_ends]))


def test_suspects_need_two_observations_and_a_score_above_the_threshold():
    s = _mixed()
    suspect = _with_suspects(s)
    s._storage.columns["times_seen"][:] = 1  # one wrong observation proves nothing yet
    plan = plan_selection(s, SelectionConfig(suspect_threshold=0.75), seed=3, epoch=1)
    assert suspect[plan.ids].any() and plan.extra["suspects"] == 0
    s._storage.columns["times_seen"][:] = 2
    # score of a suspect: (1 + sigmoid(2)) / 2 = 0.94; threshold 0.95 keeps them
    assert plan_selection(s, SelectionConfig(suspect_threshold=0.95), seed=3, epoch=1).extra["suspects"] == 0


def test_suspect_threshold_is_validated():
    with pytest.raises(ConfigError, match="suspect_threshold .*needs policy='geko'"):
        SelectionConfig(policy="rs2", suspect_threshold=0.75)
    with pytest.raises(ConfigError, match="suspect_threshold"):
        SelectionConfig(suspect_threshold=1.5)
    assert SelectionConfig.from_dict(SelectionConfig(suspect_threshold=0.75).to_dict()).suspect_threshold == 0.75
