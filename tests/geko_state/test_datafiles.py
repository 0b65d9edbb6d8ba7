"""The one table of dataset file formats: every suffix reads, streams and lists columns alike."""
from __future__ import annotations

import polars as pl
import pytest

from geko_state.datafiles import DATA_FORMATS, data_columns, data_format, read_table
from geko_state.errors import InputError

DF = pl.DataFrame({"text": ["a", "b", "c"], "n": [1, 2, 3]})


@pytest.mark.parametrize("suffix", sorted(DATA_FORMATS))
def test_every_suffix_round_trips_in_row_order(tmp_path, suffix):
    fmt = data_format(f"d{suffix}")
    path = tmp_path / f"d{suffix}"
    fmt.sink(DF.lazy(), path)
    assert read_table(path).equals(DF)
    assert fmt.scan(path).collect().equals(DF)
    assert data_columns(path) == ["text", "n"]


def test_unsupported_suffix_names_the_argument_and_the_formats(tmp_path):
    with pytest.raises(InputError, match=r"--eval-file .*d\.txt: unsupported format '\.txt'; supported: \.jsonl"):
        data_format(tmp_path / "d.txt", "--eval-file")
    with pytest.raises(InputError, match=r"unsupported format '\(no suffix\)'"):
        read_table(tmp_path / "d")
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "missing.arrow")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv", ".arrow"])
def test_files_are_read_by_their_exact_name_not_as_a_glob(tmp_path, suffix):
    from geko_state.datafiles import data_format

    fmt = data_format(tmp_path / f"x{suffix}")
    starred, decoy = tmp_path / f"data*{suffix}", tmp_path / f"data1{suffix}"
    fmt.sink(pl.DataFrame({"a": [1, 2]}).lazy(), starred)
    fmt.sink(pl.DataFrame({"a": [9]}).lazy(), decoy)
    assert fmt.read(starred)["a"].to_list() == [1, 2]
    assert fmt.scan(starred).collect()["a"].to_list() == [1, 2]
    assert fmt.columns(starred, 10) == ["a"]


def test_arrow_stream_files_as_datasets_writes_them(tmp_path):
    import pyarrow as pa

    from geko_state.datafiles import data_format

    path = tmp_path / "data-00000-of-00001.arrow"
    table = pa.table({"text": ["a", "b", "c"]})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    fmt = data_format(path)
    assert fmt.read(path)["text"].to_list() == ["a", "b", "c"]
    assert fmt.scan(path).collect().height == 3 and fmt.columns(path, 10) == ["text"]


def test_a_datasets_save_to_disk_directory_is_read_in_row_order(tmp_path):
    import datasets

    from geko_state.datafiles import SAVED_DATASET, check_data_path

    rows = {"text": [f"t{i}" for i in range(50)], "label": [i % 3 for i in range(50)]}
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(rows).save_to_disk(str(saved), num_shards=3)  # several Arrow files
    assert len(list(saved.glob("*.arrow"))) > 1
    assert check_data_path(saved) == saved and data_format(saved) is SAVED_DATASET
    table = read_table(saved)
    assert table["text"].to_list() == rows["text"] and table["label"].to_list() == rows["label"]
    assert data_columns(saved) == ["text", "label"]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"a saved DatasetDict; give one split's directory, e.g. \S+/train"):
        read_table(tmp_path / "dd")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="a directory; expected a dataset file .* or a directory written by"):
        read_table(tmp_path / "plain")
