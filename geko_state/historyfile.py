"""One history file (a per-epoch snapshot or the epoch summary): its integrity metadata and checks.

Every file written by :class:`~geko_state.history.HistoryWriter` carries, in its Parquet key-value
metadata::

    geko.kind            "snapshot" or "summary"
    geko.schema_version  HISTORY_VERSION
    geko.n_samples       samples of the state the history describes
    geko.rows            rows in the file
    geko.epoch           the snapshot's epoch (snapshots only)
    geko.checksum        CRC-32 of the file's values and of the keys above

The checksum covers the *decoded values* in a canonical form (each column's values in row order,
bucket names as their codes, booleans as bytes), not the Parquet bytes: it is computed while the
file is written, before those bytes exist, and it checks exactly what a reader gets back, whatever
the encoding and compression. Pages also carry Parquet's own CRC (``write_page_checksum``), which
pyarrow checks while decoding. The footer's per-row-group statistics (min, max, null count), which
DuckDB uses to skip row groups, are checked against the decoded values too. Readers call
:func:`read_history_file`, which decodes everything, so verifying a file costs one full read of it.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import HistoryFileError, SchemaVersionError
from .integrity import canonical_json, crc32_arrays, format_checksum
from .schema import BUCKET_NAMES

__all__ = ["HISTORY_VERSION", "FileKind", "HistoryDigest", "file_metadata", "read_history_file"]

# Bumped whenever a history file's columns or metadata change; other versions are refused.
# 2: snapshots carry the learnability columns (aum, wrong_streak).
HISTORY_VERSION = 2

_BUCKET_CODE = {name: code for code, name in enumerate(BUCKET_NAMES)}
_UINT = "0123456789"


@dataclass(frozen=True)
class FileKind:
    """A kind of history file: its ``geko.kind`` name and its Arrow schema."""

    name: str
    schema: pa.Schema


def _canonical(arr: pa.Array, nullable: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """The bytes a column chunk contributes to the checksum, independent of how Parquet stored it:
    (validity as one byte per row, None for a column that cannot hold nulls; values). Each is
    hashed as its own stream, so splitting a column into chunks differently gives the same checksum.
    """
    if not nullable and arr.null_count:
        raise ValueError("nulls in a column that cannot hold them")
    valid = arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8) if nullable else None
    if pa.types.is_dictionary(arr.type):
        names = arr.dictionary.to_pylist()
        unknown = [v for v in names if v not in _BUCKET_CODE]
        if unknown:
            raise ValueError(f"unknown bucket names {unknown}")
        lut = np.array([_BUCKET_CODE[v] for v in names], dtype=np.int8)
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False)
        if idx.size and (idx.min() < 0 or idx.max() >= len(lut)):
            raise ValueError("bucket indices outside the dictionary")
        return valid, lut[idx]
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        # each present value as its 4-byte length and its UTF-8 bytes (small summary columns only)
        raw = b"".join(len(b).to_bytes(4, "little") + b for b in (v.encode() for v in arr.to_pylist() if v is not None))
        return valid, np.frombuffer(raw, dtype=np.uint8)
    if arr.null_count:
        arr = arr.fill_null(False if pa.types.is_boolean(arr.type) else 0)
    values = arr.to_numpy(zero_copy_only=False)
    return valid, values.view(np.uint8) if values.dtype == np.bool_ else values


class HistoryDigest:
    """Per-column CRCs of a file's values, fed chunk by chunk in row order (any chunking gives the
    same result), plus the checks every history file gets on its way: a snapshot's sample ids
    strictly increasing and below ``n_samples`` and its epoch constant; a summary's epochs strictly
    increasing and its ``n_samples`` column constant.
    """

    def __init__(self, kind: FileKind) -> None:
        self.kind = kind
        self.rows = 0
        self._crcs = [0] * (2 * len(kind.schema))  # per column: validity, values
        self._last_id = -1
        self._last_epoch = -1
        self._max_epoch: int | None = None
        self._min_epoch: int | None = None
        self._n_samples: set[int] = set()

    def update(self, table: pa.Table | pa.RecordBatch) -> None:
        schema = self.kind.schema
        for j, name in enumerate(schema.names):
            col = table.column(j)
            for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
                valid, values = _canonical(chunk, schema.field(j).nullable)
                if valid is not None:
                    self._crcs[2 * j] = crc32_arrays([valid], self._crcs[2 * j])
                self._crcs[2 * j + 1] = crc32_arrays([values], self._crcs[2 * j + 1])
                if name in ("sample_id", "epoch", "n_samples"):
                    self._track(name, values, chunk.null_count)
        self.rows += table.num_rows

    def _track(self, name: str, values: np.ndarray, nulls: int) -> None:
        if nulls or not values.size:
            if nulls:
                raise ValueError(f"column {name} has nulls")
            return
        if name == "sample_id":
            if values[0] <= self._last_id or (values.size > 1 and (np.diff(values) <= 0).any()):
                raise ValueError("sample_id is not strictly increasing")
            self._last_id = int(values[-1])
        elif name == "epoch" and self.kind.name == "summary":
            if values[0] <= self._last_epoch or (values.size > 1 and (np.diff(values) <= 0).any()):
                raise ValueError("epochs are not strictly increasing")
            self._last_epoch = int(values[-1])
        elif name == "epoch":
            lo, hi = int(values.min()), int(values.max())
            self._min_epoch = lo if self._min_epoch is None else min(lo, self._min_epoch)
            self._max_epoch = hi if self._max_epoch is None else max(hi, self._max_epoch)
        else:
            self._n_samples.update(np.unique(values).tolist())

    def checksum(self, header: dict[str, str]) -> str:
        crc = zlib.crc32(np.array(self._crcs, dtype=">u4").tobytes())
        return format_checksum(zlib.crc32(canonical_json(header), crc))

    def check(self, n_samples: int, epoch: int | None) -> None:
        """Raise ValueError when the values contradict the file's metadata."""
        if self._last_id >= n_samples:
            raise ValueError(f"sample_id {self._last_id} is past the {n_samples} samples the file describes")
        if epoch is not None and self.rows and (self._min_epoch, self._max_epoch) != (epoch, epoch):
            raise ValueError(f"epoch column spans {self._min_epoch}..{self._max_epoch}, the file is epoch {epoch}")
        if self._n_samples - {n_samples}:
            raise ValueError(f"rows for {sorted(self._n_samples)} samples, the file describes {n_samples}")


