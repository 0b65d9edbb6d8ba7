"""Dataset and id-list file formats by suffix: the one table that training, exports and the app read.

Row ``i`` of a dataset file is sample id ``i`` everywhere, so every format here keeps row order.
Torch-free: ``geko train`` reads the same files that ``geko export`` writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError

__all__ = [
    "DATA_FORMATS",
    "DataFormat",
    "SAVED_DATASET",
    "ID_FORMATS",
    "check_data_path",
    "data_columns",
    "data_format",
    "id_writer",
    "read_table",
    "rows_where",
    "supported_formats",
]


@dataclass(frozen=True)
class DataFormat:
    """How to read, stream and write one dataset file format."""

    name: str  # for messages: "JSONL", "Parquet", ...
    read: Callable[[Path], pl.DataFrame]  # the whole file, types inferred from every row
    scan: Callable[[Path], pl.LazyFrame]  # streamed (exports of datasets larger than memory)
    sink: Callable[[pl.LazyFrame, Path], None]
    columns: Callable[[Path, int], list[str]]  # column names from the schema or the first rows


# Polars takes a path with * ? [ as a glob (a file "data*.jsonl" would be read together with
# "data1.jsonl"); files are read by their exact name: glob=False where Polars has it, an open
# file where it has not.
_GLOB_CHARS = frozenset("*?[")


def _literal(p: Path) -> bool:
    return not (_GLOB_CHARS & set(str(p)))


def _read_jsonl(p: Path) -> pl.DataFrame:
    # types from every row: a column whose first rows look numeric must not fail later
    with open(p, "rb") as f:
        return pl.read_ndjson(f, infer_schema_length=None)


def _scan_jsonl(p: Path) -> pl.LazyFrame:
    return pl.scan_ndjson(p) if _literal(p) else _read_jsonl(p).lazy()


def _jsonl_columns(p: Path, rows: int) -> list[str]:
    if not _literal(p):
        return _read_jsonl(p).columns
    return pl.scan_ndjson(p, infer_schema_length=rows).collect_schema().names()


def _ipc_file_format(p: Path) -> bool:
    """True for the Arrow IPC file format, False for the stream format (what Hugging Face
    ``datasets`` writes)."""
    with open(p, "rb") as f:
        return f.read(6) == b"ARROW1"


def _read_ipc(p: Path) -> pl.DataFrame:
    read = pl.read_ipc if _ipc_file_format(p) else pl.read_ipc_stream
    with open(p, "rb") as f:  # a fresh handle: Polars reads from the file's start
        return read(f)


def _scan_ipc(p: Path) -> pl.LazyFrame:
    return pl.scan_ipc(p, glob=False) if _ipc_file_format(p) else _read_ipc(p).lazy()


_JSONL = DataFormat(
    "JSONL",
    read=_read_jsonl,
    scan=_scan_jsonl,
    sink=lambda lf, p: lf.sink_ndjson(p),
    columns=_jsonl_columns,
)
_PARQUET = DataFormat(
    "Parquet",
    read=lambda p: pl.read_parquet(p, glob=False),
    scan=lambda p: pl.scan_parquet(p, glob=False),
    sink=lambda lf, p: lf.sink_parquet(p),
    columns=lambda p, rows: list(pl.read_parquet_schema(p)),
)
_CSV = DataFormat(
    "CSV",
    read=lambda p: pl.read_csv(p, infer_schema_length=None, glob=False),
    scan=lambda p: pl.scan_csv(p, glob=False),
    sink=lambda lf, p: lf.sink_csv(p),
    columns=lambda p, rows: pl.scan_csv(p, infer_schema_length=rows, glob=False).collect_schema().names(),
)
_IPC = DataFormat(
    "Arrow IPC",
    read=_read_ipc,
    scan=_scan_ipc,
    sink=lambda lf, p: lf.sink_ipc(p),
    columns=lambda p, rows: _scan_ipc(p).collect_schema().names(),
)

def _saved_dataset_files(d: Path) -> list[Path]:
    """The Arrow files of a ``Dataset.save_to_disk`` directory, in row order (its state.json)."""
    import json

    try:
        state = json.loads((d / "state.json").read_text())
        names = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{d}: unreadable state.json of a saved dataset ({e})") from None
    files = [d / n for n in names]
    for f in files:
        if f.parent != d or not f.is_file():
            raise InputError(f"{d}: state.json lists {f.name}, which is not a file of the directory")
    return files


def _read_saved(d: Path) -> pl.DataFrame:
    frames = [_read_ipc(f) for f in _saved_dataset_files(d)]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame()


def _refuse_write(lf: pl.LazyFrame, p: Path) -> None:
    raise InputError(f"{p}: a saved-dataset directory is read, not written; give a file (.parquet, .jsonl, ...)")


# A directory written by Hugging Face datasets' Dataset.save_to_disk (Arrow stream files and a
# state.json listing them in order); read without importing datasets.
SAVED_DATASET = DataFormat(
    "datasets directory (save_to_disk)",
    read=_read_saved,
    scan=lambda d: _read_saved(d).lazy(),
    sink=_refuse_write,
    columns=lambda d, rows: _scan_ipc(_saved_dataset_files(d)[0]).collect_schema().names(),
)


def _directory_format(path: Path, what: str) -> DataFormat:
    """One message for every directory that is not a saved dataset."""
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return SAVED_DATASET
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "state.json").is_file())
        raise InputError(f"{what} {path}: a saved DatasetDict; give one split's directory"
                         + (f", e.g. {path / splits[0]} (splits: {', '.join(splits)})" if splits else ""))
    raise InputError(f"{what} {path}: a directory; expected a dataset file ({supported_formats()}) or a "
                     "directory written by datasets' save_to_disk (state.json, dataset_info.json)")


# Dataset file suffix (lower case) -> format.
DATA_FORMATS: dict[str, DataFormat] = {
    ".jsonl": _JSONL, ".ndjson": _JSONL,
    ".parquet": _PARQUET, ".pq": _PARQUET,
    ".csv": _CSV,
    ".arrow": _IPC, ".ipc": _IPC, ".feather": _IPC,
}


def supported_formats() -> str:
    """The dataset suffixes for help texts and messages: ``".jsonl, .ndjson, ..."``."""
    return ", ".join(DATA_FORMATS)


def data_format(path: str | os.PathLike, what: str = "dataset") -> DataFormat:
    """The format of a dataset file from its suffix; InputError naming ``what``, the file and the
    supported suffixes when there is none."""
    path = Path(path)
    if path.is_dir():
        return _directory_format(path, what)
    suffix = path.suffix.lower()
    fmt = DATA_FORMATS.get(suffix)
    if fmt is None:
        raise InputError(
            f"{what} {path}: unsupported format {suffix or '(no suffix)'!r}; supported: {supported_formats()} "
            "(one sample per row)"
        )
    return fmt


def check_data_path(path: str | os.PathLike, what: str = "dataset") -> Path:
    """``path`` as a Path when it is an existing file with a supported suffix; else InputError
    naming ``what`` (e.g. ``"--eval-file"``), the file and the supported formats."""
    path = Path(path)
    if data_format(path, what) is SAVED_DATASET:
        return path
    if not path.exists():
        raise InputError(f"{what} {path}: no such file")
    if not path.is_file():
        raise InputError(f"{what} {path}: not a file")
    return path


def _blank(path: Path, limit: int = 1 << 16) -> bool:
    """True when the file holds nothing but whitespace (only small files are checked)."""
    size = path.stat().st_size
    if size == 0:
        return True
    if size > limit:
        return False
    return not path.read_bytes().strip()


def read_table(path: str | os.PathLike, what: str = "dataset") -> pl.DataFrame:
    """Read a dataset file (format by suffix) into a ``polars.DataFrame`` ``[rows, columns]``.

    Raises InputError for a missing file, an unsupported suffix, a file that cannot be parsed,
    and an empty file (no rows).
    """
    path = check_data_path(path, what)
    fmt = data_format(path, what)
    if fmt is not SAVED_DATASET and _blank(path):
        raise InputError(f"{what} {path}: the file is empty; expected one sample per row")
    try:
        table = fmt.read(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise InputError(f"{what} {path}: cannot read it as {fmt.name} ({e})") from None
    if table.height == 0:
        raise InputError(f"{what} {path}: the file has no rows (columns: {', '.join(table.columns) or 'none'})")
    return table


def data_columns(path: str | os.PathLike, what: str = "dataset file", rows: int = 1_000) -> list[str]:
    """Column names of a dataset file, from its schema (JSONL / CSV: from the first ``rows`` rows);
    InputError for a missing file, an unsupported suffix or a file that cannot be read."""
    p = check_data_path(path, what)
    fmt = data_format(p, what)
    try:
        return fmt.columns(p, rows)
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise InputError(f"{what} {p}: cannot read it as {fmt.name} ({e})") from None


def _row_index_name(columns: list[str]) -> str:
    name = "__geko_row"
    while name in columns:
        name += "_"
    return name


def rows_where(path: str | os.PathLike, mask: np.ndarray, what: str = "dataset") -> pl.LazyFrame:
    """The rows ``i`` of a dataset file where ``mask[i]`` (bool ``[N]``), in file order, streamed.

    Row ``i`` is sample id ``i``, so the file must have exactly ``N`` rows: InputError naming both
    counts otherwise, and for a file that is missing, unsupported or cannot be read. The count and
    schema are read here; the rows when the returned frame is collected or sunk.
    """
    path = check_data_path(path, what)
    fmt = data_format(path, what)
    try:
        lazy = fmt.scan(path)
        n_rows = int(lazy.select(pl.len()).collect().item())
        columns = lazy.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputError(f"{what} {path}: cannot read it as {fmt.name} ({e})") from None
    if n_rows != mask.shape[0]:
        raise InputError(
            f"{what} {path}: has {n_rows} rows but the state has {mask.shape[0]} samples; give the dataset "
            "the state was built on (row i is sample id i)"
        )
    row = _row_index_name(columns)
    # Look the row index up in an N-bit mask instead of joining on ids: no hash table, and the
    # scan stays a single streaming pass in file order.
    return lazy.with_row_index(row).filter(pl.lit(pl.Series(mask)).gather(pl.col(row))).drop(row)


def _ids_txt(ids: np.ndarray, path: Path) -> None:
    pl.DataFrame({"sample_id": ids}).write_csv(path, include_header=False)


def _ids_parquet(ids: np.ndarray, path: Path) -> None:
    pq.write_table(pa.table({"sample_id": ids}), path, compression="zstd")


# Id list suffix -> writer of int64 ids ``[K]``.
ID_FORMATS: dict[str, Callable[[np.ndarray, Path], None]] = {".txt": _ids_txt, ".parquet": _ids_parquet}


def id_writer(path: str | os.PathLike, what: str = "id list") -> Callable[[np.ndarray, Path], None]:
    """The writer of an id list file from its suffix; InputError naming ``what``, the file and the
    supported suffixes when there is none."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ID_FORMATS:
        raise InputError(
            f"{what} {path}: unsupported format {suffix or '(no suffix)'!r}; supported: {', '.join(sorted(ID_FORMATS))}"
        )
    return ID_FORMATS[suffix]
