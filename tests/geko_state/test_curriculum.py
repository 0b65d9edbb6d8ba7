import pytest

from geko_state import MOUNTAIN, InputError, Phase


@pytest.mark.parametrize(
    "p,phase,weights,lr",
    [
        (0.0, Phase.WARMUP, (1, 2, 3), 0.5),
        (0.1499, Phase.WARMUP, (1, 2, 3), 0.5),
        (0.15, Phase.ASCENT, (2, 3, 1), 0.8),
        (0.35, Phase.PEAK, (5, 2, 0), 1.0),
        (0.6499, Phase.PEAK, (5, 2, 0), 1.0),
        (0.65, Phase.DESCENT, (2, 3, 1), 0.8),
        (0.85, Phase.CONSOLIDATE, (1, 2, 3), 0.3),
        (1.0, Phase.CONSOLIDATE, (1, 2, 3), 0.3),
    ],
)
def test_phase_table(p, phase, weights, lr):
    assert MOUNTAIN.phase(p) is phase
    assert MOUNTAIN.weights(p) == weights
    assert MOUNTAIN.lr_multiplier(p) == lr


def test_segments_split_an_epoch_at_phase_changes():
    # The middle epoch of three spans ASCENT -> PEAK; a 3-epoch run passes through PEAK.
    segs = MOUNTAIN.segments(1 / 3, 2 / 3)
    assert [s.spec.phase for s in segs] == [Phase.ASCENT, Phase.PEAK, Phase.DESCENT]
    assert sum(s.length for s in segs) == pytest.approx(1 / 3)
    assert segs[1].start == 0.35 and segs[1].end == 0.65


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan"), "half"])
def test_bad_progress(bad):
    with pytest.raises(InputError, match="progress"):
        MOUNTAIN.phase(bad)


def test_reversed_span():
    with pytest.raises(InputError, match="start <= end"):
        MOUNTAIN.segments(0.5, 0.2)
