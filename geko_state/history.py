"""Bucket history: a per-sample Parquet snapshot per recorded epoch and one summary row per epoch.

Call :meth:`HistoryWriter.record` right after :meth:`StateStore.repartition`::

    writer = HistoryWriter("runs/my_run", HistoryConfig(every=1, changed_only=False))
    stats = store.repartition()
    writer.record(store, stats, samples_trained=len(plan), phase="PEAK")

Files (see :class:`~geko_state.run.Run`): ``history/epoch=000007.parquet`` holds the snapshot of
epoch 7 with the columns of :data:`HISTORY_SCHEMA`; ``epochs.parquet`` holds one row per epoch with
the columns of :data:`SUMMARY_SCHEMA` (bucket counts, pruned, accuracy, samples trained, phase,
exact bucket-to-bucket transition counts, history rows and bytes). Both are written under a
temporary name and renamed, so a reader sees a complete epoch or none of it; the summary is renamed
after the snapshot, so every epoch listed in the summary has its snapshot complete on disk.

Integrity: every file carries its format version, sample count, row count and a checksum of its
values (see :mod:`geko_state.historyfile`); :func:`read_summary`, :func:`verified_history` and the
SQL views verify them and refuse a corrupt file with :class:`HistoryFileError`.

Size: ``every=k`` writes a snapshot on epochs divisible by ``k`` only (the summary row is written
every epoch); ``changed_only=True`` writes only the rows whose bucket or pruned flag changed since
the writer's previous snapshot. The writer's first snapshot always holds every row, so the latest
row of a sample at or before epoch ``e`` gives its bucket and pruned flag at ``e`` (its other columns
are those of that row's epoch). A full snapshot costs about 10 bytes per sample (zstd; see
``benchmarks/bench_history.py``).

Memory: the writer keeps the ``bucket | pruned << 2`` code of every sample after the last recorded
epoch (int8, N bytes; a second copy with ``changed_only`` and ``every > 1``) to count transitions
exactly and to find changed rows.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .curriculum import Phase
from .errors import ConfigError, HistoryFileError, InputError
from .historyfile import FileKind, HistoryDigest, file_metadata, read_history_file
from .io import atomic_path
from .run import Run
from .schema import Bucket
from .stats import PartitionStats
from .store import StateStore
from .validate import check_int

__all__ = [
    "HISTORY_COLUMNS",
    "HISTORY_SCHEMA",
    "SUMMARY_SCHEMA",
    "TRANSITION_COLUMNS",
    "HistoryConfig",
    "HistoryRecord",
    "HistoryWriter",
    "VerifiedHistory",
    "count_column",
    "read_summary",
    "transition_column",
    "verified_history",
]

# State columns copied into each snapshot (after the epoch column).
HISTORY_COLUMNS: tuple[str, ...] = (
    "sample_id", "bucket", "q_value", "confidence", "last_loss", "correct", "times_seen", "pruned",
    "aum", "wrong_streak",
)

# bucket stays dictionary<int8, string>: Parquet stores it as a 4-entry dictionary (under a byte
# per row), DuckDB reads it as VARCHAR and Polars as Categorical, so `bucket = 'HARD'` works in both.
HISTORY_SCHEMA = pa.schema(
    [
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("bucket", pa.dictionary(pa.int8(), pa.string()), nullable=False),
        pa.field("q_value", pa.float32(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("last_loss", pa.float32(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("times_seen", pa.int32(), nullable=False),
        pa.field("pruned", pa.bool_(), nullable=False),
        # NaN (not null) until the sample's first observation with a margin, as in the state.
        pa.field("aum", pa.float32(), nullable=False),
        pa.field("wrong_streak", pa.uint8(), nullable=False),
    ]
)


def transition_column(src: Bucket, dst: Bucket) -> str:
    """Summary column counting samples that moved from ``src`` to ``dst`` in an epoch."""
    return f"{src.name.lower()}_to_{dst.name.lower()}"


# (from, to, column) for every pair of different buckets.
TRANSITION_COLUMNS: tuple[tuple[Bucket, Bucket, str], ...] = tuple(
    (a, b, transition_column(a, b)) for a in Bucket for b in Bucket if a is not b
)

def count_column(bucket: Bucket) -> str:
    """Summary column with the unpruned samples in ``bucket`` (``freeze`` is a SQL keyword, hence the suffix)."""
    return f"{bucket.name.lower()}_count"


_STAT_COLUMNS = (
    "n_samples", *(count_column(b) for b in Bucket), "pruned", "newly_pruned", "active", "seen", "correct_seen",
)
SUMMARY_SCHEMA = pa.schema(
    [pa.field("epoch", pa.int32(), nullable=False)]
    + [pa.field(c, pa.int64(), nullable=False) for c in _STAT_COLUMNS]
    + [
        pa.field("accuracy", pa.float64()),  # null when no unpruned sample was seen yet
        pa.field("entered_freeze", pa.int64(), nullable=False),
        pa.field("changed", pa.int64(), nullable=False),
        pa.field("observations", pa.int64(), nullable=False),
        pa.field("skipped_nonfinite", pa.int64(), nullable=False),
        pa.field("repartitioned", pa.bool_(), nullable=False),
        pa.field("mastered", pa.bool_(), nullable=False),
        pa.field("samples_trained", pa.int64(), nullable=False),
        pa.field("phase", pa.string()),
        pa.field("snapshot", pa.bool_(), nullable=False),
        pa.field("history_rows", pa.int64(), nullable=False),
        pa.field("history_bytes", pa.int64(), nullable=False),
    ]
    # null when the buckets before the epoch are unknown (first epoch recorded after a resume)
    + [pa.field(col, pa.int64()) for _, _, col in TRANSITION_COLUMNS]
)

SNAPSHOT_FILE = FileKind("snapshot", HISTORY_SCHEMA)
SUMMARY_FILE = FileKind("summary", SUMMARY_SCHEMA)

_COMPRESSIONS = ("zstd", "lz4", "snappy", "gzip", "brotli", "none")

# Measured on 10M simulated samples: delta-packed ids and byte-stream-split floats cut zstd output
# by a fifth and the write time by half compared with the defaults.
_ENCODING: dict[str, Any] = {
    "use_dictionary": ["epoch", "bucket", "times_seen"],
    "column_encoding": {
        "sample_id": "DELTA_BINARY_PACKED",
        "q_value": "BYTE_STREAM_SPLIT",
        "confidence": "BYTE_STREAM_SPLIT",
        "last_loss": "BYTE_STREAM_SPLIT",
    },
}

_PRUNED_BIT = 4  # codes are bucket | pruned << 2: 0..3 live, 4..7 pruned
_COUNT_CHUNK = 1 << 22


@dataclass(frozen=True)
class HistoryConfig:
    """What :class:`HistoryWriter` keeps.

    ``every``: write the per-sample snapshot on epochs divisible by it (the summary row is written
    every epoch). ``changed_only``: write only the rows whose bucket or pruned flag changed since
    the previous snapshot (the first snapshot holds every row). ``compression``: Parquet codec.
    ``row_group_size``: rows per Parquet row group (DuckDB reads row groups in parallel).
    """

    every: int = 1
    changed_only: bool = False
    compression: str = "zstd"
    row_group_size: int = 1 << 20

    def __post_init__(self) -> None:
        check_int(self.every, "HistoryConfig.every", 1, error=ConfigError)
        if not isinstance(self.changed_only, (bool, np.bool_)):
            raise ConfigError(f"HistoryConfig.changed_only must be a bool, got {self.changed_only!r}")
        if self.compression not in _COMPRESSIONS:
            raise ConfigError(
                f"HistoryConfig.compression must be one of {list(_COMPRESSIONS)}, got {self.compression!r}"
            )
        check_int(self.row_group_size, "HistoryConfig.row_group_size", 1, error=ConfigError)


@dataclass(frozen=True)
class HistoryRecord:
    """What one :meth:`HistoryWriter.record` call wrote."""

    epoch: int
    snapshot: bool  # False on epochs that ``every`` skips (summary row only)
    rows: int  # per-sample rows written
    bytes: int  # size of the snapshot file (0 without a snapshot)
    seconds: float  # time spent in record()
    path: Path | None  # the snapshot file


class _AllRows:
    def select(self, codes: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
        return None


class _ChangedRows:
    def select(self, codes: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
        # Without an earlier snapshot from this writer, every row is a change.
        return None if previous is None else codes != previous


_SELECTIONS = {False: _AllRows(), True: _ChangedRows()}


def _state_codes(store: StateStore) -> np.ndarray:
    """``bucket | pruned << 2`` per sample, int8 ``[N]`` (a copy, so later epochs cannot change it)."""
    return store.column("bucket") | (store.column("pruned").view(np.int8) << 2)


def _transition_counts(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """int64 ``[4, 4]`` counts of (bucket before, bucket after) among samples unpruned before."""
    counts = np.zeros(17, dtype=np.int64)
    for lo in range(0, before.shape[0], _COUNT_CHUNK):
        b = before[lo: lo + _COUNT_CHUNK].astype(np.intp)
        pair = b * 4 + (after[lo: lo + _COUNT_CHUNK] & 3)
        pair[b >= _PRUNED_BIT] = 16  # already pruned: cannot move, not counted
        counts += np.bincount(pair, minlength=17)
    return counts[:16].reshape(4, 4)


def _normalise_phase(phase: str | Phase | None) -> str | None:
    if phase is None:
        return None
    if isinstance(phase, Phase):
        return phase.name
    if isinstance(phase, str) and phase:
        return phase
    raise InputError(f"record: phase must be a non-empty string, a Phase or None, got {phase!r}")


def _read_summary_table(path: Path, expected_n: int | None = None) -> pa.Table:
    if not path.is_file():
        return SUMMARY_SCHEMA.empty_table()
    table, _ = read_history_file(path, SUMMARY_FILE, expected_n=expected_n)
    return table


def read_summary(run_dir: str | os.PathLike, *, n_samples: int | None = None) -> pl.DataFrame:
    """The run's epoch summary, one row per epoch (empty, with the columns, when none was written).

    The file is verified first (:class:`HistoryFileError` naming it when it is corrupt, or describes
    another sample count than ``n_samples`` when given).
    """
    return pl.from_arrow(_read_summary_table(Run(Path(run_dir)).epochs_path, n_samples))


@dataclass(frozen=True)
class VerifiedHistory:
    """A run's history as verified at one moment: the summary and the snapshot files it lists."""

    summary: pa.Table  # SUMMARY_SCHEMA, one row per epoch (empty without a summary)
    snapshots: dict[int, Path]  # epoch -> verified snapshot file, in epoch order
    n_samples: int | None  # None when the run has no history yet


