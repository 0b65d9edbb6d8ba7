import numpy as np
import pytest

from geko_state import Bucket, GEKOConfig, StateStore

F32 = np.float32


def _store(kernels, n=1, **cfg):
    return StateStore.create(n, config=GEKOConfig(use_curriculum=False, log_bucket_stats=False, **cfg), kernels=kernels)


def _set(store, **cols):
    """Write state columns directly (test-only) to place samples exactly on rule boundaries."""
    for k, v in cols.items():
        store._storage.columns[k][:] = v


@pytest.mark.parametrize(
    "correct,conf,quality,q,expected",
    [
        (1, 0.86, 0.81, 0.8, Bucket.FREEZE),
        (1, 0.85, 0.81, 0.9, Bucket.LIGHT),   # confidence must be > 0.85
        (1, 0.86, 0.80, 0.9, Bucket.LIGHT),   # quality must be > 0.80
        (1, 0.86, 0.81, 0.7999, Bucket.LIGHT),  # q must be >= 0.8
        (1, 0.10, 0.10, 0.1, Bucket.LIGHT),
        (0, 0.60, 1.0, 1.0, Bucket.FOCUS),    # confidence <= 0.60 -> FOCUS
        (0, 0.6001, 1.0, 1.0, Bucket.HARD),
        (0, 0.0, 1.0, 0.5, Bucket.FOCUS),
        (0, 0.99, 1.0, 0.99, Bucket.HARD),
    ],
)
def test_bucket_rules_at_boundaries(kernels, correct, conf, quality, q, expected):
    s = _store(kernels)
    _set(s, correct=correct, confidence=F32(conf), quality=F32(quality), q_value=F32(q))
    s.repartition()
    assert s.column("bucket")[0] == expected


def test_freeze_streak_pruning_and_stats(kernels):
    s = _store(kernels, n=4, prune_frozen_after=2)
    s.observe([0, 1, 2], [0.1, 0.1, 3.0], [0.9, 0.5, 0.9], [True, True, False])  # sample 3 unseen
    _set(s, quality=F32(0.9), q_value=F32(0.9))
    st = s.repartition()
    assert (st.epoch, st.freeze, st.light, st.focus, st.hard, st.pruned) == (1, 1, 1, 1, 1, 0)
    assert st.entered_freeze == 1 and st.seen == 3 and st.correct_seen == 2
    assert st.accuracy == pytest.approx(2 / 3)
    assert list(s.column("frozen_at_epoch")) == [1, -1, -1, -1]
    assert list(s.column("consecutive_frozen")) == [1, 0, 0, 0]
    st = s.repartition()
    assert st.newly_pruned == 1 and st.pruned == 1 and st.freeze == 0
    assert st.freeze + st.light + st.focus + st.hard == st.active == 3
    assert list(s.column("pruned")) == [1, 0, 0, 0]
    assert list(s.column("frozen_at_epoch")) == [1, -1, -1, -1]
    # a pruned sample stays pruned whatever happens to it
    _set(s, correct=0)
    st = s.repartition()
    assert st.pruned == 1 and s.column("bucket")[0] == Bucket.FREEZE


def test_leaving_freeze_resets_streak(kernels):
    s = _store(kernels)
    _set(s, correct=1, confidence=F32(0.9), quality=F32(0.9), q_value=F32(0.9))
    s.repartition()
    s.repartition()
    assert s.column("consecutive_frozen")[0] == 2 and s.column("frozen_at_epoch")[0] == 1
    _set(s, correct=0)
    s.repartition()
    assert s.column("consecutive_frozen")[0] == 0 and s.column("frozen_at_epoch")[0] == -1
    _set(s, correct=1)
    s.repartition()
    assert s.column("frozen_at_epoch")[0] == 4


def test_mastered_flag(kernels):
    s = _store(kernels, n=100)
    c = np.zeros(100, dtype=np.uint8)
    c[:94] = 1
    _set(s, correct=c, confidence=F32(0.9), quality=F32(0.9), q_value=F32(0.9))
    assert not s.repartition().mastered  # 94% FREEZE
    c[94] = 1
    _set(s, correct=c)
    assert s.repartition().mastered  # 95%


def test_repartition_every_carries_buckets_over(kernels):
    s = _store(kernels, n=2, repartition_every=2)
    _set(s, correct=1, confidence=F32(0.9), quality=F32(0.9), q_value=F32(0.9))
    st = s.repartition()
    assert not st.repartitioned and st.focus == 2 and s.epoch == 1
    st = s.repartition()
    assert st.repartitioned and st.freeze == 2 and s.epoch == 2
    assert list(s.column("frozen_at_epoch")) == [2, 2]


def test_learning_path_reaches_freeze_after_enough_observations(kernels):
    # With q_value_lr=0.1 from q=0.5 and loss ~0, q crosses 0.8 after 9 observations.
    s = _store(kernels)
    for k in range(1, 12):
        s.observe([0], [0.01], [0.95], [True])
        st = s.repartition()
        assert (st.freeze == 1) == (k >= 9), k


def test_freeze_margin_freezes_correct_samples_on_their_mean_margin_after_one_observation(kernels):
    from geko_state import Bucket, ConfigError

    cfg = GEKOConfig(use_curriculum=False, freeze_margin=2.0)
    s = StateStore.create(4, config=cfg, kernels=kernels)
    # confidence 0.5 and one observation: DESIGN's rule could not freeze any of them
    s.observe([0, 1, 2, 3], [0.1, 0.1, 0.1, 2.0], [0.5] * 4, [True, True, True, False], [3.0, 1.0, float("nan"), 5.0])
    s.repartition()
    assert [Bucket(b) for b in s.column("bucket")] == [Bucket.FREEZE, Bucket.LIGHT, Bucket.LIGHT, Bucket.FOCUS]
    default = StateStore.create(4, config=GEKOConfig(use_curriculum=False), kernels=kernels)
    default.observe([0], [0.1], [0.5], [True], [3.0])
    default.repartition()
    assert default.column("bucket")[0] == Bucket.LIGHT
    with pytest.raises(ConfigError, match="freeze_margin"):
        GEKOConfig(freeze_margin=float("inf"))
    assert GEKOConfig.from_dict(cfg.to_dict()) == cfg
