import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from geko_state import (
    Bucket, ConfigError, HistoryConfig, HistoryWriter, InputError, StateStore, read_summary,
)
from geko_state.history import HISTORY_SCHEMA, SUMMARY_SCHEMA, TRANSITION_COLUMNS
from geko_state.run import Run
from geko_state.simulate import SyntheticTask, simulate
from tests.geko_state.runs import make_run

EPOCHS = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hist")
    sparse = root / "sparse"
    run = make_run(root / "full", epochs=EPOCHS, extra={sparse: HistoryConfig(every=2, changed_only=True, row_group_size=300)})
    return run, Run(root / "full"), Run(sparse)


def test_each_snapshot_is_the_state_after_its_repartition(runs):
    run, full, _ = runs
    files = full.history_files()
    assert list(files) == list(range(1, EPOCHS + 1))
    for e, path in files.items():
        t = pq.read_table(path)
        assert t.schema.remove_metadata() == HISTORY_SCHEMA
        snap = run.snapshots[e - 1]
        assert t.num_rows == 2000 and set(t["epoch"].to_pylist()) == {e}
        np.testing.assert_array_equal(t["sample_id"].to_numpy(), np.arange(2000))
        np.testing.assert_array_equal(t["bucket"].combine_chunks().indices.to_numpy(), snap["bucket"])
        np.testing.assert_array_equal(t["q_value"].to_numpy(), snap["q_value"])
        np.testing.assert_array_equal(t["last_loss"].to_numpy(), snap["last_loss"])
        np.testing.assert_array_equal(t["pruned"].to_numpy(zero_copy_only=False), snap["pruned"] != 0)


def test_summary_rows_match_the_stats(runs):
    run, full, sparse = runs
    for run_dir in (full, sparse):
        s = read_summary(run_dir.root)
        assert s.columns == SUMMARY_SCHEMA.names and s["epoch"].to_list() == list(range(1, EPOCHS + 1))
        for row, st, trained in zip(s.iter_rows(named=True), run.stats, run.trained):
            for b in Bucket:
                assert row[f"{b.name.lower()}_count"] == st.counts[b]
            assert (row["pruned"], row["changed"], row["seen"]) == (st.pruned, st.changed, st.seen)
            assert row["accuracy"] == pytest.approx(st.accuracy)
            assert row["samples_trained"] == trained == 2000
            assert row["phase"] == ("PEAK" if row["epoch"] % 2 else None)
    assert run.stats[-1].pruned > 0 and run.stats[-1].freeze > 0  # the run exercises pruning


def test_transition_counts_are_exact(runs):
    run, _, sparse = runs
    s = read_summary(sparse.root)  # exact even though snapshots are sparse
    for e in range(1, EPOCHS + 1):
        before, after = run.codes[e - 1], run.codes[e]
        live = before < 4
        row = s.row(e - 1, named=True)
        for a, b, col in TRANSITION_COLUMNS:
            assert row[col] == int(np.sum(live & (before == a) & ((after & 3) == b))), (e, col)
        assert sum(row[c] for _, _, c in TRANSITION_COLUMNS) == run.stats[e - 1].changed


def test_sparse_changed_only_history_rebuilds_every_snapshot_bucket(runs):
    run, full, sparse = runs
    files = sparse.history_files()
    assert list(files) == [2, 4, 6, 8]
    rows = {e: pq.read_metadata(p).num_rows for e, p in files.items()}
    assert rows[2] == 2000  # the writer's first snapshot holds every row
    for e in (4, 6, 8):  # then only samples whose bucket or pruned flag changed since the last snapshot
        assert rows[e] == int(np.sum(run.codes[e] != run.codes[e - 2])) < 2000
    summary = read_summary(sparse.root)
    assert summary["snapshot"].to_list() == [e % 2 == 0 for e in range(1, EPOCHS + 1)]
    assert summary["history_rows"].to_list() == [rows.get(e, 0) for e in range(1, EPOCHS + 1)]
    con = duckdb.connect()
    for e in (4, 8):
        diff = con.sql(f"""
            WITH log AS (SELECT * FROM read_parquet('{sparse.history_glob}') WHERE epoch <= {e}),
                 latest AS (SELECT sample_id, bucket, pruned FROM log
                            QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY epoch DESC) = 1),
                 snap AS (SELECT sample_id, bucket, pruned FROM read_parquet('{full.epoch_path(e)}'))
            SELECT count(*) FROM (
                (SELECT * FROM latest EXCEPT SELECT * FROM snap) UNION ALL
                (SELECT * FROM snap EXCEPT SELECT * FROM latest))
        """).fetchall()[0][0]
        assert diff == 0