def verified_history(run_dir: str | os.PathLike, *, n_samples: int | None = None) -> VerifiedHistory:
    """Verify a run's summary and every snapshot it lists (one full read of each file).

    The summary is read first and only the snapshots it lists are taken: the writer renames a
    snapshot before the summary that lists it, so these are complete, and files of epochs it does
    not list (being recorded right now, or left by an interrupted record) are left out. A run
    without a summary takes every snapshot file. Raises :class:`HistoryFileError` naming the file
    that is corrupt, missing, of another sample count, or whose row count disagrees with the summary.
    """
    run = Run(Path(run_dir))
    summary = _read_summary_table(run.epochs_path, n_samples)
    files = run.history_files()
    n = n_samples
    if summary.num_rows:
        n = int(summary["n_samples"][0].as_py())
        listed = {
            int(e): int(r) for e, r, snap in zip(
                summary["epoch"].to_pylist(), summary["history_rows"].to_pylist(), summary["snapshot"].to_pylist()
            ) if snap
        }
    else:
        listed = {e: None for e in files}
    snapshots: dict[int, Path] = {}
    for e, rows in listed.items():
        path = run.epoch_path(e)
        if e not in files:
            raise HistoryFileError(f"{path}: missing, but {run.epochs_path} lists a snapshot of epoch {e}")
        _, info = read_history_file(path, SNAPSHOT_FILE, expected_n=n, keep=False)
        n = info["n_samples"]
        if info["epoch"] != e:
            raise HistoryFileError(f"{path}: holds epoch {info['epoch']}, its name says {e}")
        if rows is not None and info["rows"] != rows:
            raise HistoryFileError(f"{path}: {info['rows']} rows, {run.epochs_path} says {rows} for epoch {e}")
        snapshots[e] = path
    return VerifiedHistory(summary, snapshots, n)


