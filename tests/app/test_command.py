"""Form values -> the geko train command line, the launch file, the worker's command."""
from __future__ import annotations

import argparse
import json
import sys

import pytest

from geko_state.cli import COMMANDS
from geko_state.config import PRESETS
from geko_state.errors import InputError
from geko_torch import cli as torch_cli  # noqa: F401  (registers train)
from geko_torch.app.command import (
    LAUNCH_FILE,
    NOT_IN_FORM,
    TrainForm,
    differs_from_command,
    form_options,
    read_launch,
    shell_command,
    train_argv,
    worker_command,
    write_launch,
)
from geko_torch.app.fields import config_values, training_fields

TRAINING = {s.name: s.default for s in training_fields()}


def _form(tmp_path, **options):
    config = config_values(PRESETS[options.get("preset", "default")])
    return TrainForm.from_values("models/tiny", "data.jsonl", {"prompt_field": "prompt", "response_field": "response",
                                                               "output_dir": str(tmp_path / "run"), **options},
                                 config, TRAINING)


def test_every_geko_train_option_is_in_the_form_or_set_by_the_app():
    p = argparse.ArgumentParser()
    COMMANDS["train"][0](p)
    dests = {a.dest for a in p._actions}
    in_form = {o.dest for o in form_options()}
    assert dests == in_form | set(NOT_IN_FORM), "a geko train option is neither a form field nor in NOT_IN_FORM"
    assert not in_form & set(NOT_IN_FORM)


def test_option_kinds_defaults_and_groups_come_from_the_parser():
    o = {s.dest: s for s in form_options()}
    assert (o["epochs"].kind, o["epochs"].default, o["epochs"].flag) == ("int", 3, "--epochs")
    assert o["lr"].kind == "float" and o["precision"].kind == "choice"
    assert o["precision"].choices == ("fp32", "bf16", "fp16")
    assert o["prompt_field"].kind == "column" and o["eval_file"].kind == "path" and o["output_dir"].kind == "path"
    assert o["lora"].kind == "bool" and o["lora_r"].kind == "optional_int"
    assert o["lora_dropout"].kind == "optional_float"
    assert o["lora_alpha"].kind == "optional_float" and o["lora_targets"].kind == "text" and o["budget"].kind == "text"
    assert o["max_steps"].kind == "optional_int" and o["preset"].choices == tuple(sorted(PRESETS))
    assert o["batch_size"].group == "training" and o["lora"].group.startswith("LoRA")
    assert "default 3" in o["epochs"].help


def test_the_command_line_has_what_differs_from_the_defaults(tmp_path):
    form = _form(tmp_path, epochs=12.0, lr="0.003", gradient_checkpointing=True, lora=True, lora_r="4",
                 lora_targets="c_attn", budget="full", max_steps="", preset="conservative")
    assert train_argv(form) == [
        "models/tiny", "data.jsonl", "--prompt-field", "prompt", "--response-field", "response", "--epochs", "12",
        "--lr", "0.003", "--gradient-checkpointing", "--preset", "conservative", "--budget", "full", "--lora",
        "--lora-r", "4", "--lora-targets", "c_attn", "--output-dir", str(tmp_path / "run"), "--no-progress",
    ]
    ckpt = tmp_path / "run" / "checkpoint-8"
    assert train_argv(form, ckpt)[-2:] == ["--resume", str(ckpt)]
    args = form.check()
    assert args.epochs == 12 and args.lora_r == 4 and args.precision == "fp32"
    assert shell_command(form).startswith("geko train models/tiny data.jsonl --prompt-field prompt")


def test_prune_after_comes_from_the_config(tmp_path):
    config = {**config_values(PRESETS["default"]), "prune_frozen_after": 2}
    form = TrainForm.from_values("m", "d.csv", {"text_field": "t", "output_dir": str(tmp_path)}, config, TRAINING)
    i = train_argv(form).index("--prune-after")
    assert train_argv(form)[i + 1] == "2"
    assert differs_from_command(form) == ["logging_steps=10"]  # geko train applies prune_frozen_after too


def test_settings_beyond_the_command_line_are_listed(tmp_path):
    config = {**config_values(PRESETS["balanced"]), "freeze_confidence": 0.7}
    form = TrainForm.from_values("m", "d.csv", {"text_field": "t", "preset": "balanced"}, config,
                                 {**TRAINING, "logging_steps": 100, "weight_decay": 0.1})
    assert differs_from_command(form) == ["freeze_confidence=0.7", "weight_decay=0.1"]


@pytest.mark.parametrize(("options", "message"), [
    ({"epochs": 0}, "argument --epochs: expected an integer >= 1, got 0"),
    ({"epochs": 2.5}, "--epochs: expected a whole number"),
    ({"epochs": None}, "--epochs: a value is needed"),
    ({"lr": "fast"}, "--lr: expected a number"),
    ({"lora_dropout": "1.5"}, "argument --lora-dropout: expected a number in"),
    ({"precision": "fp8"}, "--precision: expected one of"),
    ({"bogus": 1}, "unknown geko train options"),
])
def test_bad_form_values_name_the_option(tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        _form(tmp_path, **options)


def test_model_and_data_are_required(tmp_path):
    with pytest.raises(InputError, match="Model directory"):
        TrainForm.from_values(" ", "d.jsonl", {}, config_values(PRESETS["default"]), TRAINING)
    with pytest.raises(InputError, match="Dataset file"):
        TrainForm.from_values("m", None, {}, config_values(PRESETS["default"]), TRAINING)


def test_the_launch_file_round_trips(tmp_path):
    form = _form(tmp_path, epochs=5, preset="aggressive")
    path = write_launch(tmp_path / "run", form)
    assert path.name == LAUNCH_FILE
    data = json.loads(path.read_text())
    assert data["argv"] == train_argv(form) and data["config"] == PRESETS["aggressive"].to_dict()
    assert read_launch(tmp_path / "run") == form
    assert read_launch(tmp_path / "nothing") is None
    path.write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        read_launch(tmp_path / "run")
    path.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(InputError, match="version 99"):
        read_launch(tmp_path / "run")


def test_the_worker_command(tmp_path):
    cmd = worker_command(tmp_path / LAUNCH_FILE, ["m", "d.jsonl", "--text-field", "t"])
    assert cmd == [sys.executable, "-m", "geko_torch.app.worker", "--settings", str(tmp_path / LAUNCH_FILE), "--",
                   "m", "d.jsonl", "--text-field", "t"]
