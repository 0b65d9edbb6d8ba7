"""geko_state.progress: learned / learning / suspect counts from state columns, and the plateau rule."""
import math

import numpy as np
import pytest

from geko_state import GEKOConfig, PlateauStop, StateStore, learning_progress, store_progress
from geko_state.errors import ConfigError
from geko_state.noise import NOISE_SCORES, noise_scores
from geko_state.schema import LOSS_WINDOW, Bucket


def _cols(times_seen, wrong_streak, last, prev, bucket=None, pruned=None):
    n = len(times_seen)
    seen = np.asarray(times_seen, dtype=np.int32)
    window = np.zeros((n, LOSS_WINDOW), dtype=np.float32)
    rows = np.arange(n)
    window[rows, (seen - 1) % LOSS_WINDOW] = last
    window[rows, (seen - 2) % LOSS_WINDOW] = prev
    return {"times_seen": seen, "wrong_streak": np.asarray(wrong_streak, dtype=np.uint8),
            "last_loss": np.asarray(last, dtype=np.float32), "loss_window": window,
            "bucket": np.asarray(bucket if bucket is not None else [int(Bucket.FOCUS)] * n, dtype=np.uint8),
            "pruned": np.asarray(pruned if pruned is not None else [False] * n)}


def test_samples_split_into_learned_learning_and_suspects_by_their_last_two_observations():
    cols = _cols(times_seen=[2, 3, 2, 2, 1, 4],
                 wrong_streak=[0, 1, 2, 1, 1, 0],
                 last=[0.2, 1.0, 2.0, 2.0, 3.0, 0.1],
                 prev=[0.5, 1.5, 1.5, 2.0, 0.0, 0.3],
                 bucket=[int(Bucket.LIGHT), int(Bucket.FOCUS), int(Bucket.HARD), int(Bucket.HARD),
                         int(Bucket.FOCUS), int(Bucket.FREEZE)],
                 pruned=[False, False, False, False, False, True])
    p = learning_progress(cols, epoch=3)
    # row 5 is pruned; row 4 has one observation (no trend); rows 2 and 3: wrong, loss not down
    assert (p.epoch, p.active, p.trended, p.learned, p.learning, p.suspects) == (3, 5, 4, 1, 1, 2)
    assert p.improving_share == pytest.approx(0.5)
    assert p.open == 2 and p.open_share == pytest.approx(2 / 3)  # rows 1 and 4 (FOCUS), suspects aside
    assert p.to_dict()["suspect_share"] == pytest.approx(0.5)
    assert "improving 50.0% of learnable" in p.format_line()


def test_the_suspects_are_the_default_noise_scores_cut():
    rng = np.random.default_rng(0)
    n = 500
    cols = _cols(times_seen=rng.integers(0, 7, n), wrong_streak=rng.integers(0, 3, n),
                 last=rng.random(n).astype(np.float32), prev=rng.random(n).astype(np.float32),
                 bucket=rng.integers(0, 4, n))
    cols["times_seen"][:5] = 0  # never observed: no loss
    score = NOISE_SCORES["geko"]
    cut = score.default_cut(cols, noise_scores(cols, "geko"))
    assert learning_progress(cols).suspects == int(cut.sum()) > 0


def test_nothing_trended_yet_has_no_shares():
    p = learning_progress(_cols(times_seen=[1, 0], wrong_streak=[1, 0], last=[1.0, 0.0], prev=[0.0, 0.0]))
    assert p.trended == 0 and math.isnan(p.improving_share) and math.isnan(p.suspect_share)
    assert not PlateauStop(min_improving=1.0).should_stop(p)


def test_the_plateau_rule_waits_for_min_epochs_and_compares_the_share():
    p = learning_progress(_cols(times_seen=[2, 2], wrong_streak=[0, 1], last=[0.1, 0.5], prev=[0.2, 0.9]), epoch=2)
    assert p.improving_share == 0.5
    assert PlateauStop(min_improving=0.6).should_stop(p)
    assert not PlateauStop(min_improving=0.5).should_stop(p)  # strictly below
    assert not PlateauStop(min_improving=0.6, min_epochs=3).should_stop(p)


@pytest.mark.parametrize(("field", "value"), [("min_improving", 1.5), ("min_improving", -0.1),
                                              ("min_improving", float("nan")), ("min_epochs", 1)])
def test_the_plateau_rule_is_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        PlateauStop(**{field: value})


def test_store_progress_reads_a_store(tmp_path):
    store = StateStore.create(4, tmp_path / "s.arrow", GEKOConfig())
    try:
        ids = np.arange(4, dtype=np.int64)
        store.observe(ids, np.array([2.0, 2.0, 2.0, 2.0], np.float32), np.full(4, 0.5, np.float32),
                      np.zeros(4, bool))
        store.repartition()
        store.observe(ids, np.array([1.0, 3.0, 0.5, 2.0], np.float32), np.full(4, 0.5, np.float32),
                      np.array([False, False, True, False]))
        store.repartition()
        p = store_progress(store)
        assert (p.epoch, p.trended, p.learned, p.learning, p.suspects) == (2, 4, 1, 1, 2)
    finally:
        store.close()
