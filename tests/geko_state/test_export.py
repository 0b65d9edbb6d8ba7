import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from geko_state import (
    Bucket,
    InputError,
    SuspectsConfig,
    drop_ids,
    export_rows,
    kept_ids,
    parse_buckets,
    store_suspects,
    write_ids,
)
from geko_state.cli import main
from geko_state.export import DATASET_FORMATS
from tests.geko_state.runs import NOISY, make_noisy_run, make_run

N = 2000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("exportrun"), n=N, epochs=6)


@pytest.fixture(scope="module")
def dataset() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "text": [f"sample {i}: " + "x" * int(k) for i, k in enumerate(rng.integers(0, 20, N))],
            "label": rng.integers(0, 5, N),
            "score": rng.random(N),
        }
    )


_WRITERS = {
    ".parquet": lambda df, p: df.write_parquet(p),
    ".jsonl": lambda df, p: df.write_ndjson(p),
    ".csv": lambda df, p: df.write_csv(p),
    ".arrow": lambda df, p: df.write_ipc(p),
}
_READERS = {
    ".parquet": pl.read_parquet,
    ".jsonl": pl.read_ndjson,
    ".csv": pl.read_csv,
    ".arrow": pl.read_ipc,
}


def test_kept_ids_follow_buckets_and_exclude_pruned(run):
    bucket, pruned = run.store.column("bucket"), run.store.column("pruned")
    assert pruned.sum() > 0
    ids = kept_ids(run.store)
    want = np.flatnonzero(np.isin(bucket, [Bucket.HARD, Bucket.FOCUS, Bucket.LIGHT]) & (pruned == 0))
    np.testing.assert_array_equal(ids, want)
    assert ids.dtype == np.int64
    frozen = kept_ids(run.store, "FREEZE")
    np.testing.assert_array_equal(frozen, np.flatnonzero((bucket == Bucket.FREEZE) & (pruned == 0)))
    assert len(frozen) == run.stats[-1].freeze
    assert parse_buckets("hard, Focus") == (Bucket.HARD, Bucket.FOCUS)
    assert parse_buckets([Bucket.LIGHT, "light"]) == (Bucket.LIGHT,)
    for bad in ("HARD,EASY", "", []):
        with pytest.raises(InputError, match="keep"):
            kept_ids(run.store, bad)


def test_write_ids_txt_and_parquet(run, tmp_path):
    ids = kept_ids(run.store)
    write_ids(ids, tmp_path / "ids.txt")
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "ids.txt", dtype=np.int64), ids)
    write_ids(ids, tmp_path / "ids.parquet")
    np.testing.assert_array_equal(pq.read_table(tmp_path / "ids.parquet")["sample_id"].to_numpy(), ids)
    with pytest.raises(InputError, match=r"\.parquet.*\.txt"):
        write_ids(ids, tmp_path / "ids.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.parquet", "ids.txt"]


@pytest.mark.parametrize("suffix", list(_WRITERS))
def test_export_rows_round_trips_every_format(run, dataset, tmp_path, suffix):
    src = tmp_path / f"data{suffix}"
    _WRITERS[suffix](dataset, src)
    out = tmp_path / f"kept{suffix}"
    keep = "HARD,FOCUS,LIGHT"
    assert export_rows(run.root, src, out, keep=keep) == len(kept_ids(run.store, keep))
    got = _READERS[suffix](out)
    want = dataset[kept_ids(run.store, keep).tolist()]
    assert got.equals(want), (got, want)


def test_export_rows_converts_formats_and_accepts_a_store(run, dataset, tmp_path):
    src = tmp_path / "data.jsonl"
    dataset.write_ndjson(src)
    out = tmp_path / "hard.parquet"
    assert export_rows(run.store, src, out, keep=[Bucket.HARD]) == run.stats[-1].hard
    assert pl.read_parquet(out).equals(dataset[kept_ids(run.store, "HARD").tolist()])