def _header(kind: FileKind, n_samples: int, rows: int, epoch: int | None) -> dict[str, str]:
    h = {
        "geko.kind": kind.name,
        "geko.schema_version": str(HISTORY_VERSION),
        "geko.n_samples": str(int(n_samples)),
        "geko.rows": str(int(rows)),
    }
    if epoch is not None:
        h["geko.epoch"] = str(int(epoch))
    return h


def file_metadata(digest: HistoryDigest, n_samples: int, epoch: int | None = None) -> dict[str, str]:
    """The key-value metadata of a file whose values ``digest`` has seen (add it before closing)."""
    digest.check(n_samples, epoch)
    h = _header(digest.kind, n_samples, digest.rows, epoch)
    return {**h, "geko.checksum": digest.checksum(h)}


def _fail(path: Path, kind: FileKind, why: str) -> HistoryFileError:
    return HistoryFileError(f"{path}: not a readable GEKO history {kind.name} file ({why})")


def _check_statistics(schema: pq.ParquetSchema, rg: pq.RowGroupMetaData, table: pa.Table) -> None:
    """Raise ValueError when a row group's footer statistics disagree with its values: a reader
    that prunes row groups by them (DuckDB) would otherwise answer from the wrong rows."""
    for j in range(rg.num_columns):
        chunk = rg.column(j)
        # pyarrow aborts the process when it decodes statistics of a chunk whose recorded type
        # contradicts the schema (a corrupt footer), so that is checked first.
        if chunk.physical_type != schema.column(j).physical_type:
            raise ValueError(f"column {schema.column(j).name}: chunk of type {chunk.physical_type}, "
                             f"the schema says {schema.column(j).physical_type}")
        st = chunk.statistics
        if st is None:
            continue
        col = table.column(j).combine_chunks()
        name = table.schema.names[j]
        if st.has_null_count and st.null_count != col.null_count:
            raise ValueError(f"footer statistics of {name}: {st.null_count} nulls, the values hold {col.null_count}")
        if not st.has_min_max:
            continue
        if pa.types.is_dictionary(col.type):
            col = col.dictionary.take(pc.unique(col.indices))
        mm = pc.min_max(col)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if lo is None or (st.min, st.max) != (lo, hi):  # -0.0 == 0.0: Parquet writes a zero min as -0.0
            raise ValueError(f"footer statistics of {name}: min/max {st.min!r}/{st.max!r}, the values span {lo!r}/{hi!r}")


