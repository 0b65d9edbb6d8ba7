"""Offline pruning exports: the ids of the samples worth keeping, or the kept rows of a dataset.

Row ``i`` of the dataset is sample id ``i`` of the state (ids are row positions everywhere), so
the dataset must have exactly as many rows as the state has samples. Pruned samples are never kept;
suspected mislabeled samples (:mod:`geko_state.noise`) can be left out too.
Dataset rows are streamed with Polars lazy frames (scan, filter, sink), so a dataset larger than
memory can be exported; only a bit mask of N bits is held in memory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .datafiles import DATA_FORMATS, ID_FORMATS, check_data_path, data_format, id_writer, rows_where
from .errors import InputError
from .io import atomic_path
from .noise import SuspectsConfig, store_suspects
from .run import state_file
from .schema import Bucket
from .store import StateStore

__all__ = [
    "DEFAULT_KEEP",
    "DATASET_FORMATS",
    "ID_FORMATS",
    "drop_ids",
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


def drop_ids(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A copy of ``mask`` (bool ``[N]``) with the samples ``ids`` cleared; InputError for an id
    outside ``[0, N)``."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= mask.shape[0]):
        raise InputError(f"drop_ids: ids must be in [0, {mask.shape[0]}), got {ids.min()}..{ids.max()}")
    out = mask.copy()
    out[ids] = False
    return out


def keep_mask(store: StateStore, keep: str | Iterable[str | Bucket] = DEFAULT_KEEP, *,
              drop_suspects: SuspectsConfig | None = None) -> np.ndarray:
    """bool ``[N]``: samples whose bucket is in ``keep`` and that are not pruned.

    ``drop_suspects``: also leave out the suspects of that config (:func:`~geko_state.noise.store_suspects`,
    ranked over all samples: the same samples ``geko suspects`` lists), so the export is the
    cleaned dataset for the next run.
    """
    lut = np.zeros(len(Bucket), dtype=bool)
    lut[[int(b) for b in parse_buckets(keep)]] = True
    mask = lut[store.column("bucket")] & (store.column("pruned") == 0)
    if drop_suspects is None:
        return mask
    return drop_ids(mask, store_suspects(store, drop_suspects)["sample_id"].to_numpy())


def kept_ids(store: StateStore, keep: str | Iterable[str | Bucket] = DEFAULT_KEEP, *,
             drop_suspects: SuspectsConfig | None = None) -> np.ndarray:
    """Sorted int64 ids ``[K]`` of :func:`keep_mask`'s samples."""
    return np.flatnonzero(keep_mask(store, keep, drop_suspects=drop_suspects)).astype(np.int64, copy=False)


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


def export_rows(
    source: StateStore | str | os.PathLike,
    dataset: str | os.PathLike,
    output: str | os.PathLike,
    keep: str | Iterable[str | Bucket] = DEFAULT_KEEP,
    *,
    drop_suspects: SuspectsConfig | None = None,
) -> int:
    """Write the dataset rows of the kept samples to ``output``, in dataset order; returns their count.

    ``source``: a :class:`StateStore`, a run directory or a state file. Formats follow the file
    suffixes (:data:`~geko_state.datafiles.DATA_FORMATS`: Parquet, JSONL, CSV, Arrow IPC; input and output may
    differ). The dataset's row count must equal the state's sample count. ``drop_suspects``: also
    leave out these suspects (see :func:`keep_mask`). The output is written under a temporary name
    and renamed.
    """
    dataset, output = Path(dataset), Path(output)
    data_format(dataset, "dataset")  # a bad suffix is named before a bad output's
    fout = data_format(output, "output")
    check_data_path(dataset, "dataset")
    if output.resolve() == dataset.resolve():
        raise InputError(f"{output}: the output must not be the dataset itself")
    keep = parse_buckets(keep)
    store, opened = _resolve_store(source)
    try:
        mask = keep_mask(store, keep, drop_suspects=drop_suspects)
    finally:
        if opened:
            store.close()
    selected = rows_where(dataset, mask, "dataset")
    with atomic_path(output) as tmp:
        fout.sink(selected, tmp)
    return int(mask.sum())
