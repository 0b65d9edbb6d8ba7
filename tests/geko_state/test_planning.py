import warnings

import numpy as np
import pytest

from geko_state import PRESETS, Bucket, GEKOConfig, InputError, Phase, StateStore, shard

F32 = np.float32


def _mixed(kernels="numba", n=3000, **cfg):
    """A store whose samples are split evenly over FREEZE, LIGHT, FOCUS, HARD (by id % 4)."""
    s = StateStore.create(n, config=GEKOConfig(use_curriculum=False, log_bucket_stats=False, **cfg), kernels=kernels)
    b = np.arange(n) % 4
    cols = s._storage.columns
    cols["correct"][:] = (b <= 1)
    cols["confidence"][:] = np.where(b == 0, F32(0.95), np.where(b == 3, F32(0.9), F32(0.3)))
    cols["quality"][:] = F32(0.95)
    cols["q_value"][:] = F32(0.95)
    cols["times_seen"][:] = 1
    s.repartition()
    assert np.array_equal(s.column("bucket"), b)
    return s


def test_plan_is_deterministic_and_seed_epoch_dependent(kernels):
    s = _mixed(kernels)
    a = s.plan_epoch(seed=7)
    assert a.dtype == np.int64
    np.testing.assert_array_equal(a, s.plan_epoch(seed=7))
    assert not np.array_equal(a, s.plan_epoch(seed=8))
    assert not np.array_equal(a, s.plan_epoch(seed=7, epoch=s.epoch + 1))


def test_backends_produce_identical_plans():
    a, b = _mixed("numba"), _mixed("numpy")
    for kw in ({}, {"replacement": False}, {"budget": "full"}, {"budget": 0.3, "replacement": False}):
        np.testing.assert_array_equal(a.plan_epoch(seed=3, **kw), b.plan_epoch(seed=3, **kw))


def test_never_draws_frozen_pruned_or_over_limit(kernels):
    s = _mixed(kernels, max_times_seen=3)
    cols = s._storage.columns
    cols["pruned"][1::8] = 1  # some LIGHT samples pruned
    cols["times_seen"][2::8] = 3  # some FOCUS samples at the limit
    for replacement in (True, False):
        ids = s.plan_epoch(seed=1, budget="full", replacement=replacement)
        assert (s.column("bucket")[ids] != Bucket.FREEZE).all()
        assert (s.column("pruned")[ids] == 0).all()
        assert (s.column("times_seen")[ids] < 3).all()
        w = s.weights()
        assert (w[ids] > 0).all()


def test_proportions_follow_bucket_weights():
    s = _mixed(n=4000)  # 1000 per bucket; weights HARD 3, FOCUS 1, LIGHT 0
    ids = s.plan_epoch(seed=0, budget=200_000)
    share = np.bincount(s.column("bucket")[ids], minlength=4) / ids.size
    assert share[Bucket.FREEZE] == 0 and share[Bucket.LIGHT] == 0
    assert share[Bucket.HARD] == pytest.approx(0.75, abs=0.01)
    assert share[Bucket.FOCUS] == pytest.approx(0.25, abs=0.01)
    # uniform within a bucket: every HARD sample drawn about 150 times
    per = np.bincount(ids, minlength=4000)[3::4]
    assert per.min() > 100 and per.max() < 210


def test_budgets():
    s = _mixed(n=4000)  # trainable with weights (3,1,0): HARD + FOCUS = 2000
    assert s.plan_epoch().size == 2000
    assert s.plan_epoch(budget="full").size == 4000
    assert s.plan_epoch(budget=123).size == 123
    assert s.plan_epoch(budget=0.25).size == 1000
    assert s.plan_epoch(budget=0).size == 0
    s2 = _mixed(n=4000, bucket_weights=(1, 1, 1))
    assert s2.plan_epoch().size == 3000
    for bad in ("most", -1, 1.5, 0.0, True, None):
        with pytest.raises(InputError, match="budget"):
            s.plan_epoch(budget=bad)


def test_budget_shrinks_as_samples_freeze():
    s = StateStore.create(1000, config=GEKOConfig(use_curriculum=False, bucket_weights=(1, 1, 1)))
    assert s.plan_epoch().size == 1000
    cols = s._storage.columns
    cols["correct"][:600] = 1
    cols["confidence"][:600] = F32(0.95)
    cols["quality"][:600] = F32(0.95)
    cols["q_value"][:600] = F32(0.95)
    s.repartition()
    assert s.plan_epoch().size == 400


def test_without_replacement_has_no_repeats_and_is_weighted():
    s = _mixed(n=40_000)
    ids = s.plan_epoch(seed=0, replacement=False, budget="full")
    assert ids.size == 20_000 and np.unique(ids).size == ids.size  # capped at the eligible count
    head = s.column("bucket")[ids[:2000]]
    # HARD weighs 3x FOCUS: the first draws are mostly HARD
    assert 0.70 < (head == Bucket.HARD).mean() < 0.80


def test_shards_cover_the_plan():
    s = _mixed(n=1001)
    full = s.plan_epoch(seed=4, budget="full")
    for ws in (1, 2, 3, 8):
        parts = [s.plan_epoch(seed=4, budget="full", rank=r, world_size=ws) for r in range(ws)]
        assert len({p.size for p in parts}) == 1
        inter = np.stack(parts, axis=1).reshape(-1)
        np.testing.assert_array_equal(inter[: full.size], full)
    with pytest.raises(InputError, match="rank"):
        shard(full, 2, 2)
    with pytest.raises(InputError, match="world_size"):
        shard(full, 0, 0)


