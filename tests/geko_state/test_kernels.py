"""The numba kernels against the numpy reference, on random states (hypothesis)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geko_state.kernels import get_kernels
from geko_state.schema import initial_columns
from geko_state.kernels.sampling import class_masses

NB, NP = get_kernels("numba"), get_kernels("numpy")
THRESH = np.float32([0.85, 0.80, 0.60, 0.8])
# Values that sit exactly on, or one float32 step around, every threshold.
EDGES = np.array(sorted({0.0, 1.0, 0.5, *THRESH.tolist(),
                         *np.nextafter(THRESH, np.float32(0)).tolist(),
                         *np.nextafter(THRESH, np.float32(1)).tolist()}), dtype=np.float32)


def _random_state(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cols = initial_columns(n)
    pick = lambda: np.where(rng.random(n) < 0.5, rng.choice(EDGES, n), rng.random(n)).astype(np.float32)  # noqa: E731
    cols["confidence"] = pick()
    cols["quality"] = pick()
    cols["q_value"] = pick()
    cols["correct"] = (rng.random(n) < 0.6).astype(np.uint8)
    cols["times_seen"] = rng.integers(0, 8, n).astype(np.int32)
    cols["pruned"] = (rng.random(n) < 0.1).astype(np.uint8)
    cols["bucket"] = rng.integers(0, 4, n).astype(np.int8)
    cols["consecutive_frozen"] = np.where(cols["bucket"] == 0, rng.integers(1, 3, n), 0).astype(np.int32)  # FREEZE <=> streak > 0
    cols["frozen_at_epoch"] = np.where(cols["consecutive_frozen"] > 0, 1, -1).astype(np.int32)
    cols["loss_window"] = (rng.random((n, 5)) * 3).astype(np.float32)
    cols["last_loss"] = cols["loss_window"][:, 0].copy()
    cols["aum"] = np.where(rng.random(n) < 0.7, rng.normal(0, 3, n), np.nan).astype(np.float32)
    # 253..255: the saturation edge
    cols["wrong_streak"] = np.where(cols["correct"] == 1, 0, rng.choice([0, 1, 3, 253, 254, 255], n)).astype(np.uint8)
    return cols


def _margins(rng: np.random.Generator, b: int) -> np.ndarray:
    """A batch's margins: none at all (length 0), or random ones with some NaN (unknown)."""
    if rng.random() < 0.3:
        return np.empty(0, dtype=np.float32)
    m = rng.normal(0, 4, b).astype(np.float32)
    m[rng.random(b) < 0.2] = np.nan
    return m


def _copy(cols):
    return {k: v.copy() for k, v in cols.items()}


def _obs_args(cols, batch):
    return (cols["times_seen"], cols["last_loss"], cols["confidence"], cols["correct"],
            cols["loss_window"], cols["quality"], cols["q_value"],
            cols["aum"], cols["wrong_streak"], *batch)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 50), b=st.integers(0, 120),
       skip=st.booleans(), lr=st.sampled_from([0.1, 0.3, 1.0]), scale=st.sampled_from([10.0, 2.5]))
def test_observe_numba_equals_numpy(seed, n, b, skip, lr, scale):
    rng = np.random.default_rng(seed)
    cols = _random_state(rng, n)
    ids = rng.integers(0, n, b).astype(np.int64)  # small n: many duplicates
    losses = (rng.random(b) * 15).astype(np.float32)
    confs = rng.choice(EDGES, b).astype(np.float32)
    if skip and b:
        losses[rng.random(b) < 0.2] = np.nan
        confs[rng.random(b) < 0.1] = np.inf
    corr = (rng.random(b) < 0.5).astype(np.uint8)
    batch = (ids, losses, confs, corr, _margins(rng, b), np.float64(lr), np.float64(scale), skip)
    a, c = _copy(cols), _copy(cols)
    ra = NB.observe(*_obs_args(a, batch))
    rc = NP.observe(*_obs_args(c, batch))
    assert tuple(int(x) for x in ra) == tuple(int(x) for x in rc)
    for k in cols:
        np.testing.assert_array_equal(a[k], c[k], err_msg=k)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000), prune_after=st.integers(0, 3),
       epoch=st.integers(1, 9), margin=st.sampled_from([np.float32(np.nan), np.float32(0.0), np.float32(2.5)]))
