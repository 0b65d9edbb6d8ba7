"""DuckDB views over a run directory.

``connect(run_dir)`` returns an in-memory DuckDB connection with these views:

=================== =====================================================================
``samples``         the current state, one row per sample (all state columns). DuckDB scans
                    the memory-mapped state file's Arrow buffers in place, nothing is copied.
``history``         every recorded snapshot (``history/epoch=*.parquet``), one row per
                    sample and recorded epoch (columns of ``HISTORY_SCHEMA``).
``epochs``          the epoch summary, one row per epoch (``epochs.parquet``).
``transitions``     ``(sample_id, epoch, from_bucket, to_bucket)``: rows of ``history`` whose
                    bucket differs from the same sample's previous history row. With a full
                    snapshot every epoch these are exactly the moves of each epoch (epoch 1
                    compares with the initial FOCUS). With ``every=k`` a transition at epoch
                    ``e`` is a change since the snapshot of ``e - k`` (moves that reverted in
                    between are invisible, and a first snapshot after epoch 1 has no earlier
                    row to compare with); with ``changed_only`` the history is a change log
                    and the view is exact between snapshots.
``transition_counts`` ``(epoch, from_bucket, to_bucket, count)``: exact per-epoch counts
                    kept in the summary, whatever the history density (null when unknown).
``suspects``        probably mislabeled samples: ``(sample_id, score, rank, in_cut, aum,
                    wrong_streak, times_seen, bucket)``, every observed sample ranked by
                    GEKO's noise score (:mod:`geko_state.noise`), rank 1 the most
                    suspicious; ``WHERE in_cut`` gives the default suspects (wrong at the
                    last observation, loss not going down), ``WHERE rank <= k`` the top k.
                    Computed from the state when connecting.
=================== =====================================================================

``connect`` first verifies the state file and every history file against their checksums
(one full read of each; a corrupt file raises :class:`~geko_state.errors.StateFileError` or
:class:`~geko_state.errors.HistoryFileError` naming it), then pins ``history`` and ``epochs`` to
the epochs the summary listed at that moment: while training keeps recording, a connection sees
whole epochs only, consistently across views; connect again to see later epochs. ``samples`` is
the live memory map of the state file, as of the trainer's last ``flush()``.

The connection is **locked** (see :func:`lock`): the views are Arrow objects handed to DuckDB by
this process (the history files are opened by name, never as a glob), so DuckDB itself needs no
file access and gets none: no reading or writing files, no ``ATTACH``, no extension installs, no
network, and its configuration cannot be changed back. :func:`query` also accepts only one
read-only statement. ``unsafe=True`` gives full DuckDB, for a user at their own command line.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.dataset as pads

# QueryError is re-exported here: its home was this module.
from .errors import InputError, QueryError
from .history import HISTORY_SCHEMA, TRANSITION_COLUMNS, verified_history
from .noise import store_suspects, suspects_table
from .run import Run, open_run
from .schema import LOSS_WINDOW, Bucket
from .validate import check_int

__all__ = ["QueryError", "READ_ONLY_STATEMENTS", "VIEWS", "check_read_only", "connect", "lock", "query"]

VIEWS: tuple[str, ...] = ("samples", "history", "epochs", "transitions", "transition_counts", "suspects")


# What query() runs. DuckDB parses WITH, DESCRIBE, SUMMARIZE, SHOW, VALUES and FROM-first queries
# as SELECT statements; everything that could write, attach, load or configure is another type.
READ_ONLY_STATEMENTS: tuple[str, ...] = ("SELECT",)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The suspects view of a run without a state file yet: no rows, the usual columns.
_NO_SUSPECTS = suspects_table({
    "sample_id": np.empty(0, np.int64), "bucket": np.empty(0, np.int8), "aum": np.empty(0, np.float32),
    "wrong_streak": np.empty(0, np.uint8), "times_seen": np.empty(0, np.int32),
    "last_loss": np.empty(0, np.float32), "loss_window": np.empty((0, LOSS_WINDOW), np.float32),
})

# Settings of a locked connection, applied in this order; the last one freezes them all.
_LOCKED_SETTINGS: tuple[str, ...] = (
    "SET python_enable_replacements = false",  # no scanning of the calling Python frame's variables
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allowed_paths = []",
    "SET allowed_directories = []",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)


def _literal(path: str | Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _transitions_sql() -> str:
    first = _literal(Bucket.FOCUS.name)
    return f"""
        SELECT sample_id, epoch, from_bucket, bucket AS to_bucket FROM (
            SELECT sample_id, epoch, bucket,
                   COALESCE(
                       LAG(bucket) OVER (PARTITION BY sample_id ORDER BY epoch),
                       CASE WHEN epoch = 1 THEN {first} END
                   ) AS from_bucket
            FROM history
        ) WHERE from_bucket <> bucket
    """


def _transition_counts_sql() -> str:
    parts = [
        f"SELECT epoch, {_literal(a.name)} AS from_bucket, {_literal(b.name)} AS to_bucket, {col} AS count FROM epochs"
        for a, b, col in TRANSITION_COLUMNS
    ]
    return " UNION ALL ".join(parts)


def _user_tables(tables: Mapping[str, str | os.PathLike] | None) -> dict[str, pl.DataFrame]:
    """``name -> file`` read by this process (any dataset format of :mod:`geko_state.datafiles`, by
    exact name); InputError naming the entry for a bad name, a missing file or an unknown suffix."""
    from .datafiles import check_data_path, data_format

    out: dict[str, pl.DataFrame] = {}
    for name, path in (tables or {}).items():
        if not isinstance(name, str) or not _NAME.match(name) or name.lower() in VIEWS:
            raise InputError(f"tables: {name!r} is not a usable table name (letters, digits and _, not one of "
                             f"the views {list(VIEWS)})")
        path = check_data_path(path, f"table {name!r}:")
        out[name] = data_format(path).read(path)
    return out


def connect(run_dir: str | os.PathLike, *, unsafe: bool = False,
            tables: Mapping[str, str | os.PathLike] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views (see the module docstring).

    Views whose files do not exist yet are empty, with their usual columns. The state is opened
    read-only; ``samples`` reflects it as of the last ``flush()`` of the training process. Every
    file is verified first, and the history must describe as many samples as the state.
    ``tables``: more files to query, ``{name: path}`` (any dataset file format), e.g. labels to
    join on ``sample_id``. The connection is locked (:func:`lock`) unless ``unsafe=True``.
    """
    from .store import StateStore

    extra = _user_tables(tables)
    run: Run = open_run(run_dir)
    store = StateStore.open(run.state_path, mode="r") if run.state_path.is_file() else None
    hist = verified_history(run.root, n_samples=None if store is None else store.n_samples)
    con = duckdb.connect(":memory:")
    if store is not None:
        # register() keeps the Arrow table, whose buffers keep the memory map alive.
        con.register("samples", store.to_arrow())
        con.register("suspects", store_suspects(store, ranked_only=False))
    else:
        con.register("suspects", _NO_SUSPECTS)
    if hist.snapshots:
        # The verified files by exact name: DuckDB's read_parquet would take each name as a glob
        # (a run directory called "run*" would mix in every run*/ beside it); Arrow never globs.
        files = [str(p) for p in hist.snapshots.values()]
        con.register("history", pads.dataset(files, schema=HISTORY_SCHEMA, format="parquet"))
    else:
        con.register("history", HISTORY_SCHEMA.empty_table())
    con.register("epochs", hist.summary)  # small: the verified copy itself
    con.sql(f"CREATE VIEW transitions AS {_transitions_sql()}")
    con.sql(f"CREATE VIEW transition_counts AS {_transition_counts_sql()}")
    for name, data in extra.items():
        con.register(name, data)
    if not unsafe:
        lock(con)
    return con


