"""A reader never sees a partial epoch while another process records history.

A spawned process trains a state file and records an epoch after every repartition (as the torch
tracker does: ``repartition``, ``HistoryWriter.record``, ``flush``), while this process keeps
querying the run through DuckDB (``geko_state.sql``) and Polars (``read_summary`` and a scan of the
snapshot files). Every answer must be made of whole epochs: each summary row complete, and each
epoch it lists with a snapshot holding exactly the rows the summary says.
"""
import multiprocessing
import time
from pathlib import Path

import numpy as np
import polars as pl

from geko_state import GEKO_BALANCED, HistoryConfig, HistoryWriter, StateStore, connect, read_summary
from geko_state.history import SUMMARY_SCHEMA
from geko_state.run import Run

N = 50_000
EPOCHS = 40
# Columns every summary row has (the others are null by design on some epochs: accuracy before any
# sample is seen, phase without curriculum, transitions after a resume).
REQUIRED = [f.name for f in SUMMARY_SCHEMA if not f.nullable]


def record_epochs(run_dir: str, epochs: int) -> None:
    """The training process: observe, repartition, record, flush, epoch after epoch."""
    store = StateStore.create(N, Path(run_dir) / "state.arrow", GEKO_BALANCED.replace(log_bucket_stats=False),
                              kernels="numpy")
    writer = HistoryWriter(run_dir, HistoryConfig(changed_only=True, row_group_size=4096))
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        ids = rng.integers(0, N, N // 2)
        loss = rng.exponential(0.6, ids.size).astype(np.float32)
        store.observe(ids, loss, rng.random(ids.size).astype(np.float32), loss < 0.5)
        stats = store.repartition()
        writer.record(store, stats, samples_trained=ids.size)
        store.flush()
        time.sleep(0.03)  # an epoch of training, so the reader gets to look at many points
    store.close()


def _check_summary(s: pl.DataFrame) -> dict[int, int]:
    """Snapshot epochs -> rows the summary promises, after checking each row is whole."""
    assert s["epoch"].to_list() == list(range(1, s.height + 1)), "summary epochs with a gap"
    for col in REQUIRED:
        assert s[col].null_count() == 0, f"summary row without {col}"
    assert (s["n_samples"] == N).all()
    return dict(zip(s.filter(pl.col("snapshot"))["epoch"].to_list(), s.filter(pl.col("snapshot"))["history_rows"].to_list()))


def _check_duckdb(run: Run) -> int:
    con = connect(run.root)
    try:
        s = con.sql("SELECT * FROM epochs ORDER BY epoch").pl()
        promised = _check_summary(s)
        # one query over both views: a half-recorded epoch would show up as a missing side
        rows = con.sql("""
            SELECT epoch, e.history_rows, coalesce(h.n, 0) AS n, e.snapshot
            FROM epochs e FULL OUTER JOIN (SELECT epoch, count(*) AS n FROM history GROUP BY epoch) h USING (epoch)
        """).fetchall()
        for epoch, want, got, snapshot in rows:
            assert want is not None, f"history rows of epoch {epoch}, which the summary does not list"
            assert got == (want if snapshot else 0), f"epoch {epoch}: {got} history rows, summary says {want}"
        assert con.sql("SELECT count(*) FROM samples").fetchall() == [(N,)]
        return len(promised)
    finally:
        con.close()


def _check_polars(run: Run) -> int:
    promised = _check_summary(read_summary(run.root))  # the summary first, then the files it lists
    for epoch, want in promised.items():
        assert pl.read_parquet(run.epoch_path(epoch)).height == want, f"epoch {epoch} snapshot is partial"
    # a plain scan of the snapshot files (as a user would write it) may see epochs the summary does
    # not list yet, but never part of one
    if promised:
        got = dict(pl.scan_parquet(run.history_glob).group_by("epoch").len().collect().iter_rows())
        for epoch, want in promised.items():
            assert got[epoch] == want, f"epoch {epoch}: scan saw {got[epoch]} rows, summary says {want}"
    return len(promised)


def test_readers_see_only_whole_epochs_while_history_is_recorded(tmp_path):
    run = Run(tmp_path / "run")
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=record_epochs, args=(str(run.root), EPOCHS))
    writer.start()
    seen: set[int] = set()
    checks = 0
    t0 = time.monotonic()
    try:
        while writer.is_alive() and time.monotonic() - t0 < 60:
            if not run.epochs_path.exists():
                time.sleep(0.01)
                continue
            seen.add(_check_duckdb(run))
            seen.add(_check_polars(run))
            checks += 2
    finally:
        writer.join(timeout=60)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0
    assert _check_duckdb(run) == EPOCHS and _check_polars(run) == EPOCHS
    # the reads did overlap the recording, at many different points of it
    print(f"reader checks {checks}, summary lengths seen {sorted(seen)}")
    assert checks >= 6 and len(seen - {EPOCHS}) >= 3, (checks, sorted(seen))