def test_repartition_numba_equals_numpy(seed, n, prune_after, epoch, margin):
    cols = _random_state(np.random.default_rng(seed), n)
    outs = []
    for k in (NB, NP):
        c = _copy(cols)
        counts = k.repartition(c["correct"], c["confidence"], c["quality"], c["q_value"], c["aum"], c["pruned"],
                               c["bucket"], c["consecutive_frozen"], c["frozen_at_epoch"],
                               *THRESH, margin, np.int32(epoch), np.int32(prune_after))
        outs.append((counts, c))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    for k in cols:
        np.testing.assert_array_equal(outs[0][1][k], outs[1][1][k], err_msg=k)
    counts = outs[0][0]
    live = int((outs[0][1]["pruned"] == 0).sum())
    assert counts[:4].sum() == live


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000), max_seen=st.integers(1, 8),
       w=st.tuples(*[st.sampled_from([0.0, 0.5, 1.0, 3.0]) for _ in range(3)]), k=st.integers(1, 500))
def test_weights_members_and_draws_agree(seed, n, max_seen, w, k):
    rng = np.random.default_rng(seed)
    c = _random_state(rng, n)
    cw = np.array([0.0, *w], dtype=np.float64)
    args = (c["bucket"], c["pruned"], c["times_seen"])
    np.testing.assert_array_equal(NB.weights(*args, cw.astype(np.float32), np.int32(max_seen)),
                                  NP.weights(*args, cw.astype(np.float32), np.int32(max_seen)))
    m1, o1 = NB.members(*args, np.int32(max_seen))
    m2, o2 = NP.members(*args, np.int32(max_seen))
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(o1, o2)
    cum = class_masses(o1, cw)
    if cum[-1] > 0:
        u = rng.random(k)
        u[:3] = [0.0, np.nextafter(1.0, 0.0), 0.5][: min(3, k)]
        d1 = NB.draw_with_replacement(m1, o1, cw, cum, u)
        d2 = NP.draw_with_replacement(m1, o1, cw, cum, u)
        np.testing.assert_array_equal(d1, d2)
        weights = NP.weights(*args, cw.astype(np.float32), np.int32(max_seen))
        assert (weights[d1] > 0).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 40), min_size=1, max_size=3),
       take=st.integers(0, 200))
def test_merge_keys_agree(seed, sizes, take):
    rng = np.random.default_rng(seed)
    runs = [np.sort(rng.choice([0.5, 1.0, 1.5, 2.0], s) * rng.integers(1, 3)) for s in sizes]  # ties on purpose
    keys = np.concatenate(runs).astype(np.float64)
    off = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    take = min(take, keys.size)
    np.testing.assert_array_equal(NB.merge_keys(off, keys, take), NP.merge_keys(off, keys, take))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), b=st.integers(0, 300), skip=st.booleans(),
       parts=st.integers(1, 4))
def test_parallel_observe_equals_serial(seed, n, b, skip, parts):
    from geko_state.kernels.observe import observe_numba_parallel, observe_numba_serial

    rng = np.random.default_rng(seed)
    cols = _random_state(rng, n)
    ids = rng.integers(0, n, b).astype(np.int64)
    losses = (rng.random(b) * 5).astype(np.float32)
    if skip and b:
        losses[rng.random(b) < 0.2] = np.nan
    batch = (ids, losses, rng.random(b).astype(np.float32), (rng.random(b) < 0.5).astype(np.uint8),
             _margins(rng, b), np.float64(0.1), np.float64(10.0), skip)
    a, c = _copy(cols), _copy(cols)
    ra = observe_numba_parallel(*_obs_args(a, batch), parts)
    rc = observe_numba_serial(*_obs_args(c, batch))
    assert tuple(int(x) for x in ra) == tuple(int(x) for x in rc)
    for k in cols:
        np.testing.assert_array_equal(a[k], c[k], err_msg=k)
