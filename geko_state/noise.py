"""Label-noise scores from the training state: which samples are probably mislabeled.

Every observation already carries what a noise finder needs: the sample's loss, whether the
prediction was correct, and the logit margin of the assigned label (its logit minus the largest
other logit). The state keeps the last :data:`~geko_state.schema.LOSS_WINDOW` losses, ``aum`` (the
mean margin over the sample's observations: Area Under the Margin, Pleiss et al. 2020) and
``wrong_streak`` (observations in a row that ended not correct). A mislabeled sample's assigned
label keeps losing to the class the model learns from its clean neighbours: it stays wrong and its
loss does not go down. A hard but learnable sample is wrong too, but its loss is falling. Nothing
here costs a training pass: cleanlab's Confident Learning needs K extra cross-validated trainings.

Scores are registered by name in :data:`NOISE_SCORES`; each is a pure function of state columns
(arrays in, float64 ``[N]`` out, higher = more suspicious, NaN for a sample never observed), with
the cut that makes a sample a suspect when the caller gives neither ``top`` nor a threshold:

``geko`` (the default)
    ``last + 0.5 (last - previous)``: the last loss extrapolated half an observation ahead (the
    last loss alone after one observation). Cut: wrong at the last observation and the loss did
    not go down since the one before (at least 2 observations). Chosen on the frontier's
    wordnet-supersense task (MiniLM, 20% flipped labels, 3 epochs, training seeds 7 and 8, which
    the benchmark does not use): AUROC 0.918 and 0.920 against 0.869 and 0.884 for ``streak_aum``
    and 0.871 and 0.885 for ``aum``; the cut flagged 119 and 153 samples at precision 0.80 and 0.69
    (20% of the samples were corrupted). In a short run AUM averages over early epochs, when every
    sample's margin is still negative, which blurs it.
``streak_aum``
    ``(wrong_share + sigmoid(-aum)) / 2`` in [0, 1], ``wrong_share = min(wrong_streak,
    times_seen) / times_seen``; cut 0.5. GEKO's selection (``suspect_threshold``) reads this one.
``aum``
    ``-aum``: AUM alone, as in Pleiss et al. (without their threshold-sample calibration); cut 0.
``loss``
    the last training loss: the baseline every loss-ranking method reduces to; no cut.

The ranking rule: score descending, ties by ``sample_id`` ascending; rank 1 is the most suspicious.
Samples never observed (``times_seen == 0``) or, for scores that read it, without a margin yet
(``aum`` NaN) are not ranked.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import ConfigError
from .schema import BUCKET_NAMES
from .validate import check_int, check_number

__all__ = [
    "DEFAULT_NOISE_SCORE",
    "NOISE_SCORES",
    "NoiseScore",
    "SUSPECT_COLUMNS",
    "SuspectsConfig",
    "STATE_COLUMNS",
    "TREND_WEIGHT",
    "geko_cut",
    "geko_score",
    "previous_loss",
    "streak_aum_score",
    "noise_scores",
    "rank_suspects",
    "store_suspects",
    "suspect_mask",
    "suspects_table",
]

# Observations a sample needs before a cut may call it a suspect: after one, a wrong sample has no
# loss trend yet, and every wrong one scores above 0.5 on streak_aum, mislabeled or not learned yet.
MIN_OBSERVATIONS_FOR_SUSPECT = 2

DEFAULT_NOISE_SCORE = "geko"

# Columns of suspects_table and of the SQL view ``suspects``.
SUSPECT_COLUMNS: tuple[str, ...] = ("sample_id", "score", "rank", "in_cut", "aum", "wrong_streak", "times_seen",
                                    "bucket")
# State columns suspects_table reads.
STATE_COLUMNS: tuple[str, ...] = ("sample_id", "bucket", "aum", "wrong_streak", "times_seen", "last_loss", "loss_window")
# geko score: weight of the last step's loss change (measured on wordnet-supersense, training seeds 7
# and 8, 20% flipped labels: 0.25-2 all gave AUROC 0.92, 0.5 the best precision at k)
TREND_WEIGHT = 0.5


def _observed(times_seen: np.ndarray) -> np.ndarray:
    return times_seen > 0


def previous_loss(loss_window: np.ndarray, times_seen: np.ndarray) -> np.ndarray:
    """Each sample's loss at its second-to-last observation, float64 ``[N]`` (NaN before two): the
    loss window is a ring of the last :data:`~geko_state.schema.LOSS_WINDOW` losses whose head is
    ``times_seen % LOSS_WINDOW``."""
    seen = times_seen.astype(np.int64)
    width = loss_window.shape[1]
    prev = loss_window[np.arange(seen.shape[0]), (seen - 2) % width].astype(np.float64)
    prev[seen < 2] = np.nan
    return prev


def geko_score(last_loss: np.ndarray, loss_window: np.ndarray, times_seen: np.ndarray) -> np.ndarray:
    """GEKO's noise score, float64 ``[N]``: the last loss extrapolated half an observation ahead,
    ``last + 0.5 (last - previous)`` (the last loss alone after one observation); NaN unobserved."""
    last = last_loss.astype(np.float64)
    prev = previous_loss(loss_window, times_seen)
    out = np.where(np.isnan(prev), last, last + TREND_WEIGHT * (last - prev))
    out[~_observed(times_seen)] = np.nan
    return out


def streak_aum_score(aum: np.ndarray, wrong_streak: np.ndarray, times_seen: np.ndarray) -> np.ndarray:
    """``(wrong_share + sigmoid(-aum)) / 2`` in [0, 1], ``wrong_share = min(wrong_streak,
    times_seen) / times_seen``; NaN where unobserved or without a margin."""
    seen = times_seen.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        wrong_share = np.minimum(wrong_streak.astype(np.float64), seen) / seen
        a = aum.astype(np.float64)
        e = np.exp(-np.abs(a))  # sigmoid(-aum) without overflow for large |aum|
        sig = np.where(a >= 0, e / (1 + e), 1 / (1 + e))
    out = (wrong_share + sig) / 2
    out[~_observed(times_seen) | np.isnan(a)] = np.nan
    return out


def _geko(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return geko_score(cols["last_loss"], cols["loss_window"], cols["times_seen"])


def geko_cut(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool ``[N]``, the ``geko`` score's default cut: wrong at the last observation, and the loss
    did not go down since the one before (at least :data:`MIN_OBSERVATIONS_FOR_SUSPECT`
    observations). :mod:`geko_state.progress` sets the same samples aside."""
    prev = previous_loss(cols["loss_window"], cols["times_seen"])
    with np.errstate(invalid="ignore"):
        return (np.asarray(cols["wrong_streak"]) >= 1) & ~(prev > np.asarray(cols["last_loss"], np.float64))  \
            & (np.asarray(cols["times_seen"]) >= MIN_OBSERVATIONS_FOR_SUSPECT)


