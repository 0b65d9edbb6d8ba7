"""Dataset columns for the field pickers."""
from __future__ import annotations

import polars as pl
import pytest

from geko_state.errors import InputError
from geko_torch.app.datafile import data_columns, guess_fields


def test_columns_of_each_format(tmp_path):
    df = pl.DataFrame({"prompt": ["a", "b"], "response": ["c", "d"], "n": [1, 2]})
    df.write_ndjson(tmp_path / "d.jsonl")
    df.write_csv(tmp_path / "d.csv")
    df.write_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        assert data_columns(tmp_path / name) == ["prompt", "response", "n"]


def test_bad_files_are_refused_with_the_reason(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        data_columns(tmp_path / "missing.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported format '.txt'"):
        data_columns(tmp_path / "d.txt")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="cannot read it as Parquet"):
        data_columns(tmp_path / "bad.parquet")


def test_field_guesses():
    none = {"prompt_field": None, "response_field": None, "text_field": None, "label_field": None,
            "messages_field": None}
    assert guess_fields(["Instruction", "output", "x"]) == {**none, "prompt_field": "Instruction",
                                                           "response_field": "output"}
    assert guess_fields(["text", "label"]) == {**none, "text_field": "text", "label_field": "label"}
    assert guess_fields(["label", "a"]) == none
    assert guess_fields(["prompt", "text"])["text_field"] == "text"  # no response column: whole-text training
    assert guess_fields(["messages", "prompt", "completion"]) == {**none, "messages_field": "messages"}