def lock(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Take file, network and extension access away from ``con`` for good.

    Objects already registered from Python (Arrow tables and datasets) still answer; DuckDB's own
    file functions (``read_csv``, ``read_text``, ``glob``, ``COPY``, ``ATTACH``, ``INSTALL``) fail
    with a permission error, and ``SET`` fails because the configuration is locked.
    """
    for statement in _LOCKED_SETTINGS:
        con.execute(statement)
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """QueryError unless ``sql`` is exactly one read-only statement (:data:`READ_ONLY_STATEMENTS`)."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("query: expected a SQL statement, got an empty string")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(str(e)) from None
    if len(statements) != 1:
        raise QueryError(f"query: expected one statement, got {len(statements)}; run them one at a time")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise QueryError(f"query: only read-only queries are accepted (SELECT, WITH, DESCRIBE, SUMMARIZE, "
                         f"SHOW), got a {kind} statement")


def query(run_dir: str | os.PathLike, sql: str, *, unsafe: bool = False, limit: int | None = None,
          timeout_s: float | None = None, tables: Mapping[str, str | os.PathLike] | None = None) -> pl.DataFrame:
    """Run ``sql`` against the run's views and return the result as a ``polars.DataFrame``.

    ``sql`` must be one read-only statement on a locked connection (see the module docstring);
    ``unsafe=True`` runs any DuckDB SQL with full access. ``limit``: return at most that many rows
    (the rest is never computed). ``timeout_s``: interrupt the query after that many seconds.
    ``tables``: more files to query by name (see :func:`connect`).
    Raises :class:`QueryError` with DuckDB's message when DuckDB refuses the query.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("query: expected a SQL statement, got an empty string")
    if limit is not None:
        check_int(limit, "limit", 0, form="None or an integer >= 0")
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise InputError(f"timeout_s: expected a number of seconds > 0 or None, got {timeout_s!r}")
    con = connect(run_dir, unsafe=unsafe, tables=tables)
    timer = None if timeout_s is None else threading.Timer(timeout_s, con.interrupt)
    try:
        if not unsafe:
            check_read_only(con, sql)
        if timer is not None:
            timer.start()
        rel = con.sql(sql)
        if rel is None:
            return pl.DataFrame()
        return (rel if limit is None else rel.limit(limit)).pl()
    except duckdb.InterruptException:
        raise QueryError(f"query: stopped after {timeout_s:g} s (the time limit); narrow it down, e.g. with "
                         "WHERE or LIMIT") from None
    except duckdb.Error as e:
        raise QueryError(str(e)) from None
    finally:
        if timer is not None:
            timer.cancel()
        con.close()
