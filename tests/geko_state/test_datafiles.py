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
