"""The training process: geko train with the app's settings, stopped safely by SIGINT."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from geko_state.config import PRESETS, GEKOConfig
from geko_state.errors import ConfigError, InputError
from geko_torch.app import worker
from geko_torch.app.command import (
    TrainForm,
    app_settings,
    train_argv,
    worker_command,
    write_launch,
)
from geko_torch.app.fields import config_values, training_fields

from .tiny import make_model_dir, sft_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_stopper_asks_the_trainer_and_a_second_signal_stops_at_once():
    stopper = worker.Stopper()
    stopper._handle(signal.SIGINT, None)  # while loading: remembered
    assert stopper.requested

    class T:
        asked = 0

        def request_stop(self):
            T.asked += 1

    fresh = worker.Stopper()
    fresh.attach(T())
    fresh._handle(signal.SIGTERM, None)
    assert T.asked == 1
    with pytest.raises(KeyboardInterrupt):
        fresh._handle(signal.SIGTERM, None)


def test_run_train_applies_the_apps_settings_through_its_arguments(tmp_path):
    from geko_torch.app.command import train_parser
    from geko_torch.commands.train import run_train

    model = make_model_dir(tmp_path / "model")
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows(16))
    config = GEKOConfig(freeze_confidence=0.7, log_bucket_stats=False)
    args = train_parser().parse_args([str(model), str(data), "--text-field", "prompt", "--batch-size", "4",
                                      "--workers", "0", "--no-progress", "--output-dir", str(tmp_path / "run")])
    stopper = worker.Stopper()
    stopper.requested = True  # a stop asked for while loading: training stops at its first step
    seen = []

    def on_trainer(t):
        seen.append((t.config, t.args.logging_steps, t.args.weight_decay))
        stopper.attach(t)

    assert run_train(args, config=config, training={"logging_steps": 3, "weight_decay": 0.2},
                     on_trainer=on_trainer) == 0
    assert seen == [(config, 3, 0.2)]
    # stopped at its first step (4 steps an epoch, 3 epochs otherwise), with a checkpoint to resume from
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-1"]
    state = json.loads((tmp_path / "run" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["extra"]["finished"] is False
    assert state["extra"]["config"]["freeze_confidence"] == 0.7 and state["extra"]["args"]["weight_decay"] == 0.2


def test_read_settings(tmp_path):
    form = TrainForm.from_values("m", "d.jsonl", {"text_field": "t"}, config_values(PRESETS["aggressive"]),
                                 {s.name: s.default for s in training_fields()})
    path = write_launch(tmp_path, form)
    config, training = worker.read_settings(path)
    assert config == PRESETS["aggressive"] and training == app_settings(form)["training"]
    path.write_text(json.dumps({"config": None, "training": {"logging_steps": 0}}))
    with pytest.raises(ConfigError, match="logging_steps"):
        worker.read_settings(path)
    with pytest.raises(InputError, match="unreadable"):
        worker.read_settings(tmp_path / "missing.json")


def test_worker_usage_error(capsys):
    assert worker.main(["--settings", "x.json"]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.slow
def test_sigint_stops_at_a_step_with_a_checkpoint_that_resumes(tmp_path):
    model = make_model_dir(tmp_path / "model")
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows(96))
    run = tmp_path / "run"
    config = {**config_values(PRESETS["default"]), "freeze_confidence": 0.7}
    form = TrainForm.from_values(str(model), str(data), {
        "prompt_field": "prompt", "response_field": "response", "epochs": 40, "batch_size": 4, "lr": 0.003,
        "warmup_steps": 1, "workers": 0, "max_length": 24, "budget": "full", "output_dir": str(run)},
        config, {**{s.name: s.default for s in training_fields()}, "logging_steps": 1})
    launch = write_launch(run, form)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(worker_command(launch, train_argv(form)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    log = run / "trainer_log.jsonl"
    end = time.monotonic() + 600
    while not (log.is_file() and log.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.monotonic() < end, proc.stdout.read() if proc.poll() is not None else "slow"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "stop requested" in out and "stopped on request at step" in out
    ckpts = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(ckpts) == 1
    state = json.loads((ckpts[0] / "trainer_state.json").read_text())
    assert state["extra"]["finished"] is False and state["epoch"] < 40
    assert state["extra"]["config"]["freeze_confidence"] == 0.7  # the app's GEKOConfig, not the preset's
    assert state["extra"]["args"]["logging_steps"] == 1
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if "learning_rate" in line]
    assert steps == list(range(1, len(steps) + 1))  # a line every step
    stop = int(ckpts[0].name.split("-")[1])

    # resume (here only 3 more steps: --max-steps is allowed on resume) through the same worker
    resumed = subprocess.run(worker_command(launch, train_argv(form, ckpts[0]) + ["--max-steps", str(stop + 3)]),
                             capture_output=True, text=True, env=env, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (run / f"checkpoint-{stop + 3}" / "trainer_state.json").is_file()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if "learning_rate" in line]
    assert steps == list(range(1, stop + 4))  # continued where it stopped, nothing repeated