def _int_field(path: Path, kind: FileKind, kv: dict[bytes, bytes], key: str) -> int:
    raw = kv.get(key.encode())
    text = None if raw is None else raw.decode("ascii", "replace")
    if text is None or not text or any(ch not in _UINT for ch in text):
        raise _fail(path, kind, f"{key} is {text!r}; expected a non-negative integer")
    return int(text)


def read_history_file(
    path: Path, kind: FileKind, *, expected_n: int | None = None, keep: bool = True,
) -> tuple[pa.Table | None, dict[str, Any]]:
    """Read and verify one history file: ``(table, info)``, ``info`` holding ``n_samples``,
    ``rows`` and (snapshots) ``epoch``. ``keep=False`` verifies without keeping the table (None).

    Raises :class:`HistoryFileError` naming the file when it is missing, cut short or corrupt, or
    describes another sample count than ``expected_n``; :class:`SchemaVersionError` for another
    format version.
    """
    path = Path(path)
    if not path.is_file():
        raise HistoryFileError(f"{path}: no such history {kind.name} file")
    try:
        pf = pq.ParquetFile(str(path), page_checksum_verification=True)
        kv = pf.metadata.metadata or {}
        found = kv.get(b"geko.kind")
        if found is None:
            raise _fail(path, kind, "no geko.* metadata: written by an older GEKO or by another tool; "
                                    "record the history again with this version")
        if found != kind.name.encode():
            raise _fail(path, kind, f"geko.kind is {found!r}, expected {kind.name!r}")
        version = kv.get(b"geko.schema_version")
        if version is None:
            raise _fail(path, kind, "no geko.schema_version in the metadata")
        if version != str(HISTORY_VERSION).encode():
            raise SchemaVersionError(
                f"{path}: history format version {version.decode('ascii', 'replace')}, "
                f"this GEKO reads version {HISTORY_VERSION}; record the history again with this version"
            )
        n = _int_field(path, kind, kv, "geko.n_samples")
        rows = _int_field(path, kind, kv, "geko.rows")
        epoch = _int_field(path, kind, kv, "geko.epoch") if kind.name == "snapshot" else None
        if expected_n is not None and n != expected_n:
            raise HistoryFileError(f"{path}: history of {n} samples, expected {expected_n}")
        if not pf.schema_arrow.equals(kind.schema, check_metadata=False):
            raise _fail(path, kind, f"columns {pf.schema_arrow.names} do not match {kind.schema.names}")
        if pf.metadata.num_rows != rows:
            raise _fail(path, kind, f"{pf.metadata.num_rows} rows, metadata says {rows}")
        digest = HistoryDigest(kind)
        parts = []
        for i in range(pf.num_row_groups):
            t = pf.read_row_group(i)
            digest.update(t)
            _check_statistics(pf.schema, pf.metadata.row_group(i), t)
            if keep:
                parts.append(t)
        if digest.rows != rows:
            raise _fail(path, kind, f"{digest.rows} rows decoded, metadata says {rows}")
        want = kv.get(b"geko.checksum", b"").decode("ascii", "replace")
        got = digest.checksum(_header(kind, n, rows, epoch))
        if got != want:
            raise HistoryFileError(
                f"{path}: history data does not match its checksum (computed {got}, stored {want!r}): "
                "the file is corrupt; record that epoch again, or restore the run directory from a copy"
            )
        digest.check(n, epoch)  # as written, but does it make sense (a file edited consistently)?
    except (HistoryFileError, SchemaVersionError):
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise _fail(path, kind, f"{type(e).__name__}: {e}") from None
    table = None
    if keep:
        table = pa.concat_tables(parts) if parts else kind.schema.empty_table()
        table = table.replace_schema_metadata(None)
    info: dict[str, Any] = {"n_samples": n, "rows": rows}
    if epoch is not None:
        info["epoch"] = epoch
    return table, info
