"""The LR decay schedules (geko_torch.schedules): pure shapes, and in both trainers a decay over
training progress that ends at 0 at the last optimizer step whatever the policy's epoch lengths."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from geko_state import read_summary
from geko_state.errors import ConfigError
from geko_torch import GEKOSettings, GEKOTrainer, GEKOTrainingArgs
from geko_torch.data import PadCollator
from geko_torch.hf import GEKOHFTrainer
from geko_torch.schedules import DEFAULT_LR_SCHEDULE, LR_SCHEDULES, LRScheduleKind, lr_schedule_factor

from .models import SHRINKING, TinyClassifier, cls_items

LR = 5e-2
# Freezes learnable samples from the second epoch on (GEKO's epochs shrink); the mislabeled ones
# never freeze, so the last epoch still trains.
FAST = SHRINKING

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def items(n: int = 40, mislabeled: int = 6) -> list[dict]:
    out = cls_items(n, seed=3)
    for i in range(mislabeled):
        out[i]["labels"] = 1 - out[i]["labels"]
    return out


# --------------------------------------------------------------------------- the pure functions
def test_schedule_shapes():
    assert set(LR_SCHEDULES) == set(LRScheduleKind) and DEFAULT_LR_SCHEDULE is LRScheduleKind.LINEAR
    for p in (0.0, 0.25, 0.5, 0.9, 1.0):
        assert lr_schedule_factor("linear", p) == pytest.approx(1 - p)
        assert lr_schedule_factor("cosine", p) == pytest.approx(0.5 * (1 + math.cos(math.pi * p)))
        assert lr_schedule_factor("constant", p) == 1.0
    assert lr_schedule_factor("linear", 1.0) == 0.0 and lr_schedule_factor("cosine", 1.0) == 0.0
    assert lr_schedule_factor("linear", 1.5) == 0.0 and lr_schedule_factor("linear", -1) == 1.0  # clamped
    assert lr_schedule_factor("cosine", 0.5) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match=r"lr_scheduler_type must be one of \['linear', 'cosine', 'constant'\]"):
        lr_schedule_factor("step", 0.5)


def test_training_args_field():
    a = GEKOTrainingArgs()
    assert a.lr_scheduler_type is LRScheduleKind.LINEAR and a.to_dict()["lr_scheduler_type"] == "linear"
    assert GEKOTrainingArgs(lr_scheduler_type="cosine").lr_scheduler_type is LRScheduleKind.COSINE
    for bad in ("polynomial", 3, None):
        with pytest.raises(ConfigError, match="lr_scheduler_type"):
            GEKOTrainingArgs(lr_scheduler_type=bad)


# --------------------------------------------------------------------------- GEKOTrainer
def _geko(tmp_path, name: str, data=None, config=FAST, **kw) -> GEKOTrainer:
    base = {"output_dir": str(tmp_path / name), "num_epochs": 3, "batch_size": 8, "learning_rate": LR,
            "warmup_steps": 0, "logging_steps": 1, "save_steps": 10_000, "eval_steps": 10_000,
            "dataloader_num_workers": 0, "report": False, "save_at_end": False, "plots": False,
            "disable_progress_bar": True, "device": "cpu", "stop_when_mastered": False}
    t = GEKOTrainer(TinyClassifier(), items() if data is None else data, config=config,
                    args=GEKOTrainingArgs(**{**base, **kw}))
    t.train()
    return t


def _lrs(t: GEKOTrainer) -> list[float]:
    """The learning rate after every optimizer step (the step lines, logging_steps=1)."""
    return [r["learning_rate"] for r in t.log_history if "learning_rate" in r]


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_uniform_follows_the_schedule_over_progress(tmp_path, kind):
    t = _geko(tmp_path, kind, data=items(32), selection="uniform", num_epochs=2, lr_scheduler_type=kind)
    lrs = _lrs(t)
    assert len(lrs) == t.global_step == 8  # 4 full batches per epoch: progress after step s is s / 8
    assert lrs == pytest.approx([LR * lr_schedule_factor(kind, s / 8) for s in range(1, 9)], abs=1e-12)
    if kind != "constant":
        assert lrs[-1] == 0.0


@pytest.mark.parametrize("selection, kw", [
    ("geko", {}), ("geko", {"lr_scheduler_type": "cosine"}), ("rs2", {"budget": 0.5}),
    ("random_subset", {"budget": 0.3}), ("infobatch", {}),
])
def test_every_policy_ends_at_lr_zero(tmp_path, selection, kw):
    t = _geko(tmp_path, "run", selection=selection, warmup_steps=2, **kw)
    lrs = _lrs(t)
    trained = read_summary(t.run.root)["samples_trained"].to_list()
    assert len(trained) == 3 and trained[-1] > 0
    full_steps = 3 * 5  # what a step-based schedule would be sized with (40 samples, batch 8)
    assert t.global_step < full_steps  # the run is shorter than a step-based schedule thinks
    assert lrs[-1] == 0.0 and min(lrs[:-1]) > 0
    if selection == "geko":
        assert trained[0] == 40 and trained[-1] < 40  # GEKO's epochs shrink
    after_warmup = lrs[2:]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:]))  # decays monotonically


def test_rs2_through_the_trainer_sees_every_sample_once_in_two_half_epochs(tmp_path):
    t = _geko(tmp_path, "rs2", selection="rs2", budget=0.5, num_epochs=2)
    assert read_summary(t.run.root)["samples_trained"].to_list() == [20, 20]
    assert t.store.column("times_seen").tolist() == [1] * 40
    assert _lrs(t)[-1] == 0.0


def test_max_steps_stops_without_moving_the_schedule(tmp_path):
    # max_steps is a stop (a resumed run continues the same curve), not the schedule's end.
    full = _lrs(_geko(tmp_path, "full", selection="uniform", data=items(32), num_epochs=2))
    cut = _lrs(_geko(tmp_path, "cut", selection="uniform", data=items(32), num_epochs=2, max_steps=3))
    assert cut == pytest.approx(full[:3], abs=0) and cut[-1] > 0


# --------------------------------------------------------------------------- GEKOHFTrainer
class _LRRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.trainer = None
        self.lrs: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.lrs.append(self.trainer.lr_scheduler.get_last_lr()[0])


def _hf(tmp_path, name: str, *, selection="geko", data=None, **kw) -> tuple[GEKOHFTrainer, list[float]]:
    base = {"output_dir": str(tmp_path / name), "report_to": "none", "use_cpu": True, "disable_tqdm": True,
            "dataloader_num_workers": 0, "per_device_train_batch_size": 8, "num_train_epochs": 3,
            "learning_rate": LR, "weight_decay": 0.0, "warmup_steps": 0, "optim": "adamw_torch",
            "save_strategy": "no", "logging_strategy": "no", "seed": 0}
    rec = _LRRecorder()
    t = GEKOHFTrainer(model=TinyClassifier(), args=TrainingArguments(**{**base, **kw}),
                      train_dataset=items() if data is None else data, data_collator=PadCollator(),
                      callbacks=[rec], geko_args=GEKOSettings(config=FAST, selection=selection,
                                                              stop_when_mastered=False))
    rec.trainer = t
    t.train()
    return t, rec.lrs


@pytest.mark.parametrize("selection, kind", [("geko", "linear"), ("geko", "cosine"), ("uniform", "linear")])
def test_hf_linear_and_cosine_end_at_zero_by_progress(tmp_path, selection, kind):
    epochs = 4 if selection == "geko" else 3  # by the fourth epoch GEKO's plans are a batch or more shorter
    t, lrs = _hf(tmp_path, "run", selection=selection, lr_scheduler_type=kind, warmup_steps=2,
                 num_train_epochs=epochs)
    assert len(lrs) == t.state.global_step and lrs[-1] == 0.0 and min(lrs[:-1]) > 0
    if selection == "geko":
        assert t.state.global_step < t.state.max_steps  # shorter epochs: HF's step-based decay would end above 0
    else:
        assert t.state.global_step == t.state.max_steps == 15


def test_hf_constant_and_max_steps(tmp_path):
    _, lrs = _hf(tmp_path, "constant", lr_scheduler_type="constant")
    assert lrs == [LR] * len(lrs)  # HF's own constant schedule, untouched
    # max_steps ends the run by steps: the step share leads and the decay ends there
    t, lrs = _hf(tmp_path, "max", selection="uniform", max_steps=7)
    assert t.state.global_step == 7 and lrs[-1] == 0.0 and lrs[:-1] == pytest.approx(
        [LR * (1 - s / 7) for s in range(1, 7)])
