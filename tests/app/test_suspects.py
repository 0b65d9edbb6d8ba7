"""The Suspects panel: a run's probably mislabeled samples, with data rows only from inside the workspace."""
from __future__ import annotations

import polars as pl
import pytest

from geko_state import SuspectsConfig, store_suspects
from geko_state.config import PRESETS
from geko_torch.app.command import TrainForm, write_launch
from geko_torch.app.fields import config_values, training_fields
from geko_torch.app.suspects import panel_config, run_data_file, suspects_panel
from geko_torch.app.workspace import Workspace
from tests.geko_state.runs import NOISY, make_noisy_run

N = 20


def _data(path, marker="review"):
    pl.DataFrame({"text": [f"{marker} {i}" for i in range(N)], "label": [i % 3 for i in range(N)],
                  "source": ["crawl"] * N}).write_ndjson(path)
    return path


def _launch(run, data_file):
    form = TrainForm.from_values("model", str(data_file), {"text_field": "text", "label_field": "label"},
                                 config_values(PRESETS["default"]), {s.name: s.default for s in training_fields()})
    write_launch(run, form)


@pytest.fixture()
def world(tmp_path):
    ws = tmp_path / "ws"
    run = ws / "runs" / "noisy"
    run.mkdir(parents=True)
    store = make_noisy_run(run, n=N)
    return ws, run, store


def test_the_panel_shows_the_suspects_with_the_training_columns_of_their_rows(world):
    ws, run, store = world
    _launch(run, _data(ws / "data.jsonl"))
    frame, note = suspects_panel(str(run), "geko", Workspace(ws))
    want = store_suspects(store)
    assert note == "4 suspects (geko: wrong at the last observation, loss not going down) among 20 ranked of 20 samples"
    assert frame["sample_id"].to_list() == [str(i) for i in want["sample_id"].to_pylist()]
    assert sorted(int(i) for i in frame["sample_id"]) == list(range(NOISY))
    # the form's text and label fields, not the file's other column
    assert frame["text"].to_list() == [f"text: review {i} | label: {i % 3}" for i in want["sample_id"].to_pylist()]
    frame, note = suspects_panel(str(run), "loss", Workspace(ws), rows=2)
    assert frame.height == 2 and note.startswith("2 suspects (top 2 by loss score)")
    frame, note = suspects_panel(str(run), "aum", Workspace(ws), rows=2)
    assert frame.height == 2 and "4 suspects (aum: score above 0 (the label lost on average))" in note and "(first 2 shown)" in note


def test_a_data_file_outside_the_workspace_is_never_read(world, tmp_path):
    ws, run, _ = world
    secret = _data(tmp_path / "secret.jsonl", marker="SECRET")
    _launch(run, secret)
    frame, note = suspects_panel(str(run), "geko", Workspace(ws))
    assert "text" not in frame.columns and frame.height == NOISY
    assert "outside the app's workspace" in note and "SECRET" not in note
    (ws / "link.jsonl").symlink_to(secret)  # a link inside pointing outside is outside
    _launch(run, ws / "link.jsonl")
    assert run_data_file(run, Workspace(ws))[0] is None
    # a read-only app without a workspace reads no data file at all
    _launch(run, _data(ws / "data.jsonl"))
    frame, note = suspects_panel(str(run), "geko", None)
    assert "text" not in frame.columns and "no workspace" in note


def test_without_a_launch_file_or_with_the_wrong_dataset_the_table_comes_without_text(world):
    ws, run, _ = world
    frame, note = suspects_panel(str(run), "geko", Workspace(ws))
    assert frame.height == NOISY and "text" not in frame.columns
    assert "did not start this run" in note and "geko suspects RUN_DIR --data FILE" in note
    short = ws / "short.jsonl"
    pl.DataFrame({"text": ["a", "b"], "label": [0, 1]}).write_ndjson(short)
    _launch(run, short)
    frame, note = suspects_panel(str(run), "geko", Workspace(ws))
    assert frame.height == NOISY and "has 2 rows but the state has 20 samples" in note


def test_refusals_are_notes(world, tmp_path):
    ws, run, _ = world
    for score in ("../../etc/passwd", "nope"):
        frame, note = suspects_panel(str(run), score, Workspace(ws))
        assert frame is None and note.startswith("**No suspects:**") and "noise score must be one of" in note
    frame, note = suspects_panel(str(tmp_path / "empty"), "geko", Workspace(ws))
    assert frame is None and "no such state file" in note
    assert suspects_panel(None, "geko", Workspace(ws))[1].startswith("Open a run first")
    assert panel_config("loss") == SuspectsConfig(score="loss", top=50)
    assert panel_config("geko") == SuspectsConfig()
