"""The state file format: one Arrow IPC file, one record batch, no nulls.

Every column is one contiguous buffer, so the file can be memory-mapped and its columns viewed as
numpy arrays that kernels update in place. The schema metadata carries the schema version, the
sample count, (``geko.meta``) the store's JSON metadata at write time and (``geko.checksum``) a
checksum of the column data and that metadata; a live memory-mapped file keeps its newer metadata
and checksum in a sidecar ``<file>.json``.

Why a sidecar for the live file: kernels update the columns in place and :meth:`StateStore.flush`
writes them back in place, so the checksum of the current data cannot live in the Arrow footer
without rewriting the file. Flush therefore publishes the new (metadata, checksum) in the sidecar
*before* writing the data, keeping the previous pair as a fallback, and drops the fallback once the
data is on disk (see :func:`write_sidecar`). Whatever moment a process stops at, the file opens as
the state of the last completed flush or of the one in progress, both exactly as they were, or,
when the data itself was half written (or, with ``storage="arrow-shared"``, changed after the last
flush), it is refused with an error that points to the last checkpoint: never read as wrong data.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import SchemaVersionError, StateFileError
from .integrity import (
    ALGORITHM,
    canonical_json,
    crc32_arrays,
    crc32_json,
    format_checksum,
)
from .io import atomic_path, atomic_write_json
from .schema import BUCKET_NAMES, COLUMNS, LOSS_WINDOW, SCHEMA_VERSION, arrow_schema

__all__ = [
    "SealedState",
    "columns_to_batch",
    "map_columns",
    "read_layout",
    "seal",
    "sidecar_path",
    "verify_state",
    "write_sidecar",
    "write_state_file",
    "StateLayout",
]

log = logging.getLogger("geko_state")

_BUCKET_DICT = pa.array(BUCKET_NAMES, type=pa.string())

# How long an open waits for a flush in progress in another process to finish writing the data
# before it calls the file corrupt (a flush of 100M samples writes about 5 GB).
FLUSH_WAIT_S = 10.0
_POLL_S = 0.05


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


@dataclass(frozen=True)
class SealedState:
    """The store's JSON metadata and the checksum of (column data, that metadata)."""

    meta: dict[str, Any]
    checksum: str

    def matches(self, data_crc: int) -> bool:
        """Whether the column data whose CRC is ``data_crc`` is the data this pair was sealed with."""
        return format_checksum(crc32_json(self.meta, data_crc)) == self.checksum


def _data_crc(columns: Mapping[str, np.ndarray]) -> int:
    return crc32_arrays(columns[c.name] for c in COLUMNS)


def seal(columns: Mapping[str, np.ndarray], meta: dict[str, Any]) -> SealedState:
    """Checksum the columns (in schema order) and ``meta``; reads every byte of the state once."""
    meta = json.loads(canonical_json(meta))  # the form it is read back in (tuples become lists)
    return SealedState(meta, format_checksum(crc32_json(meta, _data_crc(columns))))


def _buffer(arr: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.ascontiguousarray(arr))


def columns_to_batch(columns: dict[str, np.ndarray], meta: dict[str, Any] | None = None,
                     checksum: str | None = None) -> pa.RecordBatch:
    """Zero-copy record batch over the state columns (uint8 flags stay uint8 on disk)."""
    n = int(columns["sample_id"].shape[0])
    schema = arrow_schema(n)
    if meta is not None:
        md = dict(schema.metadata)
        md[b"geko.meta"] = json.dumps(meta, sort_keys=True).encode()
        if checksum is not None:
            md[b"geko.checksum"] = checksum.encode()
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


def write_state_file(path: Path, columns: dict[str, np.ndarray], meta: dict[str, Any]) -> SealedState:
    """Write the columns as a state file with their checksum, atomically (temporary name, then rename)."""
    sealed = seal(columns, meta)
    batch = columns_to_batch(columns, sealed.meta, sealed.checksum)
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
    return sealed


