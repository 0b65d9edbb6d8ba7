"""Start / Resume refusals that need no training process."""
from __future__ import annotations

import shutil

import pytest

from geko_state.config import PRESETS
from geko_state.errors import InputError
from geko_torch.app.command import TrainForm
from geko_torch.app.fields import config_values, training_fields
from geko_torch.app.process import Launcher, earlier_run_files, resume_checkpoint
from geko_torch.app.workspace import Workspace


def _form(out, model="m", data="d.jsonl"):
    return TrainForm.from_values(model, data, {"text_field": "t", "output_dir": str(out)},
                                 config_values(PRESETS["default"]), {s.name: s.default for s in training_fields()})


def _workspace(tmp_path) -> Workspace:
    """A model directory ``m`` (config.json is what the launch checks) and a data file ``d.jsonl``."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "d.jsonl").write_text('{"t": "x"}\n')
    return Workspace(tmp_path)


def test_a_new_run_does_not_silently_replace_an_earlier_one(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert set(earlier_run_files(run)) >= {"state.arrow", "epochs.parquet", "trainer_log.jsonl"}
    launcher = Launcher(workspace=_workspace(tmp_path))
    with pytest.raises(InputError, match="holds an earlier run .*press Resume"):
        launcher.start(_form(run))
    assert launcher.current is None and (run / "epochs.parquet").is_file()  # nothing touched
    assert earlier_run_files(tmp_path / "new") == []


def test_every_path_of_a_launch_must_be_inside_the_workspace(tmp_path, finished_run):
    ws = tmp_path / "ws"
    ws.mkdir()
    launcher = Launcher(workspace=_workspace(ws))
    outside = tmp_path / "outside"
    shutil.copytree(finished_run, outside)
    before = sorted(p.name for p in outside.iterdir())
    for form, field in ((_form(outside), "Output directory"), (_form("run", model=str(tmp_path)), "Model directory"),
                        (_form("run", data="../d.jsonl"), "Dataset file")):
        with pytest.raises(InputError, match=f"{field} .*outside the app's workspace"):
            launcher.start(form, replace=True)
    assert launcher.current is None and sorted(p.name for p in outside.iterdir()) == before
    assert not (ws / "run").exists()  # no directory created


def test_the_launch_is_checked_before_an_earlier_run_is_cleared(tmp_path, finished_run):
    launcher = Launcher(workspace=_workspace(tmp_path))
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(InputError, match="MODEL .*no such directory"):
        launcher.start(_form(run, model="missing"), replace=True)
    with pytest.raises(InputError, match="DATA_FILE"):
        launcher.start(_form(run, data="missing.jsonl"), replace=True)
    assert sorted(p.name for p in run.iterdir()) == before


def test_the_train_parser_never_exits():
    form = _form("run")
    bad = TrainForm(model_dir="-h", data_file=form.data_file, options=form.options, config=form.config,
                    training=form.training)
    with pytest.raises(InputError, match="geko train"):
        bad.check()


def test_resume_needs_an_unfinished_checkpoint(tmp_path, finished_run, stopped_run):
    with pytest.raises(InputError, match="no complete checkpoint"):
        resume_checkpoint(tmp_path)
    with pytest.raises(InputError, match="this run is complete"):
        resume_checkpoint(finished_run)
    assert resume_checkpoint(stopped_run).name == "checkpoint-8"


def test_stop_without_a_run():
    assert Launcher().stop() == "No training is running."
