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
=================== =====================================================================

``connect`` first verifies the state file and every history file against their checksums
(one full read of each; a corrupt file raises :class:`~geko_state.errors.StateFileError` or
:class:`~geko_state.errors.HistoryFileError` naming it), then pins ``history`` and ``epochs`` to
the epochs the summary listed at that moment: while training keeps recording, a connection sees
whole epochs only, consistently across views; connect again to see later epochs. ``samples`` is
the live memory map of the state file, as of the trainer's last ``flush()``.
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl

from .errors import InputError
from .history import HISTORY_SCHEMA, TRANSITION_COLUMNS, verified_history
from .run import Run, open_run
from .schema import Bucket

__all__ = ["QueryError", "VIEWS", "connect", "query"]

VIEWS: tuple[str, ...] = ("samples", "history", "epochs", "transitions", "transition_counts")


class QueryError(InputError):
    """DuckDB refused a query; the message is DuckDB's own."""


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


def connect(run_dir: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views (see the module docstring).

    Views whose files do not exist yet are empty, with their usual columns. The state is opened
    read-only; ``samples`` reflects it as of the last ``flush()`` of the training process. Every
    file is verified first, and the history must describe as many samples as the state.
    """
    from .store import StateStore

    run: Run = open_run(run_dir)
    store = StateStore.open(run.state_path, mode="r") if run.state_path.is_file() else None
    hist = verified_history(run.root, n_samples=None if store is None else store.n_samples)
    con = duckdb.connect(":memory:")
    if store is not None:
        # register() keeps the Arrow table, whose buffers keep the memory map alive.
        con.register("samples", store.to_arrow())
    if hist.snapshots:
        # The verified files by name, not a glob: a file recorded later is not in this view.
        files = ", ".join(_literal(p) for p in hist.snapshots.values())
        con.sql(f"CREATE VIEW history AS SELECT * FROM read_parquet([{files}], hive_partitioning = false)")
    else:
        con.register("history", HISTORY_SCHEMA.empty_table())
    con.register("epochs", hist.summary)  # small: the verified copy itself
    con.sql(f"CREATE VIEW transitions AS {_transitions_sql()}")
    con.sql(f"CREATE VIEW transition_counts AS {_transition_counts_sql()}")
    return con


def query(run_dir: str | os.PathLike, sql: str) -> pl.DataFrame:
    """Run ``sql`` against the run's views and return the result as a ``polars.DataFrame``.

    Raises :class:`QueryError` with DuckDB's message when DuckDB refuses the query.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("query: expected a SQL statement, got an empty string")
    con = connect(run_dir)
    try:
        rel = con.sql(sql)
        return pl.DataFrame() if rel is None else rel.pl()
    except duckdb.Error as e:
        raise QueryError(str(e)) from None
    finally:
        con.close()
