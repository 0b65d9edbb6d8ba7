"""``geko suspects`` and what it prints: the suspects of a real run dir, their data rows, the Parquet file."""
import polars as pl
import pyarrow.parquet as pq
import pytest

from geko_state import GEKOConfig, StateStore, SuspectsConfig, read_suspects, store_suspects
from geko_state.cli import main
from geko_state.noise import SUSPECT_COLUMNS
from geko_state.suspects import row_text
from tests.geko_state.runs import NOISY, make_noisy_run

N = 20


@pytest.fixture()
def noisy(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    store = make_noisy_run(run, n=N)
    data = tmp_path / "data.jsonl"
    pl.DataFrame({"text": [f"review {i}\nsecond line" for i in range(N)],
                  "label": [i % 3 for i in range(N)]}).write_ndjson(data)
    return run, store, data


def _rows(out: str) -> list[list[str]]:
    """The cells of a printed table's body rows."""
    return [[c.strip() for c in line.strip("│").split("┆")] for line in out.splitlines() if line.startswith("│")]


def test_geko_suspects_prints_the_table_with_data_rows_and_writes_parquet(noisy, capsys):
    run, store, data = noisy
    assert main(["suspects", str(run), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 suspects (geko: wrong at the last observation, loss not going down) among 20 ranked of 20 samples\n")
    written = pq.read_table(run / "suspects.parquet")
    assert written.column_names == list(SUSPECT_COLUMNS)
    assert written.equals(store_suspects(store))
    assert sorted(written["sample_id"].to_pylist()) == list(range(NOISY))
    header, *body = _rows(out)
    assert header == ["rank", "sample_id", "score", "aum", "wrong_streak", "times_seen", "bucket", "text"]
    for cells, rank, sid, score, aum in zip(body, written["rank"].to_pylist(), written["sample_id"].to_pylist(),
                                            written["score"].to_pylist(), written["aum"].to_pylist()):
        assert cells[:4] == [str(rank), str(sid), f"{score:.4f}", f"{aum:+.3f}"]
        assert cells[4:7] == ["3", "3", "FOCUS"]
        # the sample's own row, on one line
        assert cells[7] == f"text: review {sid} second line | label: {sid % 3}"
    assert len(body) == NOISY and out.rstrip().endswith(f"all in {run / 'suspects.parquet'}")


def test_top_threshold_and_score_choose_the_same_samples_as_the_engine(noisy, tmp_path, capsys):
    run, store, data = noisy
    out = tmp_path / "mine.parquet"
    assert main(["suspects", str(run / "state.arrow"), "--score", "aum", "--threshold", "3.3", "--top", "2",
                 "--out", str(out), "--show", "1"]) == 0
    text = capsys.readouterr().out
    want = store_suspects(store, SuspectsConfig(score="aum", top=2, threshold=3.3))
    assert pq.read_table(out).equals(want)
    assert want.num_rows == 2 and all(s > 3.3 for s in want["score"].to_pylist())
    assert text.startswith("2 suspects (top 2 by aum score above 3.3) among 20 ranked")
    assert len(_rows(text)) == 2  # header + the one row asked for
    assert f"... and 1 more; all in {out}" in text
    assert main(["suspects", str(run), "--score", "loss", "--top", "5"]) == 0
    assert pq.read_table(run / "suspects.parquet")["sample_id"].to_pylist()[:NOISY] == list(range(NOISY))
    capsys.readouterr()
    assert main(["suspects", str(run), "--threshold", "99", "--data", str(data)]) == 0
    assert capsys.readouterr().out == (f"0 suspects (geko score above 99) among 20 ranked of 20 samples\n"
                                       f"all in {run / 'suspects.parquet'}\n")
    assert pq.read_table(run / "suspects.parquet").num_rows == 0


def test_errors_name_the_problem_and_write_nothing(noisy, tmp_path, capsys):
    run, _, data = noisy
    assert main(["suspects", str(tmp_path / "nowhere")]) == 2
    assert "no such state file" in capsys.readouterr().err
    assert main(["suspects", str(run), "--score", "loss"]) == 2
    assert "the 'loss' score has no natural threshold" in capsys.readouterr().err
    assert main(["suspects", str(run), "--out", str(tmp_path / "s.csv")]) == 2
    assert "--out" in capsys.readouterr().err
    short = tmp_path / "short.jsonl"
    pl.read_ndjson(data).head(5).write_ndjson(short)
    assert main(["suspects", str(run), "--data", str(short)]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "has 5 rows but the state has 20 samples" in err
    assert not (run / "suspects.parquet").exists() and not (tmp_path / "s.csv").exists()


def test_a_run_without_margins_says_why_nothing_is_ranked(tmp_path, capsys):
    store = StateStore.create(5, tmp_path / "state.arrow", GEKOConfig())
    store.observe([0, 1], [1.0, 2.0], [0.5, 0.5], [False, False])  # no margins given
    store.flush()
    found = read_suspects(store, SuspectsConfig(score="aum"))
    assert found.table.num_rows == 0 and found.ranked == 0
    assert "none can be ranked yet" in found.summary()
    assert main(["suspects", str(tmp_path), "--score", "loss", "--top", "3"]) == 0
    assert capsys.readouterr().out.startswith("2 suspects (top 3 by loss score) among 2 ranked of 5 samples")


def test_row_text_is_one_line_cut_to_width():
    assert row_text({"text": "a\n  b"}) == "a b"
    assert row_text({"messages": [{"role": "user", "content": "hi"}], "n": None}) == \
        'messages: [{"role": "user", "content": "hi"}] | n: null'
    cut = row_text({"text": "x" * 100}, width=10)
    assert cut == "x" * 9 + "…" and len(cut) == 10
