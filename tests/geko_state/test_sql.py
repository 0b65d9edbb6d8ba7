import json

import numpy as np
import polars as pl
import pytest

from geko_state import Bucket, InputError, QueryError, StateStore, connect, query
from geko_state.cli import main
from tests.geko_state.runs import make_run

EPOCHS = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("sqlrun"), epochs=EPOCHS)


def test_samples_view_counts_match_the_store(run):
    con = connect(run.root)
    got = dict(con.sql("SELECT bucket, count(*) FROM samples WHERE NOT pruned GROUP BY bucket").fetchall())
    assert got == {b.name: c for b, c in run.store.bucket_counts().items() if c}
    assert con.sql("SELECT count(*) FROM samples WHERE pruned").fetchall()[0][0] == run.stats[-1].pruned
    assert con.sql("SELECT count(*) FROM samples WHERE bucket = 'HARD'").fetchall()[0][0] > 0


def test_samples_view_reads_the_state_in_place(run, tmp_path):
    store = StateStore.create(50, tmp_path / "state.arrow")
    con = connect(tmp_path)
    assert con.sql("SELECT sum(times_seen) FROM samples").fetchall() == [(0,)]
    store.observe(np.arange(10), np.full(10, 0.1), np.full(10, 0.9), np.ones(10, bool))
    # the trainer's updates are private until it flushes them into the file...
    assert con.sql("SELECT sum(times_seen) FROM samples").fetchall() == [(0,)]
    store.flush()
    # ...then, with no re-registration, DuckDB's scan of the mapped file sees them
    assert con.sql("SELECT sum(times_seen) FROM samples").fetchall() == [(10,)]
    store.close()


def test_history_and_epochs_views_match_the_stats(run):
    con = connect(run.root)
    per_epoch = con.sql("""
        SELECT epoch, bucket, count(*) FROM history WHERE NOT pruned GROUP BY ALL ORDER BY ALL
    """).fetchall()
    got = {(e, b): c for e, b, c in per_epoch}
    for st in run.stats:
        for b, c in st.counts.items():
            assert got.get((st.epoch, b.name), 0) == c
    pruned = dict(con.sql("SELECT epoch, count(*) FILTER (WHERE pruned) FROM history GROUP BY 1").fetchall())
    assert [pruned[st.epoch] for st in run.stats] == [st.pruned for st in run.stats]
    rows = con.sql("SELECT epoch, freeze_count, light_count, focus_count, hard_count, pruned, samples_trained "
                   "FROM epochs ORDER BY epoch").fetchall()
    assert rows == [(s.epoch, s.freeze, s.light, s.focus, s.hard, s.pruned, t) for s, t in zip(run.stats, run.trained)]


def test_transitions_view_matches_numpy_and_the_stats(run):
    con = connect(run.root)
    got = con.sql("SELECT sample_id, epoch, from_bucket, to_bucket FROM transitions ORDER BY epoch, sample_id").pl()
    names = np.array([b.name for b in Bucket])
    for e in range(1, EPOCHS + 1):
        before, after = run.codes[e - 1] & 3, run.codes[e] & 3
        moved = np.flatnonzero(before != after)
        ge = got.filter(pl.col("epoch") == e)
        np.testing.assert_array_equal(ge["sample_id"].to_numpy(), moved)
        assert ge["from_bucket"].to_list() == names[before[moved]].tolist()
        assert ge["to_bucket"].to_list() == names[after[moved]].tolist()
        assert ge.height == run.stats[e - 1].changed
    counts = con.sql("""
        SELECT t.epoch, t.from_bucket, t.to_bucket, t.count, coalesce(v.n, 0)
        FROM transition_counts t LEFT JOIN
             (SELECT epoch, from_bucket, to_bucket, count(*) AS n FROM transitions GROUP BY ALL) v
        USING (epoch, from_bucket, to_bucket)
    """).fetchall()
    assert len(counts) == 12 * EPOCHS and all(c == n for *_, c, n in counts)


def test_query_returns_polars_and_refuses_bad_sql(run):
    df = query(run.root, "SELECT bucket, count(*) AS n FROM samples GROUP BY bucket ORDER BY bucket")
    assert isinstance(df, pl.DataFrame) and df["n"].sum() == 2000
    with pytest.raises(QueryError, match="nope"):
        query(run.root, "SELECT nope FROM samples")
    with pytest.raises(QueryError):
        query(run.root, "   ")
    with pytest.raises(InputError, match="not a GEKO run directory"):
        query(run.root / "history", "SELECT 1")


def test_views_exist_before_any_history(tmp_path):
    StateStore.create(20, tmp_path / "state.arrow").close()
    con = connect(tmp_path)
    for view in ("history", "epochs", "transitions", "transition_counts"):
        assert con.sql(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]
    assert "bucket" in con.sql("SELECT * FROM history").columns


def test_cli_sql_formats(run, tmp_path, capsys):
    q = "SELECT bucket, count(*) AS n FROM samples GROUP BY bucket ORDER BY bucket"
    expected = query(run.root, q)
    assert main(["sql", str(run.root), q]) == 0
    out = capsys.readouterr().out
    assert "bucket" in out and f"{expected['n'][0]}" in out
    assert main(["sql", str(run.root), q, "--format", "csv"]) == 0
    assert pl.read_csv(capsys.readouterr().out.encode()).equals(expected)
    assert main(["sql", str(run.root), q, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected.to_dicts()
    assert main(["sql", str(run.root), "SELECT * FROM history", "--format", "parquet", "--output", str(tmp_path / "h.parquet")]) == 0
    assert pl.read_parquet(tmp_path / "h.parquet").height == 2000 * EPOCHS
    assert main(["sql", str(run.root), "SELECT * FROM samples LIMIT 3", "--format", "csv", "--output", str(tmp_path / "s.csv")]) == 0
    assert pl.read_csv(tmp_path / "s.csv").height == 3  # nested loss_window written as JSON text


def test_cli_bad_sql_exits_2_with_duckdbs_message_only(run, capsys):
    assert main(["sql", str(run.root), "SELEC bucket FROM samples"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.startswith("Parser Error: syntax error") and "geko" not in cap.err
    assert main(["sql", str(run.root), "SELECT 1", "--format", "parquet"]) == 2
    assert "--output" in capsys.readouterr().err