def write_sidecar(path: Path, current: SealedState, previous: SealedState | None = None) -> None:
    """Publish the live file's (metadata, checksum), atomically.

    ``previous`` is given only while a flush is writing the data: until it is dropped, an open
    accepts the data of either pair, and waits a while for a flush still running elsewhere.
    """
    doc: dict[str, Any] = {"meta": current.meta, "checksum": current.checksum}
    if previous is not None:
        doc["previous"] = {"meta": previous.meta, "checksum": previous.checksum}
    atomic_write_json(sidecar_path(path), doc)


class StateLayout:
    """Where each column lives inside a state file (byte offsets), and what the file was written with."""

    def __init__(self, n_samples: int, offsets: dict[str, int], sealed: SealedState) -> None:
        self.n_samples = n_samples
        self.offsets = offsets
        self.sealed = sealed

    @property
    def meta(self) -> dict[str, Any]:
        return self.sealed.meta


def _fail(path: Path, why: str) -> StateFileError:
    return StateFileError(f"{path}: not a readable GEKO state file ({why})")


def _parse_checksum(path: Path, raw: bytes | None) -> str:
    if raw is None:
        raise _fail(path, "no geko.checksum in the schema metadata")
    text = raw.decode("ascii", "replace")
    algo, _, digest = text.partition(":")
    if algo != ALGORITHM or len(digest) != 8 or any(ch not in "0123456789abcdef" for ch in digest):
        raise _fail(path, f"geko.checksum is {text!r}; expected '{ALGORITHM}:' and 8 hex digits")
    return text


