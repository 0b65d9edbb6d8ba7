"""Offline pruning exports: the ids of the samples worth keeping, or the kept rows of a dataset.

Row ``i`` of the dataset is sample id ``i`` of the state (ids are row positions everywhere), so
the dataset must have exactly as many rows as the state has samples. Pruned samples are never kept.
Dataset rows are streamed with Polars lazy frames (scan, filter, sink), so a dataset larger than
memory can be exported; only a bit mask of N bits is held in memory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from .datafiles import DATA_FORMATS, ID_FORMATS, check_data_path, data_format, id_writer
from .errors import InputError
from .io import atomic_path
from .run import state_file
from .schema import Bucket
from .store import StateStore

__all__ = [
    "DEFAULT_KEEP",
    "DATASET_FORMATS",
    "ID_FORMATS",
    "export_rows",
    "keep_mask",
    "kept_ids",
    "parse_buckets",
    "write_ids",
]

DEFAULT_KEEP: tuple[Bucket, ...] = (Bucket.HARD, Bucket.FOCUS, Bucket.LIGHT)
DATASET_FORMATS = DATA_FORMATS  # the name exports used before the table moved to datafiles


def parse_buckets(keep: str | Bucket | Iterable[str | Bucket]) -> tuple[Bucket, ...]:
    """Buckets from names or members: ``"HARD,FOCUS"``, ``["hard", Bucket.FOCUS]``, ``Bucket.HARD``."""
    items: Iterable[str | Bucket]
    names = [b.name for b in Bucket]
    if isinstance(keep, (str, Bucket)):
        items = keep.split(",") if isinstance(keep, str) else [keep]
    elif isinstance(keep, Iterable):
        items = keep
    else:
        raise InputError(
            f"keep must be bucket names (e.g. 'HARD,FOCUS' or ['HARD', 'FOCUS']) from {names}, got {keep!r}"
        )
    out: list[Bucket] = []
    for item in items:
        if isinstance(item, Bucket):
            b = item
        elif isinstance(item, str) and item.strip().upper() in Bucket.__members__:
            b = Bucket[item.strip().upper()]
        else:
            raise InputError(f"keep: unknown bucket {item!r}; expected names from {names}")
        if b not in out:
            out.append(b)
    if not out:
        raise InputError(f"keep: name at least one bucket from {names}")
    return tuple(out)


def keep_mask(store: StateStore, keep: str | Iterable[str | Bucket] = DEFAULT_KEEP) -> np.ndarray:
    """bool ``[N]``: samples whose bucket is in ``keep`` and that are not pruned."""
    lut = np.zeros(len(Bucket), dtype=bool)
    lut[[int(b) for b in parse_buckets(keep)]] = True
    return lut[store.column("bucket")] & (store.column("pruned") == 0)


def kept_ids(store: StateStore, keep: str | Iterable[str | Bucket] = DEFAULT_KEEP) -> np.ndarray:
    """Sorted int64 ids ``[K]`` of the unpruned samples whose bucket is in ``keep``."""
    return np.flatnonzero(keep_mask(store, keep)).astype(np.int64, copy=False)


def write_ids(ids: Sequence[int] | np.ndarray, path: str | os.PathLike) -> Path:
    """Write sample ids atomically: ``.txt`` (one id per line) or ``.parquet`` (column ``sample_id``)."""
    path = Path(path)
    writer = id_writer(path)
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"write_ids: ids must be a 1-D array of integers, got shape {arr.shape} dtype {arr.dtype}")
    with atomic_path(path) as tmp:
        writer(arr.astype(np.int64, copy=False), tmp)
    return path


def _resolve_store(source: StateStore | str | os.PathLike) -> tuple[StateStore, bool]:
    """(store, whether we opened it and must close it)."""
    if isinstance(source, StateStore):
        return source, False
    return StateStore.open(state_file(source), mode="r"), True


def _row_index_name(columns: Sequence[str]) -> str:
    name = "__geko_row"
    while name in columns:
        name += "_"
    return name


def export_rows(
    source: StateStore | str | os.PathLike,
    dataset: str | os.PathLike,
    output: str | os.PathLike,
    keep: str | Iterable[str | Bucket] = DEFAULT_KEEP,
) -> int:
    """Write the dataset rows of the kept samples to ``output``, in dataset order; returns their count.

    ``source``: a :class:`StateStore`, a run directory or a state file. Formats follow the file
    suffixes (:data:`~geko_state.datafiles.DATA_FORMATS`: Parquet, JSONL, CSV, Arrow IPC; input and output may
    differ). The dataset's row count must equal the state's sample count. The output is written
    under a temporary name and renamed.
    """
    dataset, output = Path(dataset), Path(output)
    fin = data_format(dataset, "dataset")
    fout = data_format(output, "output")
    check_data_path(dataset, "dataset")
    if output.resolve() == dataset.resolve():
        raise InputError(f"{output}: the output must not be the dataset itself")
    keep = parse_buckets(keep)
    store, opened = _resolve_store(source)
    try:
        lazy = fin.scan(dataset)
        try:
            n_rows = int(lazy.select(pl.len()).collect().item())
            columns = lazy.collect_schema().names()
        except (pl.exceptions.PolarsError, OSError) as e:
            raise InputError(f"dataset {dataset}: cannot read it as {fin.name} ({e})") from None
        if n_rows != store.n_samples:
            raise InputError(
                f"{dataset}: has {n_rows} rows but the state has {store.n_samples} samples; export "
                "needs the dataset the state was built on (row i is sample id i)"
            )
        mask = keep_mask(store, keep)
        kept = int(mask.sum())
    finally:
        if opened:
            store.close()
    row = _row_index_name(columns)
    # Look the row index up in an N-bit mask instead of joining on the kept ids: no hash table,
    # and the scan stays a single streaming pass in dataset order.
    selected = (
        lazy.with_row_index(row)
        .filter(pl.lit(pl.Series(mask)).gather(pl.col(row)))
        .drop(row)
    )
    with atomic_path(output) as tmp:
        fout.sink(selected, tmp)
    return kept
