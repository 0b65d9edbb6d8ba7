"""The state file format: one Arrow IPC file, one record batch, no nulls.

Every column is one contiguous buffer, so the file can be memory-mapped and its columns viewed as
numpy arrays that kernels update in place. The schema metadata carries the schema version, the
sample count and (``geko.meta``) the store's JSON metadata at write time; a live memory-mapped
file keeps its newer metadata in a sidecar ``<file>.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import SchemaVersionError, StateFileError
from .io import atomic_path
from .schema import BUCKET_NAMES, COLUMNS, LOSS_WINDOW, SCHEMA_VERSION, arrow_schema

__all__ = [
    "columns_to_batch",
    "write_state_file",
    "read_layout",
    "sidecar_path",
    "StateLayout",
]

_BUCKET_DICT = pa.array(BUCKET_NAMES, type=pa.string())


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _buffer(arr: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.ascontiguousarray(arr))


def columns_to_batch(columns: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> pa.RecordBatch:
    """Zero-copy record batch over the state columns (uint8 flags stay uint8 on disk)."""
    n = int(columns["sample_id"].shape[0])
    schema = arrow_schema(n)
    if meta is not None:
        md = dict(schema.metadata)
        md[b"geko.meta"] = json.dumps(meta, sort_keys=True).encode()
        schema = schema.with_metadata(md)
    arrays = []
    for c in COLUMNS:
        data = columns[c.name]
        if c.name == "bucket":
            idx = pa.Array.from_buffers(pa.int8(), n, [None, _buffer(data)])
            arrays.append(pa.DictionaryArray.from_arrays(idx, _BUCKET_DICT))
        elif c.width > 1:
            flat = pa.Array.from_buffers(pa.from_numpy_dtype(c.dtype), n * c.width, [None, _buffer(data)])
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, c.width))
        else:
            arrays.append(pa.Array.from_buffers(pa.from_numpy_dtype(c.dtype), n, [None, _buffer(data)]))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_state_file(path: Path, columns: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write the columns as a state file, atomically (temporary name, then rename)."""
    batch = columns_to_batch(columns, meta)
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)


class StateLayout:
    """Where each column lives inside a state file (byte offsets), and the file's metadata."""

    def __init__(self, n_samples: int, offsets: dict[str, int], meta: dict[str, Any] | None) -> None:
        self.n_samples = n_samples
        self.offsets = offsets
        self.meta = meta


def _fail(path: Path, why: str) -> StateFileError:
    return StateFileError(f"{path}: not a readable GEKO state file ({why})")


def read_layout(path: Path, expected_n: int | None = None) -> StateLayout:
    """Validate a state file and locate its column buffers.

    Raises :class:`StateFileError` (naming the file) for a missing, truncated or corrupt file,
    :class:`SchemaVersionError` for another schema version.
    """
    if not path.is_file():
        raise StateFileError(f"{path}: no such state file")
    size = path.stat().st_size
    try:
        with pa.memory_map(str(path), "r") as mm:
            base = mm.read_buffer(size).address
            mm.seek(0)
            reader = pa.ipc.open_file(mm)
            schema = reader.schema
            md = schema.metadata or {}
            version = md.get(b"geko.schema_version")
            if version is None:
                raise _fail(path, "no geko.schema_version in the schema metadata")
            if int(version) != SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{path}: state schema version {int(version)}, this GEKO reads version "
                    f"{SCHEMA_VERSION}"
                )
            n = int(md[b"geko.n_samples"])
            if expected_n is not None and n != expected_n:
                raise StateFileError(f"{path}: holds {n} samples, expected {expected_n}")
            expected = arrow_schema(n)
            if schema.remove_metadata() != expected.remove_metadata():
                raise _fail(path, f"columns {schema.names} do not match the GEKO schema {expected.names}")
            if reader.num_record_batches != 1:
                raise _fail(path, f"{reader.num_record_batches} record batches, expected 1")
            batch = reader.get_batch(0)
            if batch.num_rows != n:
                raise _fail(path, f"{batch.num_rows} rows, metadata says {n}")
            offsets: dict[str, int] = {}
            for c in COLUMNS:
                arr = batch.column(c.name)
                if arr.null_count:
                    raise _fail(path, f"column {c.name} has nulls")
                if c.name == "bucket":
                    arr = arr.indices
                elif c.width > 1:
                    arr = arr.values
                bufs = arr.buffers()
                data = bufs[1]
                need = n * c.itemsize
                if arr.offset != 0 or data is None or data.size < need:
                    raise _fail(path, f"column {c.name} is not one contiguous buffer")
                off = data.address - base
                if off < 0 or off + need > size:
                    raise _fail(path, f"column {c.name} lies outside the file")
                if off % np.dtype(c.dtype).itemsize:
                    raise _fail(path, f"column {c.name} is misaligned")
                offsets[c.name] = int(off)
            raw_meta = md.get(b"geko.meta")
            meta = json.loads(raw_meta) if raw_meta else None
    except StateFileError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError) as e:
        raise _fail(path, f"{type(e).__name__}: {e}") from None
    return StateLayout(n, offsets, meta)


def map_columns(path: Path, layout: StateLayout, mode: str) -> dict[str, np.ndarray]:
    """numpy views of each column of a state file, backed by one memory map.

    ``mode`` is numpy's: ``"r"`` read-only, ``"r+"`` shared (writes reach the file), ``"c"``
    copy-on-write (writes stay private until written back).
    """
    mm = np.memmap(path, dtype=np.uint8, mode=mode)
    cols: dict[str, np.ndarray] = {}
    n = layout.n_samples
    for c in COLUMNS:
        off = layout.offsets[c.name]
        nbytes = n * c.itemsize
        view = mm[off: off + nbytes].view(c.dtype)
        cols[c.name] = view.reshape(n, LOSS_WINDOW) if c.width > 1 else view
    return cols