def read_layout(path: Path, expected_n: int | None = None) -> StateLayout:
    """Validate a state file's structure and locate its column buffers (the data is checked by
    :func:`verify_state`).

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
                    f"{SCHEMA_VERSION} (version 2 added a checksum of the data, version 3 the learnability "
                    "columns aum and wrong_streak); recreate the state "
                    "with StateStore.create, or open it with the GEKO release that wrote it"
                )
            n = int(md[b"geko.n_samples"])
            if expected_n is not None and n != expected_n:
                raise StateFileError(f"{path}: holds {n} samples, expected {expected_n}")
            checksum = _parse_checksum(path, md.get(b"geko.checksum"))
            expected = arrow_schema(n)
            if schema.remove_metadata() != expected.remove_metadata():
                raise _fail(path, f"columns {schema.names} do not match the GEKO schema {expected.names}")
            if reader.num_record_batches != 1:
                raise _fail(path, f"{reader.num_record_batches} record batches, expected 1")
            batch = reader.get_batch(0)
            batch.validate()  # lengths and buffer sizes agree (no scan of the values)
            if batch.num_rows != n:
                raise _fail(path, f"{batch.num_rows} rows, metadata says {n}")
            offsets: dict[str, int] = {}
            for c in COLUMNS:
                arr = batch.column(c.name)
                if arr.null_count:
                    raise _fail(path, f"column {c.name} has nulls")
                if c.name == "bucket":
                    # Outside the checksummed columns, and what other readers show as bucket names.
                    arr.dictionary.validate(full=True)  # its offsets may be corrupt too
                    if arr.dictionary.to_pylist() != list(BUCKET_NAMES):
                        raise _fail(path, f"bucket names {arr.dictionary.to_pylist()}, expected {list(BUCKET_NAMES)}")
                    arr = arr.indices
                elif c.width > 1:
                    arr = arr.values
                    if len(arr) != n * c.width:
                        raise _fail(path, f"column {c.name} holds {len(arr)} values, expected {n * c.width}")
                if arr.null_count:  # the list's values, or the dictionary's indices, have their own count
                    raise _fail(path, f"column {c.name} has nulls")
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
            if raw_meta is None:
                raise _fail(path, "no geko.meta in the schema metadata")
            meta = json.loads(raw_meta)
    except StateFileError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        raise _fail(path, f"{type(e).__name__}: {e}") from None
    return StateLayout(n, offsets, SealedState(meta, checksum))


@dataclass(frozen=True)
class _Sidecar:
    current: SealedState | None
    previous: SealedState | None  # set while a flush is writing the data (or was stopped doing so)


def _read_sidecar(path: Path) -> _Sidecar:
    side = sidecar_path(path)
    try:
        text = side.read_text()
    except FileNotFoundError:
        return _Sidecar(None, None)
    except OSError as e:
        raise StateFileError(f"{side}: unreadable state metadata ({e})") from None
    try:
        doc = json.loads(text)
        current = SealedState(dict(doc["meta"]), str(doc["checksum"]))
        prev = doc.get("previous")
        previous = None if prev is None else SealedState(dict(prev["meta"]), str(prev["checksum"]))
        return _Sidecar(current, previous)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        # Not falling back to the metadata inside the file: it may be older than the data (an
        # epoch that changed no column), which would be wrong data. Deleting the sidecar is the
        # user's explicit way to open the file as it was written, when its data still matches.
        raise StateFileError(
            f"{side}: corrupt state metadata ({type(e).__name__}: {e}); expected the JSON that "
            f"StateStore.flush() writes. Restore {path.name} from a checkpoint, or delete {side.name} "
            "to open the file as StateStore.create/checkpoint last wrote it (refused if its data changed since)"
        ) from None


def verify_state(path: Path, layout: StateLayout, columns: Mapping[str, np.ndarray],
                 wait_s: float | None = None) -> SealedState:
    """Check the file's column data against its checksum and return the matching (metadata, checksum).

    ``columns``: the file's columns as mapped by :func:`map_columns`, not yet modified. Candidates,
    in order: the sidecar's pair, the pair a flush was replacing (flush stopped before the data was
    written), the pair written inside the file (the file was replaced by a copy of a checkpoint,
    leaving a stale sidecar). While the sidecar says a flush is writing, waits up to ``wait_s``
    (default :data:`FLUSH_WAIT_S`) for it to finish. Raises :class:`StateFileError` naming the file.
    """
    wait_s = FLUSH_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while True:
        side = _read_sidecar(path)
        data_crc = _data_crc(columns)
        named = [("sidecar", side.current), ("previous", side.previous), ("file", layout.sealed)]
        for which, cand in named:
            if cand is not None and cand.matches(data_crc):
                return _accept(path, layout, which, cand, side)
        # A flush may have begun between reading the sidecar and reading the data: then the
        # sidecar has changed since, and the data is worth another look once that flush is done.
        settled = side.previous is None and _read_sidecar(path) == side
        if settled or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    want = [c.checksum for _, c in named if c is not None]
    raise StateFileError(
        f"{path}: state data does not match its checksum (expected one of {want} for the data and "
        "its metadata): the file is corrupt or cut short, or "
        "the process updating it stopped while flush() was writing it (or, with storage='arrow-shared', "
        "between flushes). Restore it from the last checkpoint (StateStore.checkpoint)"
    )


def _accept(path: Path, layout: StateLayout, which: str, sealed: SealedState, side: _Sidecar) -> SealedState:
    meta = sealed.meta if isinstance(sealed.meta, dict) else {}
    if meta.get("n_samples") != layout.n_samples:
        raise StateFileError(
            f"{path}: metadata missing or for another sample count ({meta.get('n_samples')!r}, "
            f"the file holds {layout.n_samples})"
        )
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise SchemaVersionError(f"{path}: metadata of schema version {meta.get('schema_version')}, expected {SCHEMA_VERSION}")
    if which == "previous":
        warnings.warn(
            f"{path}: the last flush() stopped before writing the data; opened the state of the "
            f"flush before it (epoch {meta.get('epoch')})",
            stacklevel=4,
        )
    elif which == "file" and side.current is not None:
        log.info("%s: sidecar does not describe this file (replaced by a copy); using the file's own metadata", path)
    return sealed


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
        view = view.reshape(n, LOSS_WINDOW) if c.width > 1 else view
        # Plain ndarray views (the memmap stays reachable through ``.base``): numba types an
        # ndarray subclass on a slow path, which cost observe ~0.4 us per column per call.
        cols[c.name] = view.view(np.ndarray)
    return cols