def _shard_reference(ids, offset, rank, world_size):
    # The sampler's former shard_from, kept as the reference the engine's shard must match bit for bit.
    rem = ids[offset:]
    if world_size == 1 or rem.shape[0] == 0:
        return np.ascontiguousarray(rem)
    pad = (-rem.shape[0]) % world_size
    if pad:
        rem = np.concatenate([rem, np.resize(ids, pad)])
    return np.ascontiguousarray(rem[rank::world_size])


def test_shard_with_an_offset_pads_from_the_start_of_the_whole_plan():
    rng = np.random.default_rng(0)
    for k in (0, 1, 5, 11, 64):
        ids = rng.integers(0, 1000, size=k).astype(np.int64)
        for ws in (1, 2, 3, 8):
            for offset in sorted({0, 1, k // 2, max(k - 1, 0), k, k + 3}):
                for r in range(ws):
                    got = shard(ids, r, ws, offset)
                    want = _shard_reference(ids, offset, r, ws)
                    assert got.dtype == want.dtype and np.array_equal(got, want)
    ids = np.arange(7, dtype=np.int64)
    np.testing.assert_array_equal(shard(ids, 1, 2, 4), [5, 0])  # rest 4 5 6, padded with id 0
    with pytest.raises(InputError, match="offset must be an integer >= 0"):
        shard(ids, 0, 1, -1)


def test_curriculum_changes_phase_inside_an_epoch():
    s = StateStore.create(4000, config=GEKOConfig(log_bucket_stats=False))
    cols = s._storage.columns
    b = np.arange(4000) % 4
    cols["correct"][:] = b == 1
    cols["confidence"][:] = np.where(b == 3, F32(0.9), F32(0.3))
    s.repartition()
    plan = s.build_plan(seed=0, budget=30_000, epoch=1, total_epochs=3)  # progress 1/3 .. 2/3
    assert plan.phases == (Phase.ASCENT, Phase.PEAK, Phase.DESCENT)
    bounds = np.r_[0, plan.segment_ends]
    lengths = np.diff(bounds)
    np.testing.assert_allclose(lengths / 30_000, [(0.35 - 1 / 3) * 3, 0.3 * 3, (2 / 3 - 0.65) * 3], atol=1e-3)
    peak = plan.ids[bounds[1]:bounds[2]]
    assert (s.column("bucket")[peak] != Bucket.LIGHT).all()  # LIGHT weighs 0 at PEAK
    hard_share = (s.column("bucket")[peak] == Bucket.HARD).mean()
    assert hard_share == pytest.approx(5 * 1000 / (5 * 1000 + 2 * 2000), abs=0.02)  # FOCUS: ids % 4 in {0, 2}
    assert plan.phase_at(0) is Phase.ASCENT and plan.phase_at(len(plan) - 1) is Phase.DESCENT


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("budget, per_epoch", [("full", 100), (60, 60), (0.5, 50)])
def test_a_phase_weighing_every_eligible_bucket_0_still_spends_a_fixed_budget(kernels, replacement, budget,
                                                                             per_epoch):
    # conservative + curriculum, every sample LIGHT: PEAK weighs LIGHT 0, so its draws had nowhere
    # to go and the PEAK epochs of a budget="full" run trained nothing.
    s = StateStore.create(100, config=PRESETS["conservative"].replace(log_bucket_stats=False), kernels=kernels)
    cols = s._storage.columns
    cols["correct"][:] = 1
    cols["confidence"][:] = F32(0.5)
    cols["times_seen"][:] = 1
    cols["pruned"][::10] = 1
    s.repartition()
    assert s.bucket_counts()[Bucket.LIGHT] == 90
    for epoch in range(10):
        plan = s.build_plan(seed=0, epoch=epoch, total_epochs=10, budget=budget, replacement=replacement)
        assert len(plan) == (per_epoch if replacement else min(per_epoch, 90)), epoch
        assert (s.column("pruned")[plan.ids] == 0).all()
        if not replacement:
            assert np.unique(plan.ids).size == len(plan)
    peak = s.build_plan(seed=0, epoch=5, total_epochs=10, budget="full", replacement=False)
    assert peak.phases == (Phase.PEAK,) and np.array_equal(np.sort(peak.ids), np.flatnonzero(cols["pruned"] == 0))
    # "trainable" counts the samples of positive weight: none at PEAK, so the epoch is empty, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(s.build_plan(seed=0, epoch=5, total_epochs=10)) == 0


def test_curriculum_without_progress_warns_and_uses_fixed_weights():
    s = StateStore.create(10, config=GEKOConfig(log_bucket_stats=False))
    with pytest.warns(UserWarning, match="progress"):
        assert s.plan_epoch().size == 10


def test_empty_plan_warns():
    s = StateStore.create(4, config=GEKOConfig(use_curriculum=False, log_bucket_stats=False))
    cols = s._storage.columns
    cols["pruned"][:] = 1
    with pytest.warns(UserWarning, match="no sample can be drawn"):
        assert s.plan_epoch(budget="full").size == 0


@pytest.mark.slow
def test_plan_beyond_2_pow_24_samples():
    # torch.multinomial cannot pass 2^24 categories, and ids through float32 lose odd values.
    n = (1 << 24) + 5_000_000
    s = StateStore.create(n, config=GEKOConfig(use_curriculum=False, log_bucket_stats=False))
    ids = s.plan_epoch(seed=0, budget=2_000_000)
    high = ids[ids >= (1 << 24)]
    assert high.size > 400_000
    assert 0.45 < (high % 2).mean() < 0.55
    assert ids.max() >= n - 100 and ids.max() < n
