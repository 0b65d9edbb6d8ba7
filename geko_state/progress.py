"""Whether another epoch still pays: learning progress read from the state, with no eval set.

After an epoch every sample observed at least twice falls in one of three groups, by its last
observation and the loss change since the one before (the loss window's last two entries):

* **learned**: correct at its last observation;
* **learning**: wrong, and its loss went down: a hard sample the model is still getting;
* **suspect**: wrong, and its loss did not go down: GEKO's default noise cut
  (:mod:`geko_state.noise`, score ``geko``), probably mislabeled.

``improving_share`` is ``learning / (learned + learning)``: the share of the learnable samples
(suspects set aside) that the model is still moving towards right. While it is large, another
epoch turns many of them correct; once it is small, the clean samples are learned and another
epoch mostly fits the suspects, which is memorising noise. ``open_share`` is the issue's second
figure: the share of unpruned non-suspect samples still in FOCUS or HARD.

:class:`PlateauStop` turns ``improving_share`` into a stop rule; trainers apply it at each epoch's
end (``GEKOSettings(stop_on_plateau=PlateauStop())``), for GEKO's selection and the baselines
alike: it reads the state, which every policy keeps.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .noise import MIN_OBSERVATIONS_FOR_SUSPECT, geko_cut
from .schema import Bucket
from .validate import check_int, check_number

__all__ = ["PROGRESS_COLUMNS", "LearningProgress", "PlateauStop", "learning_progress", "store_progress"]

# State columns learning_progress reads.
PROGRESS_COLUMNS: tuple[str, ...] = ("bucket", "pruned", "wrong_streak", "times_seen", "last_loss", "loss_window")


@dataclass(frozen=True)
class LearningProgress:
    """Counts over the unpruned samples after an epoch (see the module docstring)."""

    epoch: int
    active: int  # unpruned samples
    trended: int  # among them, observed at least twice (a loss change is known)
    learned: int  # trended, correct at the last observation
    learning: int  # trended, wrong, loss went down since the observation before
    suspects: int  # trended, wrong, loss did not go down
    open: int  # unpruned, not a suspect, in FOCUS or HARD

    @property
    def improving_share(self) -> float:
        """``learning / (learned + learning)``; NaN before any sample has a loss change."""
        learnable = self.learned + self.learning
        return self.learning / learnable if learnable else math.nan

    @property
    def open_share(self) -> float:
        """``open`` among the unpruned non-suspect samples (NaN when there are none)."""
        rest = self.active - self.suspects
        return self.open / rest if rest else math.nan

    @property
    def suspect_share(self) -> float:
        return self.suspects / self.trended if self.trended else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "improving_share": self.improving_share, "open_share": self.open_share,
                "suspect_share": self.suspect_share}

    def format_line(self) -> str:
        return (f"[GEKO] Epoch {self.epoch} progress: improving {100 * self.improving_share:.1f}% of learnable | "
                f"open {100 * self.open_share:.1f}% | suspects {self.suspects}")


def learning_progress(cols: Mapping[str, np.ndarray], epoch: int = 0) -> LearningProgress:
    """:class:`LearningProgress` of state columns (:data:`PROGRESS_COLUMNS`): arrays in, counts out."""
    active = ~np.asarray(cols["pruned"]).astype(bool)
    trended = active & (np.asarray(cols["times_seen"]) >= MIN_OBSERVATIONS_FOR_SUSPECT)
    wrong = np.asarray(cols["wrong_streak"]) >= 1
    suspects = active & geko_cut(cols)  # trended and wrong, with a loss that did not go down
    bucket = np.asarray(cols["bucket"])
    unlearned = (bucket == int(Bucket.FOCUS)) | (bucket == int(Bucket.HARD))
    return LearningProgress(
        epoch=int(epoch), active=int(active.sum()), trended=int(trended.sum()),
        learned=int((trended & ~wrong).sum()), learning=int((trended & wrong & ~suspects).sum()),
        suspects=int(suspects.sum()), open=int((active & ~suspects & unlearned).sum()),
    )


def store_progress(store: Any) -> LearningProgress:
    """:func:`learning_progress` of a :class:`~geko_state.store.StateStore` at its current epoch."""
    return learning_progress({c: store.column(c) for c in PROGRESS_COLUMNS}, store.epoch)


@dataclass(frozen=True)
class PlateauStop:
    """Stop training after an epoch whose ``improving_share`` is below ``min_improving``, from
    epoch ``min_epochs`` on (the loss change needs two observations). docs/training.md ("Knowing
    when to stop") has what it was measured to gain."""

    min_improving: float = 0.1
    min_epochs: int = 2

    def __post_init__(self) -> None:
        check_number(self.min_improving, "min_improving", 0, 1, error=ConfigError, what="a share")
        object.__setattr__(self, "min_epochs", check_int(self.min_epochs, "min_epochs", 2, error=ConfigError))

    def should_stop(self, progress: LearningProgress) -> bool:
        share = progress.improving_share
        return progress.epoch >= self.min_epochs and not math.isnan(share) and share < self.min_improving
