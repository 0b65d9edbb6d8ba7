"""Column layout of the per-sample state, shared by every storage backend.

The state is one row per sample, stored as fixed-width columns so it can be memory-mapped and
updated in place by the kernels. Booleans are stored as ``uint8`` (Arrow's bit-packed booleans
cannot be written per element from parallel kernels); :meth:`StateStore.to_arrow` presents them
as ``bool``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "Bucket",
    "BUCKET_NAMES",
    "Column",
    "COLUMNS",
    "COLUMN_NAMES",
    "LOSS_WINDOW",
    "SCHEMA_VERSION",
    "arrow_schema",
    "bytes_per_sample",
    "initial_columns",
]

# Bumped whenever the file layout changes; files of another version are refused on open.
# 1: the columns below. 2: the same columns, plus a checksum of the data (``geko.checksum`` in the
# schema metadata, and in the live file's sidecar), verified on open. 3: the learnability columns
# (aum, wrong_streak) that the noise score and selection read.
SCHEMA_VERSION = 3

# Number of recent losses kept per sample for the quality (stability) signal.
LOSS_WINDOW = 5


class Bucket(enum.IntEnum):
    """Learning-state bucket of a sample; the integer is what the ``bucket`` column stores."""

    FREEZE = 0
    LIGHT = 1
    FOCUS = 2
    HARD = 3


BUCKET_NAMES: tuple[str, ...] = tuple(b.name for b in Bucket)


@dataclass(frozen=True)
class Column:
    name: str
    dtype: np.dtype
    initial: float | int
    width: int = 1  # >1: a fixed-size list column of this many values per sample

    @property
    def arrow_type(self) -> pa.DataType:
        base = pa.from_numpy_dtype(self.dtype)
        if self.name == "bucket":
            return pa.dictionary(pa.int8(), pa.string())
        if self.width > 1:
            return pa.list_(base, self.width)
        return base

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize * self.width


COLUMNS: tuple[Column, ...] = (
    Column("sample_id", np.dtype(np.int64), 0),
    Column("bucket", np.dtype(np.int8), int(Bucket.FOCUS)),
    Column("confidence", np.dtype(np.float32), 0.0),
    Column("correct", np.dtype(np.uint8), 0),
    Column("q_value", np.dtype(np.float32), 0.5),
    Column("last_loss", np.dtype(np.float32), float("nan")),
    Column("quality", np.dtype(np.float32), 1.0),
    Column("times_seen", np.dtype(np.int32), 0),
    Column("consecutive_frozen", np.dtype(np.int32), 0),
    Column("frozen_at_epoch", np.dtype(np.int32), -1),
    Column("pruned", np.dtype(np.uint8), 0),
    # Learnability (see geko_state.noise). aum: the mean logit margin of the assigned label (its
    # logit minus the largest other logit; for a causal LM the mean over label tokens) over the
    # sample's observations, AUM in Pleiss et al. 2020; NaN until the first margin. wrong_streak:
    # observations in a row that ended not correct, 0 after a correct one, saturating at 255. One
    # float and one byte keep the state within DESIGN's 64 bytes per sample.
    Column("aum", np.dtype(np.float32), float("nan")),
    Column("wrong_streak", np.dtype(np.uint8), 0),
    # Ring buffer of the last LOSS_WINDOW losses; its head and fill are derived from times_seen,
    # so no extra column is needed.
    Column("loss_window", np.dtype(np.float32), 0.0, LOSS_WINDOW),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)


def bytes_per_sample() -> int:
    """Bytes of state per sample (all columns)."""
    return sum(c.itemsize for c in COLUMNS)


def arrow_schema(n_samples: int) -> pa.Schema:
    """The Arrow schema of a state file, with the version and sample count as metadata."""
    fields = [pa.field(c.name, c.arrow_type, nullable=False) for c in COLUMNS]
    meta = {"geko.schema_version": str(SCHEMA_VERSION), "geko.n_samples": str(int(n_samples))}
    return pa.schema(fields, metadata=meta)


def initial_columns(n_samples: int, start: int = 0) -> dict[str, np.ndarray]:
    """Fresh state for samples ``start .. start + n_samples - 1`` as numpy arrays.

    Returns a dict of column name -> array of shape ``[n]`` (``[n, LOSS_WINDOW]`` for the window).
    """
    out: dict[str, np.ndarray] = {}
    for c in COLUMNS:
        if c.name == "sample_id":
            out[c.name] = np.arange(start, start + n_samples, dtype=np.int64)
        elif c.width > 1:
            out[c.name] = np.full((n_samples, c.width), c.initial, dtype=c.dtype)
        else:
            out[c.name] = np.full(n_samples, c.initial, dtype=c.dtype)
    return out
