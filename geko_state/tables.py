"""Query results as text (an aligned table, CSV, JSON) or files (those, or Parquet)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import polars as pl

from .errors import InputError
from .io import atomic_path

__all__ = ["RESULT_FORMATS", "TEXT_FORMATS", "render_text", "write_result"]


def _flat(df: pl.DataFrame) -> pl.DataFrame:
    """CSV holds no lists or structs: write nested values as JSON text."""
    nested = [name for name, dt in df.schema.items() if dt.is_nested()]
    return df.with_columns(
        pl.Series(name, [json.dumps(v) for v in df[name].to_list()], dtype=pl.String) for name in nested
    )


def _table(df: pl.DataFrame) -> str:
    with pl.Config(
        tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
        tbl_hide_dtype_separator=True, tbl_width_chars=65_535, fmt_str_lengths=10_000,
        tbl_formatting="UTF8_FULL_CONDENSED",
    ):
        return str(df)


TEXT_FORMATS: dict[str, Callable[[pl.DataFrame], str]] = {
    "table": _table,
    "csv": lambda df: _flat(df).write_csv(),
    "json": lambda df: df.write_json() + "\n",
}


def _text_writer(fmt: str) -> Callable[[pl.DataFrame, Path], None]:
    return lambda df, path: path.write_text(TEXT_FORMATS[fmt](df))


_FILE_WRITERS: dict[str, Callable[[pl.DataFrame, Path], None]] = {
    **{fmt: _text_writer(fmt) for fmt in TEXT_FORMATS},
    "parquet": lambda df, path: df.write_parquet(path, compression="zstd"),
}

RESULT_FORMATS: tuple[str, ...] = tuple(_FILE_WRITERS)


def render_text(df: pl.DataFrame, fmt: str = "table") -> str:
    """``df`` as text in ``fmt`` (:data:`TEXT_FORMATS`)."""
    if fmt not in TEXT_FORMATS:
        raise InputError(f"format {fmt!r} is not text; expected one of {list(TEXT_FORMATS)}")
    return TEXT_FORMATS[fmt](df)


def write_result(df: pl.DataFrame, path: str | os.PathLike, fmt: str = "parquet") -> Path:
    """Write ``df`` to ``path`` in ``fmt`` (:data:`RESULT_FORMATS`), atomically."""
    if fmt not in RESULT_FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {list(RESULT_FORMATS)}")
    path = Path(path)
    with atomic_path(path) as tmp:
        _FILE_WRITERS[fmt](df, tmp)
    return path