def _geko_cut(cols: Mapping[str, np.ndarray], scores: np.ndarray) -> np.ndarray:
    return geko_cut(cols)


def _streak_aum(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return streak_aum_score(cols["aum"], cols["wrong_streak"], cols["times_seen"])


def _aum(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    out = -np.asarray(cols["aum"], np.float64)
    out[~_observed(np.asarray(cols["times_seen"]))] = np.nan
    return out


def _loss(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    out = np.asarray(cols["last_loss"], np.float64).copy()
    out[~_observed(np.asarray(cols["times_seen"]))] = np.nan
    return out


def _above(threshold: float) -> Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray]:
    def cut(cols: Mapping[str, np.ndarray], scores: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return scores > threshold
    return cut


@dataclass(frozen=True)
class NoiseScore:
    """A registered score: its function of the state columns (a mapping by name, arrays in, float64
    ``[N]`` out), and the cut that makes a sample a suspect when the caller gives no ``top`` or
    threshold (``default_cut(columns, scores) -> bool [N]``; None: the score has no natural cut,
    ask for ``top`` instead), with the cut in words."""

    name: str
    fn: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    default_cut: Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray] | None
    cut_text: str | None
    description: str


NOISE_SCORES: dict[str, NoiseScore] = {
    s.name: s
    for s in (
        NoiseScore("geko", _geko, _geko_cut, "wrong at the last observation, loss not going down",
                   "the last loss extrapolated half an observation ahead: last + 0.5 (last - previous)"),
        NoiseScore("streak_aum", _streak_aum, _above(0.5), "score above 0.5",
                   "(share of last observations all wrong + sigmoid(-AUM)) / 2"),
        NoiseScore("aum", _aum, _above(0.0), "score above 0 (the label lost on average)",
                   "-AUM: minus the mean margin of the assigned label"),
        NoiseScore("loss", _loss, None, None, "the last training loss"),
    )
}


def _get(name: str) -> NoiseScore:
    if name not in NOISE_SCORES:
        raise ConfigError(f"noise score must be one of {sorted(NOISE_SCORES)}, got {name!r}")
    return NOISE_SCORES[name]


def noise_scores(columns: Mapping[str, np.ndarray], score: str = DEFAULT_NOISE_SCORE) -> np.ndarray:
    """Score ``score`` (a :data:`NOISE_SCORES` name) of every sample, float64 ``[N]``; NaN = not ranked.

    ``columns``: state columns by name (a :class:`~geko_state.store.StateStore`'s ``column``
    arrays, or any mapping holding the ones the score reads).
    """
    return _get(score).fn(columns)


def rank_suspects(scores: np.ndarray, *, top: int | None = None, threshold: float | None = None,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """Row indices of the suspects, most suspicious first, int64.

    Score descending, ties by index ascending; NaN scores never rank. ``mask`` (bool ``[N]``): only
    those rows; ``threshold``: only scores above it; ``top``: at most that many (after the rest).
    """
    ok = ~np.isnan(scores) if mask is None else ~np.isnan(scores) & mask
    idx = np.flatnonzero(ok).astype(np.int64)
    if threshold is not None:
        idx = idx[scores[idx] > threshold]
    # A stable sort on -score keeps ascending ids among ties.
    order = idx[np.argsort(-scores[idx], kind="stable")]
    return order if top is None else order[:top]


@dataclass(frozen=True)
class SuspectsConfig:
    """Which samples count as suspects: the score's name, and ``top`` (the K highest) and/or
    ``threshold`` (scores above it). Neither: the score's default cut."""

    score: str = DEFAULT_NOISE_SCORE
    top: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        _get(self.score)
        if self.top is not None:
            check_int(self.top, "SuspectsConfig.top", 0, error=ConfigError, form="None or an integer >= 0")
        if self.threshold is not None:
            object.__setattr__(self, "threshold", check_number(self.threshold, "SuspectsConfig.threshold",
                                                               error=ConfigError, what="None or a finite number"))
        if self.top is None and self.threshold is None and _get(self.score).default_cut is None:
            raise ConfigError(f"the {self.score!r} score has no natural threshold: give top=K or a threshold")

    @property
    def uses_default_cut(self) -> bool:
        """True when neither ``top`` nor ``threshold`` is given: the score's own cut decides."""
        return self.top is None and self.threshold is None

    def describe(self) -> str:
        """The rule in words, for messages: ``"geko: wrong at the last observation, ..."``,
        ``"top 100 by loss score above 2"``."""
        if self.uses_default_cut:
            return f"{self.score}: {_get(self.score).cut_text}"
        if self.top is None:
            return f"{self.score} score above {self.threshold:g}"
        best = f"top {self.top:,} by {self.score} score"
        return best if self.threshold is None else f"{best} above {self.threshold:g}"

    def select(self, columns: Mapping[str, np.ndarray], scores: np.ndarray) -> np.ndarray:
        """Row indices of the suspects by this rule, most suspicious first (see :func:`rank_suspects`)."""
        if self.uses_default_cut:
            return rank_suspects(scores, mask=_get(self.score).default_cut(columns, scores))
        return rank_suspects(scores, top=self.top, threshold=self.threshold)


def suspects_table(columns: Mapping[str, np.ndarray], config: SuspectsConfig | None = None, *,
                   ranked_only: bool = True) -> pa.Table:
    """The suspects as a ``pyarrow.Table`` with :data:`SUSPECT_COLUMNS`, rank 1 first.

    ``columns``: state columns by name (``sample_id``, ``bucket``, ``aum``, ``wrong_streak``,
    ``times_seen``, ``last_loss``, ``loss_window``). With ``ranked_only=False`` every ranked sample is returned
    whatever ``config``'s top / threshold (the SQL view does this: users filter with WHERE).
    ``in_cut``: the sample is inside the score's default cut (False for a score without one).
    """
    config = config or SuspectsConfig()
    scores = noise_scores(columns, config.score)
    if ranked_only:
        rows = config.select(columns, scores)
    else:
        rows = rank_suspects(scores)
    cut = _get(config.score).default_cut
    in_cut = np.zeros(rows.shape[0], dtype=bool) if cut is None else cut(columns, scores)[rows]
    bucket_codes = np.asarray(columns["bucket"])[rows].astype(np.int8)
    return pa.table({
        "sample_id": pa.array(np.asarray(columns["sample_id"])[rows], pa.int64()),
        "score": pa.array(scores[rows], pa.float64()),
        "rank": pa.array(np.arange(1, rows.shape[0] + 1, dtype=np.int64)),
        "in_cut": pa.array(in_cut, pa.bool_()),
        "aum": pa.array(np.asarray(columns["aum"])[rows], pa.float32()),
        "wrong_streak": pa.array(np.asarray(columns["wrong_streak"])[rows], pa.uint8()),
        "times_seen": pa.array(np.asarray(columns["times_seen"])[rows], pa.int32()),
        "bucket": pa.DictionaryArray.from_arrays(pa.array(bucket_codes, pa.int8()), pa.array(BUCKET_NAMES)),
    })


def store_suspects(store: object, config: SuspectsConfig | None = None, *, ranked_only: bool = True) -> pa.Table:
    """:func:`suspects_table` of a :class:`~geko_state.store.StateStore` (read through its
    ``column`` views, nothing copied but the result)."""
    return suspects_table({c: store.column(c) for c in STATE_COLUMNS}, config, ranked_only=ranked_only)


def suspect_mask(aum: np.ndarray, wrong_streak: np.ndarray, times_seen: np.ndarray, threshold: float) -> np.ndarray:
    """bool ``[N]``: samples observed at least :data:`MIN_OBSERVATIONS_FOR_SUSPECT` times whose
    ``streak_aum`` score is above ``threshold`` (what GEKO's selection sets aside with
    ``SelectionConfig(suspect_threshold=...)``)."""
    with np.errstate(invalid="ignore"):
        return (times_seen >= MIN_OBSERVATIONS_FOR_SUSPECT) & (streak_aum_score(aum, wrong_streak, times_seen) > threshold)
