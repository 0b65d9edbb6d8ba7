"""The learnability columns (aum, wrong_streak), the noise scores and the ``suspects`` view."""
import math

import numpy as np
import pytest

from geko_state import (
    NOISE_SCORES, ConfigError, GEKOConfig, InputError, StateStore, SuspectsConfig, noise_scores,
    query, store_suspects,
)
from geko_state.noise import rank_suspects
from tests.geko_state.runs import make_noisy_run


def test_aum_is_the_mean_margin_and_an_unknown_margin_changes_nothing(kernels):
    s = StateStore.create(3, config=GEKOConfig(use_curriculum=False), kernels=kernels)
    assert math.isnan(s.column("aum")[0])
    s.observe([0, 1], [0.5, 0.5], [0.5, 0.5], [True, False], [2.0, float("nan")])
    s.observe([0, 1], [0.5, 0.5], [0.5, 0.5], [True, False], [-1.0, 4.0])
    s.observe([0], [0.5], [0.5], [True], [5.0])
    assert s.column("aum")[0] == pytest.approx((2 - 1 + 5) / 3)
    # sample 1's first margin arrived at its second observation: it sets the mean
    assert s.column("aum")[1] == np.float32(4.0)
    s.observe([2], [0.5], [0.5], [True])  # no margins at all
    assert math.isnan(s.column("aum")[2]) and s.column("times_seen")[2] == 1


def test_wrong_streak_counts_wrong_observations_in_a_row_and_saturates(kernels):
    s = StateStore.create(2, config=GEKOConfig(use_curriculum=False), kernels=kernels)
    for k in [False, False, True, False, False, False]:
        s.observe([0], [0.5], [0.5], [k])
    assert s.column("wrong_streak")[0] == 3
    ids = np.ones(300, np.int64)
    s.observe(ids, np.full(300, 1.0), np.full(300, 0.5), np.zeros(300, bool), np.full(300, -2.0))
    assert s.column("wrong_streak")[1] == 255 and s.column("times_seen")[1] == 300
    assert s.column("aum")[1] == np.float32(-2.0)


def test_bad_margins_are_refused_whole():
    s = StateStore.create(2)
    with pytest.raises(InputError, match="margins must have the length of ids"):
        s.observe([0, 1], [0.1, 0.1], [0.5, 0.5], [True, True], [1.0])
    assert s.column("times_seen").tolist() == [0, 0]


def _columns(aum, streak, seen, loss, prev):
    """State columns of samples with these AUMs, wrong streaks, observation counts, last and
    previous losses (written into the loss ring where the store would have put them)."""
    n = len(aum)
    seen = np.int32(seen)
    window = np.zeros((n, 5), np.float32)
    rows = np.arange(n)
    window[rows, (seen - 1) % 5] = loss
    window[rows, (seen - 2) % 5] = prev
    return {"aum": np.float32(aum), "wrong_streak": np.uint8(streak), "times_seen": seen,
            "last_loss": np.float32(loss), "loss_window": window,
            "sample_id": np.arange(n, dtype=np.int64), "bucket": np.full(n, 2, np.int8)}


# 0: wrong at all 3 observations, loss stuck at 3 (a flipped label); 1: hard but learning (wrong,
# loss 3.5 -> 2.5); 2: easy; 3: never observed; 4: wrong at the last 2 of 4, loss 2 -> 2.2
COLS = _columns([-4, -1, 6, np.nan, -1], [3, 1, 0, 0, 2], [3, 3, 3, 0, 4],
                [3.0, 2.5, 0.1, 0.0, 2.2], [3.0, 3.5, 0.2, 0.0, 2.0])


