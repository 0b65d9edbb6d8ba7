"""StateStore: per-sample learning state with observe / repartition / plan / checkpoint."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from .backends.registry import get_storage
from .config import GEKOConfig, NanPolicy
from .curriculum import MOUNTAIN
from .errors import ConfigError, InputError, StateFileError, StoreClosedError
from .kernels import observe as obs
from .kernels import repartition as rp
from .kernels.registry import KernelBackend, get_kernels
from .planning import (
    Budget,
    BudgetKind,
    EpochPlan,
    WeightSegment,
    build_plan,
    class_weight_vector,
)
from .schema import COLUMN_NAMES, SCHEMA_VERSION, Bucket
from .statefile import (
    SealedState,
    columns_to_batch,
    seal,
    sidecar_path,
    verify_state,
    write_sidecar,
    write_state_file,
)
from .stats import PartitionStats
from .validate import check_int

__all__ = ["StateStore"]

log = logging.getLogger("geko_state")

# Storage backends that live in a state file.
_FILE_STORAGE = ("arrow", "arrow-shared")

_OBS_ERRORS = {
    obs.OBS_BAD_ID: ("ids", "sample ids in [0, {n})"),
    obs.OBS_NONFINITE_LOSS: ("losses", "finite losses (or GEKOConfig(nan_policy='skip'))"),
    obs.OBS_NEGATIVE_LOSS: ("losses", "losses >= 0"),
    obs.OBS_NONFINITE_CONFIDENCE: ("confidences", "finite confidences (or GEKOConfig(nan_policy='skip'))"),
    obs.OBS_CONFIDENCE_RANGE: ("confidences", "confidences in [0, 1]"),
}


# The dtypes observe's kernels take, by target; arrays that already have them need no conversion.
_READY = {np.int64: np.dtype(np.int64), np.float32: np.dtype(np.float32), np.uint8: np.dtype(np.uint8)}
_BOOL = np.dtype(np.bool_)
# observe without margins: the kernels skip the margin columns for a length-0 array.
_NO_MARGINS = np.empty(0, dtype=np.float32)


def _as_1d(name: str, value: Any, dtype: type) -> np.ndarray:
    # Fast path for the common case (a 1-D numpy array of the kernel's dtype, or booleans for
    # ``correct``): what the general path below returns for it, without its checks.
    if type(value) is np.ndarray and value.ndim == 1:
        dt = value.dtype
        if dt == _READY[dtype]:
            return value
        if dt == _BOOL and dtype is np.uint8:
            return value.view(np.uint8)
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001  (anything array-like may raise anything)
        raise InputError(f"observe: {name} must be a 1-D array, could not convert: {e}") from None
    if arr.ndim != 1:
        raise InputError(f"observe: {name} must be a 1-D array, got shape {arr.shape}")
    if dtype is np.int64:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"observe: {name} must hold integer sample ids, got dtype {arr.dtype}")
        if arr.dtype == np.uint64 and arr.size and (arr > np.iinfo(np.int64).max).any():
            # The int64 cast would wrap these into negative ids and the error would show those.
            bad = int(np.flatnonzero(arr > np.iinfo(np.int64).max)[0])
            raise InputError(f"observe: {name}[{bad}] = {arr[bad].item()!r}; expected int64 sample ids (nothing was applied)")
        return arr.astype(np.int64, copy=False)
    if dtype is np.uint8:
        if arr.dtype == np.bool_:
            return arr.view(np.uint8)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"observe: {name} must be booleans (or 0/1 integers), got dtype {arr.dtype}")
        if arr.size and ((arr != 0) & (arr != 1)).any():
            bad = int(np.flatnonzero((arr != 0) & (arr != 1))[0])
            raise InputError(f"observe: {name}[{bad}] = {arr[bad].item()!r}; expected booleans or 0/1 integers")
        return arr.astype(np.uint8, copy=False)
    if arr.size and not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"observe: {name} must be numbers, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


class StateStore:
    """Per-sample GEKO state for ``n_samples`` samples (ids ``0 .. n_samples - 1``).

    Create with :meth:`create` (in memory, or a memory-mapped Arrow file when ``path`` is given),
    reopen with :meth:`open`. Call :meth:`observe` with training results, :meth:`repartition` once at
    the end of every epoch, and :meth:`plan_epoch` for the next epoch's sample ids.
    """

    def __init__(
        self, storage: Any, config: GEKOConfig, kernels: KernelBackend, meta: dict[str, Any],
        sealed: SealedState | None = None,
    ) -> None:
        self._storage = storage
        self._config = config
        self._kernels = kernels
        self._meta = meta
        # What the state file on disk holds (metadata and checksum) as of the last flush; None in memory.
        self._sealed = sealed
        self._warned_no_progress = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        n_samples: int,
        path: str | os.PathLike | None = None,
        config: GEKOConfig | None = None,
        *,
        kernels: str = "numba",
        overwrite: bool = False,
        storage: str = "arrow",
    ) -> "StateStore":
        """New state for ``n_samples`` samples. ``path=None`` keeps it in memory; a path makes it
        a memory-mapped Arrow IPC file (readable by pyarrow / polars / DuckDB after :meth:`flush`).
        ``storage="arrow"`` maps it copy-on-write (updates at RAM speed, written back by
        :meth:`flush`); ``"arrow-shared"`` maps it shared, for states larger than RAM.
        """
        check_int(n_samples, "n_samples", 1)
        if config is None:
            config = GEKOConfig()
        if not isinstance(config, GEKOConfig):
            raise ConfigError(f"config must be a GEKOConfig, got {type(config).__name__}")
        if storage not in (*_FILE_STORAGE, "memory"):
            raise InputError(f"storage must be one of {[*_FILE_STORAGE, 'memory']}, got {storage!r}")
        backend = get_kernels(kernels)
        meta = cls._fresh_meta(int(n_samples), config)
        sealed = None
        if path is None:
            st: Any = get_storage("memory").create(int(n_samples))
        else:
            if storage not in _FILE_STORAGE:
                raise InputError(f"storage must be one of {list(_FILE_STORAGE)} with a path, got {storage!r}")
            path = Path(path)
            if path.exists() and not overwrite:
                raise StateFileError(f"{path}: already exists; use StateStore.open() or overwrite=True")
            st = get_storage(storage).create(int(n_samples), path, meta)
            sealed = st.layout.sealed
        store = cls(st, config, backend, meta, sealed)
        store.flush()
        return store

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        mode: str = "r+",
        storage: str = "arrow",
        kernels: str = "numba",
        n_samples: int | None = None,
    ) -> "StateStore":
        """Open a state file or checkpoint.

        ``storage="arrow"`` memory-maps it (``mode="r"`` read-only; ``"r+"``: updates are written
        back to the file by :meth:`flush` / :meth:`close`), ``"arrow-shared"`` maps it shared (for
        states larger than RAM); ``storage="memory"`` loads a private copy, leaving the file
        untouched (resume from a checkpoint). ``n_samples``, when given, must match the file.

        Every storage first checks the file's data against its checksum (one read of the file;
        about 0.1 s per 10M samples) and refuses a corrupt or truncated file with
        :class:`StateFileError`.
        """
        if mode not in ("r", "r+"):
            raise InputError(f"mode must be 'r' or 'r+', got {mode!r}")
        if storage not in (*_FILE_STORAGE, "memory"):
            raise InputError(f"storage must be one of {[*_FILE_STORAGE, 'memory']}, got {storage!r}")
        path = Path(path)
        backend = get_kernels(kernels)
        file_backend = storage if storage in _FILE_STORAGE else "arrow"
        mapped = get_storage(file_backend)(path, writable=(mode == "r+" and storage != "memory"), expected_n=n_samples)
        if storage == "memory":
            # Verify the private copy itself, so a flush racing with the copy cannot slip through.
            columns = {k: np.array(v) for k, v in mapped.columns.items()}
            mapped.columns = {}
            st: Any = get_storage("memory")(columns)
        else:
            st = mapped
        try:
            sealed = verify_state(path, mapped.layout, st.columns)
            config = GEKOConfig.from_dict(sealed.meta.get("config"))
        except BaseException:
            st.columns = {}  # release the mapping without writing anything back
            raise
        return cls(st, config, backend, dict(sealed.meta), None if storage == "memory" else sealed)

    @staticmethod
    def _fresh_meta(n: int, config: GEKOConfig) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "n_samples": n,
            "epoch": 0,
            "config": config.to_dict(),
            "observations_total": 0,
            "observations_epoch": 0,
            "skipped_total": 0,
            "skipped_epoch": 0,
            "seen_total": 0,  # samples observed at least once (pruned ones included)
            "last_stats": None,
        }

    # ------------------------------------------------------------------ properties
    def _cols(self) -> dict[str, np.ndarray]:
        if not self._storage.columns:
            raise StoreClosedError(
                "this StateStore is closed; expected an open store (reopen the file with StateStore.open(path))"
            )
        return self._storage.columns

    @property
    def n_samples(self) -> int:
        return self._storage.n_samples

    def __len__(self) -> int:
        return self.n_samples

    @property
    def config(self) -> GEKOConfig:
        return self._config

    @property
    def epoch(self) -> int:
        """Number of completed epochs (repartition calls); the next plan defaults to this epoch."""
        return int(self._meta["epoch"])

    @property
    def path(self) -> Path | None:
        return self._storage.path

    @property
    def kernels(self) -> str:
        return self._kernels.name

    @property
    def last_stats(self) -> PartitionStats | None:
        d = self._meta.get("last_stats")
        if d is None:
            return None
        d = {k: v for k, v in d.items() if k not in ("active", "accuracy")}
        return PartitionStats(**d)

    @property
    def observations_total(self) -> int:
        return int(self._meta["observations_total"])

    @property
    def skipped_total(self) -> int:
        """Observations dropped for non-finite values under ``nan_policy='skip'``."""
        return int(self._meta["skipped_total"])

    def column(self, name: str) -> np.ndarray:
        """Read-only numpy view of one state column (``[N]``, or ``[N, 5]`` for loss_window)."""
        if name not in COLUMN_NAMES:
            raise InputError(f"unknown column {name!r}; expected one of {list(COLUMN_NAMES)}")
        view = self._cols()[name].view()
        view.flags.writeable = False
        return view

    def bucket_counts(self) -> dict[Bucket, int]:
        """Current samples per bucket, pruned samples excluded."""
        cols = self._cols()
        live = cols["pruned"] == 0
        counts = np.bincount(cols["bucket"][live].astype(np.int64), minlength=4)
        return {b: int(counts[b]) for b in Bucket}

    # ------------------------------------------------------------------ observe
    def observe(self, ids: Any, losses: Any, confidences: Any, correct: Any, margins: Any = None) -> int:
        """Fold one batch of training results into the state.

        ``ids`` int ``[B]``; ``losses`` ``[B]`` (>= 0); ``confidences`` ``[B]`` in [0, 1];
        ``correct`` bool ``[B]``; ``margins`` float ``[B]`` or None: the assigned label's logit
        minus the largest other logit (a causal LM: the mean over its label tokens), NaN where
        unknown; they feed the ``aum`` column (see :mod:`geko_state.noise`).
        Duplicate ids apply in order. The whole batch is validated before anything changes;
        returns the number of observations applied.
        """
        cols = self._cols()
        if not self._storage.writable:
            raise InputError("observe: this store was opened read-only (mode='r'); expected a writable store "
                             "(StateStore.open(path, mode='r+'))")
        i = _as_1d("ids", ids, np.int64)
        lo = _as_1d("losses", losses, np.float32)
        co = _as_1d("confidences", confidences, np.float32)
        cr = _as_1d("correct", correct, np.uint8)
        mg = _NO_MARGINS if margins is None else _as_1d("margins", margins, np.float32)
        b = i.shape[0]
        if not (lo.shape[0] == b and co.shape[0] == b and cr.shape[0] == b):
            raise InputError(
                "observe: ids, losses, confidences and correct must have the same length, got "
                f"{b}, {lo.shape[0]}, {co.shape[0]}, {cr.shape[0]}"
            )
        if margins is not None and mg.shape[0] != b:
            raise InputError(f"observe: margins must have the length of ids ({b}), got {mg.shape[0]}")
        if b == 0:
            return 0
        cfg = self._config
        # Python floats (float64 to numba): a numpy scalar costs ~0.3 us more to dispatch.
        code, idx, skipped, newly_seen = self._kernels.observe(
            cols["times_seen"], cols["last_loss"], cols["confidence"], cols["correct"],
            cols["loss_window"], cols["quality"], cols["q_value"],
            cols["aum"], cols["wrong_streak"],
            i, lo, co, cr, mg, float(cfg.q_value_lr), float(cfg.q_value_loss_scale),
            cfg.nan_policy is NanPolicy.SKIP,
        )
        if code != obs.OBS_OK:
            arg, expected = _OBS_ERRORS[int(code)]
            src = {"ids": i, "losses": lo, "confidences": co}[arg]
            raise InputError(
                f"observe: {arg}[{int(idx)}] = {src[int(idx)].item()!r}; expected "
                + expected.format(n=self.n_samples)
                + " (nothing was applied)"
            )
        applied = b - int(skipped)
        m = self._meta
        m["observations_total"] += applied
        m["observations_epoch"] += applied
        m["skipped_total"] += int(skipped)
        m["skipped_epoch"] += int(skipped)
        m["seen_total"] += int(newly_seen)
        return applied

    # ------------------------------------------------------------------ repartition
    def repartition(self) -> PartitionStats:
        """End the current epoch: reassign buckets (every ``repartition_every`` epochs), advance
        freeze streaks, prune, and return the epoch's stats. Call once per epoch.
        """
        cols = self._cols()
        if not self._storage.writable:
            raise InputError("repartition: this store was opened read-only (mode='r'); expected a writable store "
                             "(StateStore.open(path, mode='r+'))")
        cfg = self._config
        epoch = self.epoch + 1
        due = epoch % cfg.repartition_every == 0
        if due:
            counts = self._kernels.repartition(
                cols["correct"], cols["confidence"], cols["quality"], cols["q_value"], cols["aum"], cols["pruned"],
                cols["bucket"], cols["consecutive_frozen"], cols["frozen_at_epoch"],
                np.float32(cfg.freeze_confidence), np.float32(cfg.freeze_quality),
                np.float32(cfg.focus_confidence), np.float32(cfg.min_q_for_freeze),
                np.float32(np.nan if cfg.freeze_margin is None else cfg.freeze_margin),
                np.int32(epoch), np.int32(cfg.prune_frozen_after),
            )
        else:
            counts = self._count_only(cols)
        # Pruned samples were all observed (only FREEZE samples are pruned).
        counts[rp.C_SEEN] = int(self._meta["seen_total"]) - int(counts[rp.C_PRUNED])
        stats = PartitionStats.from_counts(
            counts, epoch=epoch, n_samples=self.n_samples,
            observations=int(self._meta["observations_epoch"]),
            skipped=int(self._meta["skipped_epoch"]), repartitioned=due,
            mastered_fraction=cfg.mastered_fraction,
        )
        m = self._meta
        m["epoch"] = epoch
        m["observations_epoch"] = 0
        m["skipped_epoch"] = 0
        m["last_stats"] = stats.to_dict()
        if cfg.log_bucket_stats:
            log.info(stats.format_line())
        return stats

    @staticmethod
    def _count_only(cols: dict[str, np.ndarray]) -> np.ndarray:
        counts = np.zeros(rp.N_COUNTS, dtype=np.int64)
        live = cols["pruned"] == 0
        counts[:4] = np.bincount(cols["bucket"][live].astype(np.int64), minlength=4)
        counts[rp.C_PRUNED] = int((~live).sum())
        counts[rp.C_CORRECT_SEEN] = int((live & (cols["correct"] != 0)).sum())
        return counts

    # ------------------------------------------------------------------ weights and plans
    def weight_segments(
        self,
        *,
        progress: tuple[float, float] | None = None,
        total_epochs: int | None = None,
        epoch: int | None = None,
    ) -> list[WeightSegment]:
        """The (HARD, FOCUS, LIGHT) weights an epoch is drawn with, split at curriculum phase
        changes. ``progress=(start, end)`` is the share of training the epoch spans; or give
        ``total_epochs`` and it is ``(epoch / total, (epoch + 1) / total)``.
        """
        cfg = self._config
        if not cfg.use_curriculum:
            return [WeightSegment(1.0, cfg.bucket_weights, None)]
        if progress is None and total_epochs is not None:
            check_int(total_epochs, "total_epochs", 1)
            e = self.epoch if epoch is None else int(epoch)
            if e >= total_epochs:
                raise InputError(f"epoch {e} is past total_epochs={total_epochs}")
            progress = (e / total_epochs, (e + 1) / total_epochs)
        if progress is None:
            if not self._warned_no_progress:
                warnings.warn(
                    "use_curriculum=True but no training progress was given (progress= or "
                    "total_epochs=); drawing with the fixed bucket_weights instead",
                    stacklevel=3,
                )
                self._warned_no_progress = True
            return [WeightSegment(1.0, cfg.bucket_weights, None)]
        try:
            start, end = progress
        except (TypeError, ValueError):
            raise InputError(f"progress must be a (start, end) pair in [0, 1], got {progress!r}") from None
        segs = MOUNTAIN.segments(start, end)
        span = end - start
        if span <= 0:
            return [WeightSegment(1.0, segs[0].spec.weights, segs[0].spec.phase)]
        return [WeightSegment(s.length / span, s.spec.weights, s.spec.phase) for s in segs]

    def weights(self, progress: float | None = None) -> np.ndarray:
        """Per-sample draw weights, float32 ``[N]``: 0 for FREEZE, pruned and over-limit samples,
        else the bucket's weight (the curriculum's at ``progress`` when given and enabled).
        """
        cols = self._cols()
        cfg = self._config
        w = cfg.bucket_weights
        if cfg.use_curriculum and progress is not None:
            w = MOUNTAIN.weights(progress)
        cw = class_weight_vector(w).astype(np.float32)
        return self._kernels.weights(cols["bucket"], cols["pruned"], cols["times_seen"], cw, np.int32(cfg.max_times_seen))

    def build_plan(
        self,
        seed: int = 0,
        *,
        epoch: int | None = None,
        budget: Budget = BudgetKind.TRAINABLE,
        replacement: bool = True,
        progress: tuple[float, float] | None = None,
        total_epochs: int | None = None,
    ) -> EpochPlan:
        """The global plan of an epoch (all ranks), with its curriculum segments."""
        cols = self._cols()
        e = self.epoch if epoch is None else epoch
        segs = self.weight_segments(progress=progress, total_epochs=total_epochs, epoch=e)
        plan = build_plan(
            self._kernels, cols["bucket"], cols["pruned"], cols["times_seen"],
            max_seen=self._config.max_times_seen, segments=segs, budget=budget,
            seed=seed, epoch=e, replacement=bool(replacement),
        )
        if len(plan) == 0 and plan.requested > 0:
            warnings.warn(
                f"epoch {e}: no sample can be drawn (all FREEZE, pruned or past max_times_seen); "
                "the plan is empty",
                stacklevel=2,
            )
        return plan

    def plan_epoch(
        self,
        seed: int = 0,
        *,
        epoch: int | None = None,
        budget: Budget = BudgetKind.TRAINABLE,
        replacement: bool = True,
        rank: int = 0,
        world_size: int = 1,
        progress: tuple[float, float] | None = None,
        total_epochs: int | None = None,
    ) -> np.ndarray:
        """This rank's sample ids for an epoch, int64 ``[K / world_size]`` (rounded up).

        Deterministic in (state, seed, epoch, budget). ``budget``: ``"trainable"`` (default: as
        many draws as samples with weight > 0), ``"full"`` (N), an int count or a float fraction
        of N. Ranks share one global plan and take interleaved shards.
        """
        plan = self.build_plan(
            seed, epoch=epoch, budget=budget, replacement=replacement,
            progress=progress, total_epochs=total_epochs,
        )
        return plan.shard(rank, world_size)

    # ------------------------------------------------------------------ export / persistence
    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The state as a ``pyarrow.Table``. Numeric columns are zero-copy views of the live state
        (they change as the store is updated: copy the table to keep a snapshot); ``bucket`` is
        dictionary-encoded with the bucket names, ``correct`` and ``pruned`` are booleans.
        """
        cols = self._cols()
        names = list(COLUMN_NAMES if columns is None else columns)
        unknown = [c for c in names if c not in COLUMN_NAMES]
        if unknown:
            raise InputError(f"unknown column(s) {unknown}; expected names from {list(COLUMN_NAMES)}")
        batch = columns_to_batch(cols)
        arrays, fields = [], []
        for name in names:
            arr = batch.column(name)
            if name in ("correct", "pruned"):
                arr = pc.not_equal(arr, pa.scalar(0, pa.uint8()))
            arrays.append(arr)
            fields.append(pa.field(name, arr.type, nullable=False))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def to_polars(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """The state as a ``polars.DataFrame`` (see :meth:`to_arrow`)."""
        return pl.from_arrow(self.to_arrow(columns))

    def _meta_for_write(self) -> dict[str, Any]:
        m = dict(self._meta)
        m["config"] = self._config.to_dict()
        return m

    def flush(self) -> None:
        """Make the memory-mapped file and its metadata sidecar current, with a new checksum (one
        read of the state, about 0.1 s per 10M samples; no-op in memory).
        """
        cols = self._cols()
        st = self._storage
        if st.path is None or not st.writable:
            return
        sealed = seal(cols, self._meta_for_write())
        # Checksum first, keeping the last one as a fallback, then the data, then drop the fallback:
        # a crash before the data is written leaves the last flush's state, which still opens; a
        # crash while it is written leaves data that matches neither and is refused.
        write_sidecar(st.path, sealed, previous=self._sealed)
        st.flush()
        write_sidecar(st.path, sealed)
        self._sealed = sealed

    def checkpoint(self, path: str | os.PathLike) -> Path:
        """Write a self-contained copy of the state to ``path`` atomically (temporary name, then
        rename): a crash leaves the previous checkpoint intact. Reopen with :meth:`open`.
        """
        cols = self._cols()
        path = Path(path)
        if self._storage.path is not None and path.resolve() == Path(self._storage.path).resolve():
            raise InputError(f"checkpoint: {path} is the live state file; choose another path")
        write_state_file(path, cols, self._meta_for_write())
        sidecar_path(path).unlink(missing_ok=True)
        return path

    def close(self) -> None:
        """Flush and release the columns. Further calls raise :class:`StoreClosedError`."""
        if self._storage.columns:
            self.flush()
            self._storage.close()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "memory"
        return f"StateStore(n_samples={self.n_samples}, epoch={self.epoch}, storage={where!r}, kernels={self.kernels!r})"
