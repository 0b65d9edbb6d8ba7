import numpy as np
import pytest

from geko_state.errors import InputError
from geko_torch.frontier import corrupt_count, flip_labels, shuffle_targets


def test_flips_change_exactly_the_recorded_share_of_labels():
    labels = np.arange(2000) % 26
    noisy, flipped = flip_labels(labels, 26, 0.1, np.random.default_rng(0))
    assert flipped.dtype == np.int64 and flipped.size == 200
    changed = np.flatnonzero(noisy != labels)
    assert np.array_equal(changed, flipped)
    assert noisy.min() >= 0 and noisy.max() < 26


def test_flips_are_seeded_and_zero_noise_changes_nothing():
    labels = np.arange(100) % 4
    a = flip_labels(labels, 4, 0.2, np.random.default_rng(3))
    b = flip_labels(labels, 4, 0.2, np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    same, none = flip_labels(labels, 4, 0.0, np.random.default_rng(3))
    assert np.array_equal(same, labels) and none.size == 0


def test_shuffled_responses_never_keep_their_own():
    source, moved = shuffle_targets(500, 0.2, np.random.default_rng(1))
    assert moved.size == 100
    assert np.array_equal(np.flatnonzero(source != np.arange(500)), moved)
    assert sorted(source.tolist()) == list(range(500))  # a permutation: every response used once


def test_noise_rate_is_checked():
    assert corrupt_count(10, 0.25) == 2  # rounded half to even, as numpy does
    with pytest.raises(InputError, match="noise"):
        corrupt_count(10, 1.0)