def test_geko_score_is_the_loss_heading_on_and_its_cut_is_wrong_and_not_improving():
    g = noise_scores(COLS)
    assert math.isnan(g[3])
    np.testing.assert_allclose(g[[0, 1, 2, 4]], [3.0, 2.0, 0.05, 2.3])
    assert rank_suspects(g).tolist() == [0, 4, 1, 2]
    # the default cut: wrong at the last observation and the loss did not go down (sample 1 is learning)
    assert SuspectsConfig().select(COLS, g).tolist() == [0, 4]
    assert rank_suspects(g, threshold=2.1).tolist() == [0, 4]
    one = _columns([-1], [1], [1], [5.0], [0.0])  # one observation: ranked by its loss, never cut
    assert noise_scores(one)[0] == 5.0 and SuspectsConfig().select(one, noise_scores(one)).size == 0


def test_the_other_scores():
    np.testing.assert_array_equal(noise_scores(COLS, "aum")[[0, 1, 2, 4]], [4, 1, -6, 1])
    assert rank_suspects(noise_scores(COLS, "aum"), top=2).tolist() == [0, 1]  # tie at 1: lower id first
    s = noise_scores(COLS, "streak_aum")
    assert s[0] == pytest.approx((1 + 1 / (1 + math.exp(-4))) / 2) and s[0] > s[4] > s[1] > s[2]
    assert SuspectsConfig(score="streak_aum").select(COLS, s).tolist() == [0, 4, 1]
    np.testing.assert_array_equal(noise_scores(COLS, "loss")[[0, 1, 2, 4]], np.float32([3.0, 2.5, 0.1, 2.2]))


def test_scores_are_a_registry_and_configs_are_validated():
    assert set(NOISE_SCORES) >= {"geko", "streak_aum", "aum", "loss"}
    with pytest.raises(ConfigError, match="noise score must be one of"):
        SuspectsConfig(score="nope")
    with pytest.raises(ConfigError, match="no natural threshold"):
        SuspectsConfig(score="loss")
    with pytest.raises(ConfigError, match="top"):
        SuspectsConfig(top=-1)
    assert not SuspectsConfig(score="loss", top=3).uses_default_cut and SuspectsConfig().uses_default_cut
    assert SuspectsConfig().describe() == "geko: wrong at the last observation, loss not going down"
    assert SuspectsConfig(top=5, threshold=2).describe() == "top 5 by geko score above 2"


def test_suspects_from_a_store_and_the_sql_view_agree(tmp_path):
    store = make_noisy_run(tmp_path)
    table = store_suspects(store)
    assert table.column_names == ["sample_id", "score", "rank", "in_cut", "aum", "wrong_streak", "times_seen", "bucket"]
    assert table["in_cut"].to_pylist() == [True] * 4
    assert sorted(table["sample_id"].to_pylist()) == [0, 1, 2, 3]
    assert table["rank"].to_pylist() == [1, 2, 3, 4]
    assert table["wrong_streak"].to_pylist() == [3] * 4 and table["times_seen"].to_pylist() == [3] * 4
    top = store_suspects(store, SuspectsConfig(top=2))
    assert top["sample_id"].to_pylist() == table["sample_id"].to_pylist()[:2]
    view = query(tmp_path, "SELECT sample_id, score, rank FROM suspects ORDER BY rank")
    assert view.height == 20  # every observed sample, ranked
    assert view["sample_id"].to_list()[:4] == table["sample_id"].to_pylist()
    assert query(tmp_path, "SELECT count(*) AS n FROM suspects WHERE in_cut")["n"][0] == 4
    hist = query(tmp_path, "SELECT epoch, aum, wrong_streak FROM history WHERE sample_id = 0 ORDER BY epoch")
    assert hist["wrong_streak"].to_list() == [1, 2, 3] and (hist["aum"] < -3).all()


def test_the_simulated_learners_mislabeled_samples_rank_first():
    from geko_state.simulate import SyntheticTask, simulate

    task = SyntheticTask(mislabeled=0.05, seed=3)
    store = StateStore.create(4000, config=GEKOConfig())
    for _ in simulate(store, 4, task, budget="full"):
        pass
    mislabeled = task.rates(4000) < 0
    k = int(mislabeled.sum())
    top = store_suspects(store, SuspectsConfig(top=k))["sample_id"].to_numpy()
    assert mislabeled[top].mean() > 0.9
