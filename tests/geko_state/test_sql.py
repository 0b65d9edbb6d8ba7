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


# ---------------------------------------------------------------------- the locked connection
OUTSIDE_READS = [
    "SELECT * FROM read_csv('/etc/passwd', header=false, sep=':')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('{run}/history/epoch=000001.parquet')",
    "SELECT * FROM '{run}/epochs.parquet'",
]
REFUSED_STATEMENTS = [
    "COPY (SELECT 1) TO '{tmp}/copied.csv'",
    "ATTACH '{tmp}/attached.duckdb'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "CREATE TABLE t AS SELECT 1",
    "EXPORT DATABASE '{tmp}/exported'",
    "PRAGMA version",
    "CALL pragma_version()",
    "DROP VIEW samples",
]


@pytest.mark.parametrize("sql", OUTSIDE_READS)
def test_query_cannot_read_files(run, sql):
    with pytest.raises(QueryError, match="Permission Error|file system operations are disabled"):
        query(run.root, sql.format(run=run.root))


@pytest.mark.parametrize("sql", REFUSED_STATEMENTS)
def test_query_accepts_only_one_read_only_statement(run, tmp_path, sql):
    with pytest.raises(QueryError, match="only read-only queries are accepted"):
        query(run.root, sql.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_query_refuses_several_statements_and_accepts_read_only_forms(run, tmp_path):
    with pytest.raises(QueryError, match="expected one statement, got 2"):
        query(run.root, f"SELECT 1; COPY (SELECT 1) TO '{tmp_path}/x.csv'")
    assert list(tmp_path.iterdir()) == []
    for sql in ("WITH b AS (SELECT bucket FROM samples) SELECT count(*) FROM b", "DESCRIBE samples",
                "SUMMARIZE epochs", "SHOW TABLES", "FROM history LIMIT 2", "VALUES (1)"):
        assert query(run.root, sql).height > 0, sql


def test_connect_is_locked_even_for_direct_statements(run, tmp_path):
    con = connect(run.root)
    for sql in (f"COPY (SELECT 1) TO '{tmp_path}/x.csv'", f"ATTACH '{tmp_path}/a.duckdb'",
                "SELECT * FROM read_csv('/etc/passwd')"):
        with pytest.raises(Exception, match="Permission Error"):
            con.sql(sql)
    with pytest.raises(Exception, match="configuration has been locked"):
        con.sql("SET enable_external_access = true")
    with pytest.raises(Exception, match="configuration has been locked"):
        con.sql("SET autoinstall_known_extensions = true")
    assert list(tmp_path.iterdir()) == []
    # the views still answer
    assert con.sql("SELECT count(*) FROM history").fetchall() == [(2000 * EPOCHS,)]


def test_query_does_not_see_the_callers_python_variables(run):
    secret_frame = pl.DataFrame({"password": ["hunter2"]})  # noqa: F841 (what a replacement scan would find)
    with pytest.raises(QueryError, match="secret_frame"):
        query(run.root, "SELECT * FROM secret_frame")


def test_unsafe_gives_full_duckdb(run, tmp_path):
    out = tmp_path / "copied.csv"
    query(run.root, f"COPY (SELECT bucket, count(*) AS n FROM samples GROUP BY bucket) TO '{out}'", unsafe=True)
    assert pl.read_csv(out)["n"].sum() == 2000
    assert main(["sql", str(run.root), f"COPY (SELECT 1 AS one) TO '{tmp_path}/cli.csv'", "--unsafe"]) == 0
    assert (tmp_path / "cli.csv").is_file()


def test_cli_refuses_writes_without_unsafe(run, tmp_path, capsys):
    assert main(["sql", str(run.root), f"COPY (SELECT 1) TO '{tmp_path}/x.csv'"]) == 2
    assert "only read-only queries" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_history_files_are_read_by_exact_name_not_as_a_glob(tmp_path):
    """A run directory named with glob characters sees its own history only."""
    make_run(tmp_path / "run1", n=300, epochs=2)
    make_run(tmp_path / "run2", n=300, epochs=2)
    starred = make_run(tmp_path / "run*", n=300, epochs=3)
    assert query(starred.root, "SELECT count(*) AS n FROM history")["n"][0] == 300 * 3
    assert query(starred.root, "SELECT count(DISTINCT epoch) AS e FROM history")["e"][0] == 3


def test_limit_and_timeout(run):
    assert query(run.root, "SELECT * FROM history", limit=7).height == 7
    with pytest.raises(QueryError, match="stopped after 0.2 s"):
        query(run.root, "SELECT count(*) FROM range(10000000000) a, range(1000) b", timeout_s=0.2)
    with pytest.raises(InputError, match="limit"):
        query(run.root, "SELECT 1", limit=-1)


def test_extra_tables_are_read_by_exact_name_and_refused_when_bad(run, tmp_path, capsys):
    labels = tmp_path / "labels*.parquet"  # glob characters in the name: read as written
    pl.DataFrame({"sample_id": np.arange(2000, dtype=np.int64), "kind": ["a", "b"] * 1000}).write_parquet(labels)
    pl.DataFrame({"sample_id": [0], "kind": ["decoy"]}).write_parquet(tmp_path / "labels1.parquet")
    sql = "SELECT k.kind, count(*) AS n FROM samples s JOIN kinds k USING (sample_id) GROUP BY ALL ORDER BY ALL"
    df = query(run.root, sql, tables={"kinds": labels})
    assert df["kind"].to_list() == ["a", "b"] and df["n"].to_list() == [1000, 1000]
    assert main(["sql", str(run.root), sql, "--table", f"kinds={labels}", "--format", "csv"]) == 0
    assert pl.read_csv(capsys.readouterr().out.encode())["n"].sum() == 2000
    for tables, why in (({"samples": labels}, "not a usable table name"), ({"1x": labels}, "not a usable"),
                        ({"k": tmp_path / "missing.parquet"}, "no such file"), ({"k": tmp_path}, "table .k.: .* a directory")):
        with pytest.raises(InputError, match=why):
            query(run.root, "SELECT 1", tables=tables)
    assert main(["sql", str(run.root), "SELECT 1", "--table", "novalue"]) == 2
    assert "expected NAME=FILE" in capsys.readouterr().err


def test_a_parent_of_runs_suggests_them(tmp_path, capsys):
    make_run(tmp_path / "geko", n=100, epochs=1)
    make_run(tmp_path / "uniform", n=100, epochs=1)
    (tmp_path / "notes").mkdir()
    with pytest.raises(InputError, match=r"not a GEKO run directory .*did you mean \S+/geko or \S+/uniform\?"):
        query(tmp_path, "SELECT 1")
    with pytest.raises(SystemExit):
        main(["sql", str(tmp_path), "SELECT 1", "--no-such-flag"])
    assert "usage: geko sql" in capsys.readouterr().err  # the command's usage, not the top-level one