def test_export_refuses_a_dataset_of_another_size(run, dataset, tmp_path):
    src = tmp_path / "short.parquet"
    dataset.head(N - 1).write_parquet(src)
    with pytest.raises(InputError, match=rf"short\.parquet: has {N - 1} rows but the state has {N} samples"):
        export_rows(run.root, src, tmp_path / "out.parquet")
    with pytest.raises(InputError, match=r"dataset .*data\.txt: unsupported format '\.txt'"):
        export_rows(run.root, tmp_path / "data.txt", tmp_path / "out.parquet")
    with pytest.raises(InputError, match="must not be the dataset"):
        export_rows(run.root, src, src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.parquet"]  # nothing written
    assert {".parquet", ".jsonl", ".csv", ".arrow"} <= set(DATASET_FORMATS)


def test_cli_export(run, dataset, tmp_path, capsys):
    src = tmp_path / "data.csv"
    dataset.write_csv(src)
    args = ["export", str(run.root), "--keep", "HARD,FOCUS", "--ids-out", str(tmp_path / "ids.txt"),
            "--dataset", str(src), "--output", str(tmp_path / "kept.jsonl")]
    assert main(args) == 0
    ids = kept_ids(run.store, "HARD,FOCUS")
    assert f"kept {len(ids):,} of {N:,} samples" in capsys.readouterr().out
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "ids.txt", dtype=np.int64, ndmin=1), ids)
    assert pl.read_ndjson(tmp_path / "kept.jsonl").equals(dataset[ids.tolist()])
    short = tmp_path / "short.csv"
    dataset.head(10).write_csv(short)
    assert main(["export", str(run.root), "--dataset", str(short), "--output", str(tmp_path / "o.csv")]) == 2
    cap = capsys.readouterr()
    assert "has 10 rows but the state has 2000 samples" in cap.err and cap.out == ""
    assert main(["export", str(run.root)]) == 2
    assert "nothing to export" in capsys.readouterr().err


def test_drop_ids_clears_the_ids_in_a_copy():
    mask = np.array([True, True, False, True])
    out = drop_ids(mask, np.array([1, 2]))
    assert out.tolist() == [True, False, False, True] and mask.tolist() == [True, True, False, True]
    assert drop_ids(mask, np.array([], np.int64)).tolist() == mask.tolist()
    with pytest.raises(InputError, match=r"ids must be in \[0, 4\)"):
        drop_ids(mask, [4])


def test_dropping_suspects_composes_with_the_buckets_and_pruning(run):
    drop = SuspectsConfig(score="loss", top=100)
    suspects = store_suspects(run.store, drop)["sample_id"].to_numpy()
    assert suspects.size == 100
    for keep in ("HARD,FOCUS,LIGHT", "FREEZE"):
        want = np.setdiff1d(kept_ids(run.store, keep), suspects)
        got = kept_ids(run.store, keep, drop_suspects=drop)
        np.testing.assert_array_equal(got, want)
    assert np.isin(suspects, kept_ids(run.store, "HARD,FOCUS,LIGHT")).any()  # the drop removed some


def test_cli_export_drop_suspects_writes_the_cleaned_dataset(tmp_path, capsys):
    store = make_noisy_run(tmp_path / "noisy")
    data = pl.DataFrame({"text": [f"row {i}" for i in range(20)], "label": [i % 3 for i in range(20)]})
    data.write_parquet(tmp_path / "data.parquet")
    out = tmp_path / "clean.jsonl"
    args = ["export", str(tmp_path / "noisy"), "--keep", "LIGHT,FOCUS", "--drop-suspects",
            "--dataset", str(tmp_path / "data.parquet"), "--output", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "kept 16 of 20 samples (LIGHT,FOCUS; pruned excluded; dropped 4 of 4 suspects: geko: wrong at the last observation, loss not going down)" in text
    assert pl.read_ndjson(out).equals(data[NOISY:])  # the flipped labels 0..NOISY-1 are gone
    assert main([*args, "--top", "2", "--ids-out", str(tmp_path / "ids.txt")]) == 0
    top2 = store_suspects(store, SuspectsConfig(top=2))["sample_id"].to_pylist()
    want = [i for i in range(20) if i not in top2]
    assert pl.read_ndjson(out)["text"].to_list() == [f"row {i}" for i in want]
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "ids.txt", dtype=np.int64), want)
    capsys.readouterr()
    # FOCUS alone holds only the suspects: nothing is left, and the count says so
    assert main(["export", str(tmp_path / "noisy"), "--keep", "FOCUS", "--drop-suspects", "--ids-out",
                 str(tmp_path / "none.txt")]) == 0
    assert "kept 0 of 20 samples" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "noisy"), "--top", "2", "--ids-out", str(tmp_path / "x.txt")]) == 2
    assert "--top: choose suspects to drop; add --drop-suspects" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "noisy"), "--drop-suspects", "--score", "loss",
                 "--ids-out", str(tmp_path / "x.txt")]) == 2
    assert "no natural threshold" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
