"""Start / Resume refusals that need no training process."""
from __future__ import annotations

import shutil

import pytest

from geko_state.config import PRESETS
from geko_state.errors import InputError
from geko_torch.app.command import TrainForm
from geko_torch.app.fields import config_values, training_fields
from geko_torch.app.process import Launcher, earlier_run_files, resume_checkpoint


def _form(out):
    return TrainForm.from_values("m", "d.jsonl", {"text_field": "t", "output_dir": str(out)},
                                 config_values(PRESETS["default"]), {s.name: s.default for s in training_fields()})


def test_a_new_run_does_not_silently_replace_an_earlier_one(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert set(earlier_run_files(run)) >= {"state.arrow", "epochs.parquet", "trainer_log.jsonl"}
    launcher = Launcher()
    with pytest.raises(InputError, match="holds an earlier run .*press Resume"):
        launcher.start(_form(run))
    assert launcher.current is None and (run / "epochs.parquet").is_file()  # nothing touched
    assert earlier_run_files(tmp_path / "new") == []


def test_resume_needs_an_unfinished_checkpoint(tmp_path, finished_run, stopped_run):
    with pytest.raises(InputError, match="no complete checkpoint"):
        resume_checkpoint(tmp_path)
    with pytest.raises(InputError, match="this run is complete"):
        resume_checkpoint(finished_run)
    assert resume_checkpoint(stopped_run).name == "checkpoint-8"


def test_stop_without_a_run():
    assert Launcher().stop() == "No training is running."
