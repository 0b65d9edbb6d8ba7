"""A page opened during a launch follows that run with its form filled in (reattach.py)."""
from __future__ import annotations

import subprocess
import sys

from geko_state.config import PRESETS
from geko_torch.app.command import TrainForm, form_options, write_launch
from geko_torch.app.fields import config_fields, config_values, training_fields
from geko_torch.app.process import Launch, Launcher
from geko_torch.app.reattach import control_values, current_launch
from geko_torch.app.workspace import Workspace

TRAINING = {s.name: s.default for s in training_fields()}


def _keys() -> list[tuple[str, str]]:
    return ([("option", o.dest) for o in form_options()] + [("config", s.name) for s in config_fields()]
            + [("training", s.name) for s in training_fields()])


def _form(out) -> TrainForm:
    config = {**config_values(PRESETS["conservative"]), "freeze_confidence": 0.9}
    return TrainForm.from_values("m", "d.jsonl", {"prompt_field": "prompt", "response_field": "response",
                                                  "output_dir": str(out), "epochs": 7, "preset": "conservative",
                                                  "eval_file": "e.jsonl", "max_steps": None},
                                 config, {**TRAINING, "logging_steps": 3})


def test_control_values_give_back_the_form_they_came_from(tmp_path):
    form = _form(tmp_path / "run")
    keys = _keys()
    values = dict(zip(keys, control_values(form, keys)))
    assert values[("option", "epochs")] == 7 and values[("option", "preset")] == "conservative"
    assert values[("option", "max_steps")] == ""  # an empty text box, not "None"
    assert values[("config", "freeze_confidence")] == 0.9 and values[("training", "logging_steps")] == 3
    groups = {"option": {}, "config": {}, "training": {}}
    for (section, name), v in values.items():
        groups[section][name] = v
    again = TrainForm.from_values(form.model_dir, form.data_file, groups["option"], groups["config"],
                                  groups["training"])
    assert again == form


def test_current_launch_is_the_launchers_own(tmp_path):
    launcher = Launcher(workspace=Workspace(tmp_path))
    assert current_launch(launcher) is None
    run = tmp_path / "run"
    write_launch(run, _form(run))
    popen = subprocess.Popen([sys.executable, "-c", "pass"])
    popen.wait()
    launcher.current = Launch(run, popen, [], "geko train m d.jsonl", None)
    found = current_launch(launcher)
    assert found is not None and found.run_dir == run and found.form == _form(run)
    assert str(run) in found.message and "geko train m d.jsonl" in found.message
    (run / "geko_app.json").write_text("{not json")
    assert current_launch(launcher).form is None  # the dashboard still follows the run