class HistoryWriter:
    """Appends each epoch's history to a run directory. One writer per run (on rank 0 only).

    Recording epoch ``e`` replaces what an earlier run left in the directory for epochs ``>= e``
    (a run resumed from an older checkpoint rewrites those epochs).
    """

    def __init__(self, run_dir: str | os.PathLike, config: HistoryConfig | None = None) -> None:
        if config is None:
            config = HistoryConfig()
        if not isinstance(config, HistoryConfig):
            raise ConfigError(f"config must be a HistoryConfig, got {type(config).__name__}")
        self.config = config
        self.run = Run(Path(run_dir))
        self.run.history_dir.mkdir(parents=True, exist_ok=True)
        self._rows = _read_summary_table(self.run.epochs_path).to_pylist()
        self._selection = _SELECTIONS[bool(config.changed_only)]
        self._n: int | None = None
        self._epoch: int | None = None  # last epoch recorded by this writer
        self._epoch_codes: np.ndarray | None = None  # codes after that epoch
        self._snapshot_codes: np.ndarray | None = None  # codes at this writer's last snapshot

    def state_dict(self) -> dict[str, Any]:
        """What this writer remembers between epochs (bucket codes after the last recorded epoch
        and at the last snapshot), so a resumed run records exact transitions and the same
        ``changed_only`` snapshots as an uninterrupted one. Arrays are int8 ``[N]`` or None."""
        return {"n": self._n, "epoch": self._epoch, "epoch_codes": self._epoch_codes,
                "snapshot_codes": self._snapshot_codes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            n, epoch = state["n"], state["epoch"]
            codes = [None if state[k] is None else np.asarray(state[k], dtype=np.int8)
                     for k in ("epoch_codes", "snapshot_codes")]
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"history writer state is malformed ({e!r}); expected HistoryWriter.state_dict()") from None
        if any(c is not None and c.shape != (n,) for c in codes):
            raise InputError("history writer state: code arrays do not match its sample count")
        self._n, self._epoch = n, epoch
        self._epoch_codes, self._snapshot_codes = codes

    def _baseline(self, epoch: int, n: int) -> np.ndarray | None:
        """Codes before ``epoch``, or None when unknown."""
        if self._epoch_codes is not None and self._epoch == epoch - 1:
            return self._epoch_codes
        if epoch == 1:  # every run starts with all samples FOCUS and none pruned
            return np.full(n, int(Bucket.FOCUS), dtype=np.int8)
        return None

    def _check(self, store: StateStore, stats: PartitionStats, samples_trained: int) -> None:
        if not isinstance(store, StateStore):
            raise InputError(f"record: store must be a StateStore, got {type(store).__name__}")
        if not isinstance(stats, PartitionStats):
            raise InputError(f"record: stats must be the PartitionStats of repartition(), got {type(stats).__name__}")
        if stats.epoch != store.epoch or stats.n_samples != store.n_samples:
            raise InputError(
                f"record: call it right after store.repartition() with its stats; got stats of epoch "
                f"{stats.epoch} ({stats.n_samples} samples) for a store at epoch {store.epoch} "
                f"({store.n_samples} samples)"
            )
        if self._n is not None and store.n_samples != self._n:
            raise InputError(f"record: this writer recorded {self._n} samples, got a store of {store.n_samples}")
        # The run's history describes one dataset: a store of another size would replace it.
        run_n = {int(r["n_samples"]) for r in self._rows}
        if run_n and run_n != {store.n_samples}:
            raise InputError(
                f"record: {self.run.epochs_path} holds the history of {sorted(run_n)[0]} samples, this store has "
                f"{store.n_samples}; record into a new run directory (nothing was written)"
            )
        check_int(samples_trained, "record: samples_trained", 0)

    def record(
        self,
        store: StateStore,
        stats: PartitionStats,
        *,
        samples_trained: int,
        phase: str | Phase | None = None,
    ) -> HistoryRecord:
        """Record the epoch ``store.repartition()`` just ended: its snapshot (when due) and its
        summary row. ``samples_trained``: sample passes of the epoch (the plan's length);
        ``phase``: curriculum phase label, if any.
        """
        t0 = time.perf_counter()
        self._check(store, stats, samples_trained)
        phase_name = _normalise_phase(phase)
        cfg = self.config
        epoch, n = stats.epoch, store.n_samples
        codes = _state_codes(store)
        baseline = self._baseline(epoch, n)
        moves = None if baseline is None else _transition_counts(baseline, codes)
        kept = [r for r in self._rows if r["epoch"] < epoch]
        if any(r["n_samples"] != n for r in kept):
            raise InputError(
                f"record: {self.run.epochs_path} holds the history of {kept[0]['n_samples']} samples, "
                f"this store has {n}; record into another run directory"
            )
        snapshot = epoch % cfg.every == 0
        rows, size, path = 0, 0, None
        # Publication order, for readers running meanwhile (they read the summary first and take
        # only the epochs it lists): 1. the snapshot, renamed into place complete; 2. the summary
        # listing it; 3. only then the files of epochs the new summary no longer lists (a resumed
        # run rewriting later epochs), which a reader of the previous summary may still be opening.
        if snapshot:
            path = self.run.epoch_path(epoch)
            mask = self._selection.select(codes, self._snapshot_codes)
            rows = self._write_snapshot(store, epoch, mask, path)
            size = path.stat().st_size
        row = self._summary_row(stats, samples_trained, phase_name, snapshot, rows, size, moves)
        new_rows = kept + [row]
        self._write_summary(new_rows, n)
        for e, stale in self.run.history_files().items():
            if e > epoch or (e == epoch and not snapshot):
                stale.unlink(missing_ok=True)
        # Commit only once both files are in place, so a failed record() can simply be retried.
        self._rows = new_rows
        self._n, self._epoch, self._epoch_codes = n, epoch, codes
        if snapshot and cfg.changed_only:
            self._snapshot_codes = codes
        return HistoryRecord(epoch, snapshot, rows, size, time.perf_counter() - t0, path)

    def _write_snapshot(self, store: StateStore, epoch: int, mask: np.ndarray | None, path: Path) -> int:
        cfg = self.config
        n, rg = store.n_samples, int(cfg.row_group_size)
        table = store.to_arrow(HISTORY_COLUMNS)  # zero-copy views of the live columns
        epoch_block = pa.repeat(pa.scalar(epoch, pa.int32()), min(rg, n))
        written = 0
        digest = HistoryDigest(SNAPSHOT_FILE)
        with atomic_path(path) as tmp:
            with pq.ParquetWriter(
                str(tmp), HISTORY_SCHEMA, compression=cfg.compression, write_page_checksum=True, **_ENCODING,
            ) as w:
                for lo in range(0, n, rg):
                    chunk = table.slice(lo, rg)
                    if mask is not None:
                        keep = mask[lo: lo + rg]
                        if not keep.any():
                            continue
                        chunk = chunk.filter(pa.array(keep))
                    k = chunk.num_rows
                    block = pa.Table.from_arrays([epoch_block.slice(0, k), *chunk.columns], schema=HISTORY_SCHEMA)
                    digest.update(block)
                    w.write_table(block, row_group_size=rg)
                    written += k
                w.add_key_value_metadata(file_metadata(digest, n, epoch))
        return written

    def _write_summary(self, rows: list[dict[str, Any]], n: int) -> None:
        table = pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
        digest = HistoryDigest(SUMMARY_FILE)
        digest.update(table)
        meta = file_metadata(digest, n)
        with atomic_path(self.run.epochs_path) as tmp:
            with pq.ParquetWriter(str(tmp), SUMMARY_SCHEMA, compression="zstd", write_page_checksum=True) as w:
                w.write_table(table)
                w.add_key_value_metadata(meta)

    @staticmethod
    def _summary_row(
        stats: PartitionStats, samples_trained: int, phase: str | None, snapshot: bool,
        rows: int, size: int, moves: np.ndarray | None,
    ) -> dict[str, Any]:
        d = stats.to_dict()
        row: dict[str, Any] = {name: d[name] for name in SUMMARY_SCHEMA.names if name in d}
        row.update({count_column(b): c for b, c in stats.counts.items()})
        if isinstance(row["accuracy"], float) and math.isnan(row["accuracy"]):
            row["accuracy"] = None
        row.update(
            samples_trained=int(samples_trained), phase=phase, snapshot=snapshot,
            history_rows=int(rows), history_bytes=int(size),
        )
        for a, b, col in TRANSITION_COLUMNS:
            row[col] = None if moves is None else int(moves[a, b])
        return row
