"""Suspects for a person to read: how many there are, a table of text with the data rows beside
them, and the Parquet file.

:mod:`geko_state.noise` decides which samples are suspects; this module shows them. ``geko
suspects`` prints :meth:`Suspects.display` and writes :func:`write_suspects`; the Suspects panel of
``geko app`` shows the same table.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .datafiles import rows_where
from .errors import InputError
from .io import atomic_path
from .noise import STATE_COLUMNS, SuspectsConfig, noise_scores, store_suspects

__all__ = ["SUSPECTS_FILE", "TEXT_WIDTH", "Suspects", "check_suspects_path", "read_suspects", "row_text", "row_texts",
           "write_suspects"]

SUSPECTS_FILE = "suspects.parquet"  # geko suspects writes RUN_DIR/suspects.parquet unless told otherwise
TEXT_WIDTH = 60  # characters of a data row shown beside its suspect
_NUMBER_COLUMNS = ("rank", "sample_id", "score", "aum", "wrong_streak", "times_seen")


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):  # a chat's messages, a struct
        return json.dumps(value, ensure_ascii=False, default=str)
    return "null" if value is None else str(value)


def row_text(row: Mapping[str, Any], width: int = TEXT_WIDTH) -> str:
    """A data row on one line, cut to ``width`` characters: ``"text: great movie | label: 0"``
    (only the value when the row has one column)."""
    if len(row) == 1:
        text = _value_text(next(iter(row.values())))
    else:
        text = " | ".join(f"{k}: {_value_text(v)}" for k, v in row.items())
    text = " ".join(text.split())  # newlines and runs of spaces would break a table's rows
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def row_texts(dataset: str | os.PathLike, ids: Sequence[int] | np.ndarray, n_samples: int, *,
              columns: Sequence[str] | None = None, width: int = TEXT_WIDTH, what: str = "dataset") -> list[str]:
    """:func:`row_text` of rows ``ids`` of ``dataset`` (row ``i`` is sample ``i``), in the order of
    ``ids``. ``columns``: show only these (those the file has; all when none of them is there).
    The file must have ``n_samples`` rows; InputError naming ``what`` otherwise."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n_samples):
        raise InputError(f"row_texts: ids must be in [0, {n_samples}), got {ids.min()}..{ids.max()}")
    mask = np.zeros(n_samples, dtype=bool)
    mask[ids] = True
    lazy = rows_where(dataset, mask, what)
    present = lazy.collect_schema().names()
    chosen = [c for c in columns or () if c in present] or present
    frame = lazy.select(chosen).collect()
    # rows_where keeps file order: the i-th row read is the i-th smallest id
    by_id = dict(zip(np.unique(ids).tolist(), (row_text(r, width) for r in frame.iter_rows(named=True))))
    return [by_id[i] for i in ids.tolist()]


def _aum_text(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:+.3f}"


@dataclass(frozen=True)
class Suspects:
    """The suspects of one state: ``table`` (:func:`~geko_state.noise.suspects_table`, rank 1
    first), the rule that chose them, how many samples the score ranks at all, and the sample count."""

    table: pa.Table
    config: SuspectsConfig
    ranked: int
    n_samples: int

    def summary(self) -> str:
        """One line: how many, by which rule, among how many; why none can be ranked, if so."""
        k = self.table.num_rows
        line = (f"{k:,} suspect{'' if k == 1 else 's'} ({self.config.describe()}) among {self.ranked:,} "
                f"ranked of {self.n_samples:,} samples")
        if self.ranked == 0:
            line += ("; none can be ranked yet: a sample is ranked once observed, and by the aum and "
                     "streak_aum scores once it has a logit margin (aum)")
        return line

    def display(self, rows: int | None = None, *, dataset: str | os.PathLike | None = None,
                columns: Sequence[str] | None = None, what: str = "dataset", align: bool = False) -> pl.DataFrame:
        """The first ``rows`` suspects (None: all) as text, numbers formatted: rank, sample_id,
        score, aum, wrong_streak, times_seen, bucket, and with ``dataset`` the data row
        (:func:`row_texts`: InputError for a file that is not the state's dataset). ``align``:
        numbers padded on the left to one width, for a printed table."""
        t = self.table if rows is None else self.table.slice(0, rows)
        out = {
            "rank": [str(v) for v in t["rank"].to_pylist()],
            "sample_id": [str(v) for v in t["sample_id"].to_pylist()],
            "score": [f"{v:.4f}" for v in t["score"].to_pylist()],
            "aum": [_aum_text(v) for v in t["aum"].to_pylist()],
            "wrong_streak": [str(v) for v in t["wrong_streak"].to_pylist()],
            "times_seen": [f"{v:,}" for v in t["times_seen"].to_pylist()],
            "bucket": [str(v) for v in t["bucket"].to_pylist()],
        }
        for name in _NUMBER_COLUMNS if align else ():  # a printed table left-aligns text
            width = max([len(name), *map(len, out[name])])
            out[name] = [v.rjust(width) for v in out[name]]
        if dataset is not None:
            out["text"] = row_texts(dataset, t["sample_id"].to_numpy(), self.n_samples, columns=columns, what=what)
        return pl.DataFrame(out, schema={name: pl.String for name in out})


def read_suspects(store: Any, config: SuspectsConfig | None = None) -> Suspects:
    """The suspects of an open :class:`~geko_state.store.StateStore` by ``config`` (default:
    :class:`SuspectsConfig`'s)."""
    config = config or SuspectsConfig()
    ranked = int(np.count_nonzero(~np.isnan(noise_scores({c: store.column(c) for c in STATE_COLUMNS}, config.score))))
    return Suspects(store_suspects(store, config), config, ranked, store.n_samples)


def write_suspects(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write a suspects table to a Parquet file, atomically (temporary name, then rename)."""
    path = check_suspects_path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def check_suspects_path(path: str | os.PathLike, what: str = "suspects file") -> Path:
    """``path`` when it names a Parquet file (``.parquet``); InputError naming ``what`` otherwise."""
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        raise InputError(f"{what} {path}: expected a .parquet file, got {path.suffix or '(no suffix)'!r}")
    if path.is_dir():
        raise InputError(f"{what} {path}: a directory; expected a file")
    return path
