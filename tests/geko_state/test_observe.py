import math

import numpy as np
import pytest

from geko_state import GEKOConfig, InputError, StateStore
from tests.conftest import snapshot


def test_initial_state(cfg):
    s = StateStore.create(4, config=cfg)
    t = s.to_arrow().to_pydict()
    assert t["sample_id"] == [0, 1, 2, 3]
    assert t["bucket"] == ["FOCUS"] * 4
    assert t["q_value"] == [0.5] * 4 and t["confidence"] == [0.0] * 4 and t["quality"] == [1.0] * 4
    assert t["correct"] == [False] * 4 and t["pruned"] == [False] * 4
    assert all(math.isnan(v) for v in t["last_loss"])
    assert t["times_seen"] == [0] * 4 and t["consecutive_frozen"] == [0] * 4 and t["frozen_at_epoch"] == [-1] * 4


def _reference(losses, a=0.1, scale=10.0):
    """Straightforward per-sample re-statement of DESIGN section 2."""
    q, quality, window = 0.5, 1.0, []
    for l in losses:
        window = (window + [l])[-5:]
        if len(window) >= 2:
            quality = max(0.0, 1.0 - min(float(np.std(np.float32(window).astype(np.float64))), 1.0))
        q = (1 - a) * q + a * (1 - min(l / scale, 1.0))
    return q, quality


@pytest.mark.parametrize("losses", [[0.3], [2.0, 0.5], [0.1, 0.2, 0.3, 4.0, 0.5, 0.6, 0.7], [12.0, 15.0, 0.0]])
def test_q_value_and_quality_formulas(kernels, losses):
    s = StateStore.create(3, config=GEKOConfig(use_curriculum=False), kernels=kernels)
    for l in losses:
        s.observe([1], [l], [0.7], [True])
    q, quality = _reference([float(np.float32(l)) for l in losses])
    assert s.column("q_value")[1] == pytest.approx(q, rel=1e-6)
    assert s.column("quality")[1] == pytest.approx(quality, rel=1e-6, abs=1e-7)
    assert s.column("times_seen")[1] == len(losses)
    assert s.column("last_loss")[1] == np.float32(losses[-1])
    assert s.column("confidence")[1] == np.float32(0.7)
    assert s.column("times_seen")[0] == 0 and s.column("q_value")[0] == np.float32(0.5)


def test_duplicates_apply_in_order(kernels):
    a = StateStore.create(5, config=GEKOConfig(use_curriculum=False), kernels=kernels)
    b = StateStore.create(5, config=GEKOConfig(use_curriculum=False), kernels=kernels)
    ids = [2, 4, 2, 2, 0, 4]
    losses = [0.1, 3.0, 0.5, 2.5, 1.0, 0.2]
    conf = [0.9, 0.1, 0.2, 0.95, 0.5, 0.3]
    corr = [True, False, True, False, True, True]
    a.observe(ids, losses, conf, corr)
    for i in range(len(ids)):
        b.observe(ids[i:i + 1], losses[i:i + 1], conf[i:i + 1], corr[i:i + 1])
    assert snapshot(a) == snapshot(b)
    assert a.column("times_seen")[2] == 3
    assert a.column("correct")[2] == 0  # last occurrence wins for point values
    assert a.column("confidence")[2] == np.float32(0.95)


BAD = [
    ("ids", dict(ids=[0, 9]), "ids\\[1\\] = 9.*\\[0, 5\\)"),
    ("ids", dict(ids=[-1, 0]), "ids\\[0\\] = -1"),
    ("ids", dict(ids=[0.0, 1.0]), "integer"),
    ("losses", dict(losses=[0.1, float("nan")]), "losses\\[1\\].*finite"),
    ("losses", dict(losses=[0.1, float("inf")]), "losses\\[1\\].*finite"),
    ("losses", dict(losses=[-0.5, 0.1]), "losses\\[0\\].*>= 0"),
    ("losses", dict(losses=["a", "b"]), "numbers"),
    ("confidences", dict(confidences=[0.5, 1.5]), "confidences\\[1\\].*\\[0, 1\\]"),
    ("confidences", dict(confidences=[-0.01, 0.5]), "confidences\\[0\\]"),
    ("confidences", dict(confidences=[float("nan"), 0.5]), "confidences\\[0\\].*finite"),
    ("correct", dict(correct=[0, 2]), "correct\\[1\\] = 2"),
    ("correct", dict(correct=[0.5, 1.0]), "correct.*booleans"),
    ("lengths", dict(losses=[0.1]), "same length"),
    ("shape", dict(ids=[[0, 1]]), "1-D"),
]


@pytest.mark.parametrize("what,override,message", BAD, ids=[b[2][:20] + b[0] for b in BAD])
def test_bad_batches_are_refused_and_change_nothing(kernels, what, override, message):
    s = StateStore.create(5, config=GEKOConfig(use_curriculum=False), kernels=kernels)
    s.observe([1, 2], [0.3, 0.4], [0.5, 0.6], [True, False])
    before = snapshot(s)
    args = dict(ids=[0, 1], losses=[0.1, 0.2], confidences=[0.3, 0.4], correct=[True, False])
    args.update(override)
    with pytest.raises(InputError, match=message):
        s.observe(**args)
    assert snapshot(s) == before
    assert s.observations_total == 2


def test_nan_policy_skip_counts_and_applies_the_rest(kernels):
    s = StateStore.create(5, config=GEKOConfig(use_curriculum=False, nan_policy="skip"), kernels=kernels)
    applied = s.observe([0, 1, 2], [0.1, float("nan"), 0.3], [0.5, 0.5, float("inf")], [True, True, True])
    assert applied == 1
    assert list(s.column("times_seen")) == [1, 0, 0, 0, 0]
    assert s.skipped_total == 2
    stats = s.repartition()
    assert stats.skipped_nonfinite == 2 and stats.observations == 1
    # a negative loss is still an error under skip
    with pytest.raises(InputError):
        s.observe([0], [-1.0], [0.5], [True])


def test_empty_batch_is_a_noop(cfg):
    s = StateStore.create(3, config=cfg)
    assert s.observe([], [], [], []) == 0


def test_accepts_numpy_dtypes(cfg):
    s = StateStore.create(3, config=cfg)
    s.observe(np.array([0, 2], dtype=np.int32), np.array([0.1, 0.2], dtype=np.float64),
              np.array([0.3, 0.4], dtype=np.float16), np.array([1, 0], dtype=np.int8))
    assert list(s.column("times_seen")) == [1, 0, 1]