def test_a_failed_write_leaves_no_partial_epoch_and_can_be_retried(tmp_path, monkeypatch):
    store = StateStore.create(3000, None)
    writer = HistoryWriter(tmp_path, HistoryConfig(changed_only=True, row_group_size=500))
    run = Run(tmp_path)
    gen = simulate(store, 3, SyntheticTask(), budget="full")
    r = next(gen)
    writer.record(store, r.stats, samples_trained=r.trained)
    summary_before = run.epochs_path.read_bytes()
    r = next(gen)

    calls = {"n": 0}
    real = pq.ParquetWriter.write_table

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # one row group is already in the temporary file
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        writer.record(store, r.stats, samples_trained=r.trained)
    assert calls["n"] == 2
    assert sorted(p.name for p in run.history_dir.iterdir()) == ["epoch=000001.parquet"]  # no temp, no partial
    assert run.epochs_path.read_bytes() == summary_before
    assert duckdb.sql(f"SELECT max(epoch) FROM read_parquet('{run.history_glob}')").fetchall() == [(1,)]

    monkeypatch.setattr(pq.ParquetWriter, "write_table", real)
    rec = writer.record(store, r.stats, samples_trained=r.trained)  # retry: same epoch, same changed rows
    assert rec.rows == r.stats.changed > 0  # default config never prunes
    first = pq.read_table(run.epoch_path(1))
    second = pq.read_table(run.epoch_path(2))
    old = first["bucket"].combine_chunks().indices.to_numpy()[second["sample_id"].to_numpy()]
    assert (old != second["bucket"].combine_chunks().indices.to_numpy()).all()
    assert second.num_rows == r.stats.changed
    assert read_summary(tmp_path)["epoch"].to_list() == [1, 2]


def test_a_resumed_run_rewrites_later_epochs(tmp_path):
    store = StateStore.create(1000, None)
    writer = HistoryWriter(tmp_path)
    ckpt = tmp_path / "ckpt.arrow"
    for r in simulate(store, 4, SyntheticTask(), budget="full"):
        writer.record(store, r.stats, samples_trained=r.trained)
        if r.epoch == 1:
            store.checkpoint(ckpt)
    resumed = StateStore.open(ckpt, storage="memory")
    r = next(simulate(resumed, 1, SyntheticTask(), budget="full"))
    rec = HistoryWriter(tmp_path).record(resumed, r.stats, samples_trained=r.trained)
    assert rec.epoch == 2 and list(Run(tmp_path).history_files()) == [1, 2]
    s = read_summary(tmp_path)
    assert s["epoch"].to_list() == [1, 2]
    assert s["freeze_to_light"].to_list()[1] is None  # a new writer does not know epoch 1's buckets


def test_config_and_inputs_are_validated(tmp_path):
    for bad in ({"every": 0}, {"every": True}, {"changed_only": "yes"}, {"compression": "zip"}, {"row_group_size": 0}):
        with pytest.raises(ConfigError):
            HistoryConfig(**bad)
    with pytest.raises(ConfigError):
        HistoryWriter(tmp_path, {"every": 2})
    store = StateStore.create(100, None)
    r = next(simulate(store, 1, SyntheticTask(), budget="full"))
    w = HistoryWriter(tmp_path)
    with pytest.raises(InputError, match="samples_trained"):
        w.record(store, r.stats, samples_trained=-1)
    with pytest.raises(InputError, match="phase"):
        w.record(store, r.stats, samples_trained=1, phase=3)
    store.repartition()  # stats no longer describe the store's last epoch
    with pytest.raises(InputError, match="right after store.repartition"):
        w.record(store, r.stats, samples_trained=1)
    assert not Run(tmp_path).epochs_path.exists()
