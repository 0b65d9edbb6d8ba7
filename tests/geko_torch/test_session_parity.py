"""Both trainers share one GEKO lifecycle (GEKOSession): the same tiny model, data and seed through
``GEKOTrainer`` and ``GEKOHFTrainer`` give the same per-sample state, plans and history, with nan
skip, stop-when-mastered, gradient accumulation, the curriculum's LR multiplier and resume; and
both write, and refuse, the same checkpoint layout."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from geko_state import GEKOConfig, PlateauStop, read_summary
from geko_state.errors import StateFileError
from geko_state.schema import COLUMN_NAMES
from geko_torch import GEKOSettings, GEKOTrainer, GEKOTrainingArgs
from geko_torch.checkpoint import GEKO_META_FILE, GEKO_STATE_FILE
from geko_torch.data import PadCollator
from geko_torch.hf import GEKOHFTrainer

from .hf_callbacks import StopAt
from .models import SHRINKING, TinyClassifier, cls_items

N = 40
BATCH = 8
LR = 5e-2
# Freezes samples from the second epoch on, so later epochs shrink and the plans depend on the state.
FAST = SHRINKING
DISCRETE = ("bucket", "correct", "times_seen", "consecutive_frozen", "frozen_at_epoch", "pruned")
SUMMARY_EXACT = ("epoch", "freeze_count", "light_count", "focus_count", "hard_count", "pruned", "samples_trained",
                 "skipped_nonfinite", "mastered", "phase", "changed")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NaNClassifier(TinyClassifier):
    """TinyClassifier whose logits are NaN for samples holding token ``NAN_TOKEN``: their loss and
    confidence are non-finite in every precision."""

    NAN_TOKEN = 4

    def forward(self, input_ids, attention_mask=None):
        logits = super().forward(input_ids, attention_mask)["logits"]
        bad = (input_ids == self.NAN_TOKEN).any(dim=1, keepdim=True)
        return {"logits": torch.where(bad, torch.full_like(logits, float("nan")), logits)}


def items(n: int = N, *, unlabelled: tuple[int, ...] = (), nan_rows: tuple[int, ...] = ()) -> list[dict]:
    out = cls_items(n, seed=3)
    for i in unlabelled:  # no label token: not observed, not counted in the loss's denominator
        out[i]["labels"] = torch.tensor(-100)
    for i in nan_rows:
        out[i]["input_ids"] = out[i]["input_ids"].clone()
        out[i]["input_ids"][0] = NaNClassifier.NAN_TOKEN
    return out


# --------------------------------------------------------------------------- the two trainers


class _Runs:
    """Runs of both trainers on the same model, data and settings, recording each epoch's plan."""

    def __init__(self, tmp_path: Path, *, data: list[dict], config: GEKOConfig, epochs: int, accum: int = 1,
                 model: type = TinyClassifier, correctness=None, schedule: str = "constant",
                 fields: dict | None = None) -> None:
        self.tmp, self.data, self.config, self.epochs, self.accum = tmp_path, data, config, epochs, accum
        self.fields = fields or {}  # GEKO fields both trainers get (selection, stop_on_plateau, ...)
        self.schedule = schedule  # the LR decay of both trainers (constant: the runs compare the plans)
        self.model, self.correctness = model, correctness

    def geko(self, name: str, *, max_steps: int | None = None, resume: Path | None = None, seed: int = 0):
        args = GEKOTrainingArgs(
            output_dir=str(self.tmp / name), num_epochs=self.epochs, batch_size=BATCH, learning_rate=LR,
            weight_decay=0.0, warmup_steps=0, lr_scheduler_type=self.schedule,
            gradient_accumulation_steps=self.accum, seed=0,
            logging_steps=1, save_steps=10_000, eval_steps=10_000, max_steps=max_steps, device="cpu",
            dataloader_num_workers=0, report=False, disable_progress_bar=True, plots=False, save_at_end=False,
            **self.fields,
        )
        t = GEKOTrainer(self.model(seed=seed), self.data, config=self.config, args=args,
                        compute_correctness=self.correctness)
        t.plans = []
        load = t._train_loader

        def recording_loader():
            loader = load()
            t.plans.append(t.sampler.plan.ids.copy())
            return loader

        t._train_loader = recording_loader
        if resume is not None:
            t.load_checkpoint(resume)
        t.train()
        return t

    def hf(self, name: str, *, stop_at: int | None = None, resume: Path | None = None, seed: int = 0):
        args = TrainingArguments(
            output_dir=str(self.tmp / name), report_to="none", use_cpu=True, disable_tqdm=True,
            dataloader_num_workers=0, per_device_train_batch_size=BATCH, gradient_accumulation_steps=self.accum,
            num_train_epochs=self.epochs, learning_rate=LR, weight_decay=0.0, lr_scheduler_type=self.schedule,
            warmup_steps=0, optim="adamw_torch", save_strategy="no", logging_strategy="no", seed=0,
        )
        rec = _PlanRecorder()
        callbacks = [rec] + ([StopAt(stop_at)] if stop_at is not None else [])
        t = GEKOHFTrainer(model=self.model(seed=seed), args=args, train_dataset=self.data,
                          data_collator=PadCollator(), callbacks=callbacks,
                          geko_args=GEKOSettings(config=self.config, compute_correctness=self.correctness,
                                                 **self.fields))
        rec.trainer = t
        t.plans = rec.plans
        t.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        return t


class _PlanRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.trainer = None
        self.plans: list[np.ndarray] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.plans.append(self.trainer.geko_sampler.plan.ids.copy())


def assert_same_state(a, b) -> None:
    for c in COLUMN_NAMES:
        x, y = np.asarray(a.column(c)), np.asarray(b.column(c))
        if c in DISCRETE:
            np.testing.assert_array_equal(x, y, err_msg=c)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=c)
    assert a.epoch == b.epoch and a.skipped_total == b.skipped_total


def assert_same_plans(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x, y, err_msg=f"plan of epoch {i + 1}")


def assert_same_history(run_a: Path, run_b: Path) -> None:
    sa, sb = read_summary(run_a), read_summary(run_b)
    assert sa.height == sb.height
    for c in SUMMARY_EXACT:
        assert sa[c].to_list() == sb[c].to_list(), c
    np.testing.assert_allclose(sa["accuracy"].to_numpy(), sb["accuracy"].to_numpy(), rtol=1e-6)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=k)


def _parity(g: GEKOTrainer, h: GEKOHFTrainer) -> None:
    assert_same_state(g.store, h.geko_store)
    assert_same_plans(g.plans, h.plans)
    assert_same_history(g.run.root, h.geko_run_dir)
    assert_same_weights(g.model, h.model)


# --------------------------------------------------------------------------- parity


def test_same_state_plans_and_history_with_gradient_accumulation(tmp_path):
    # 5 batches per full epoch in groups of 2, 2, 1, with samples that have no label token: the
    # loss is normalised over the valid samples of each accumulated batch in both trainers.
    runs = _Runs(tmp_path, data=items(unlabelled=(0, 9, 17, 30)), config=FAST, epochs=3, accum=2)
    g, h = runs.geko("geko"), runs.hf("hf")
    _parity(g, h)
    summary = read_summary(g.run.root)
    assert summary["samples_trained"][0] == N and summary["samples_trained"][-1] < N  # epochs shrink
    assert g.store.column("times_seen")[[0, 9, 17, 30]].tolist() == [0, 0, 0, 0]


def test_nan_skip_weighs_zero_in_both_trainers(tmp_path):
    # Before, GEKOHFTrainer's accumulated-batch loss kept the NaN losses nan_policy="skip" skips: the
    # loss, and then every weight, became NaN.
    cfg = FAST.replace(nan_policy="skip")
    bad = (2, 11, 25)
    runs = _Runs(tmp_path, data=items(nan_rows=bad), config=cfg, epochs=2, accum=2, model=NaNClassifier)
    g, h = runs.geko("geko"), runs.hf("hf")
    for t in (g, h):
        assert all(torch.isfinite(p).all() for p in t.model.parameters())
    _parity(g, h)
    assert g.store.skipped_total == h.geko_store.skipped_total > 0
    assert g.store.column("times_seen")[list(bad)].tolist() == [0, 0, 0]
    assert read_summary(h.geko_run_dir)["skipped_nonfinite"].sum() == g.store.skipped_total


def test_both_trainers_stop_when_mastered(tmp_path):
    # Before, only GEKOHFTrainer stopped once the state was mastered.
    everything_right = GEKOConfig(log_bucket_stats=False, use_curriculum=False, freeze_confidence=0.0,
                                  freeze_quality=0.0, min_q_for_freeze=0.0)
    runs = _Runs(tmp_path, data=items(), config=everything_right, epochs=3,
                 correctness=lambda outputs, batch: torch.ones(batch["labels"].shape[0], dtype=torch.bool))
    g, h = runs.geko("geko"), runs.hf("hf")
    _parity(g, h)
    for run in (g.run.root, h.geko_run_dir):
        summary = read_summary(run)
        assert summary.height == 1 and summary["mastered"].item() and summary["freeze_count"].item() == N
    assert g.global_step == h.state.global_step == N // BATCH


def test_both_trainers_stop_on_a_plateau_of_learning_progress(tmp_path):
    # A baseline (the mastered rule never stops it) with a plateau rule that any share below 1
    # triggers: both stop after epoch 2 of 4, the first one where a loss change is known.
    fields = {"selection": "uniform", "stop_on_plateau": PlateauStop(min_improving=1.0)}
    runs = _Runs(tmp_path, data=items(), config=FAST, epochs=4, fields=fields)
    g, h = runs.geko("geko"), runs.hf("hf")
    _parity(g, h)
    for run in (g.run.root, h.geko_run_dir):
        assert read_summary(run).height == 2
    (last,) = [r for r in g.log_history if r.get("epoch") == 2 and "improving_share" in r]
    assert 0 < last["improving_share"] < 1.0 and last["open_share"] < 1.0
    # a rule no share can trigger trains every epoch
    never = _Runs(tmp_path / "never", data=items(), config=FAST, epochs=4,
                  fields={**fields, "stop_on_plateau": PlateauStop(min_improving=0.0)})
    assert read_summary(never.geko("geko").run.root).height == 4


def test_curriculum_lr_multiplier_in_both_trainers(tmp_path):
    # Before, only GEKOTrainer multiplied its learning rate by the curriculum's multiplier.
    cfg = FAST.replace(use_curriculum=True)
    runs = _Runs(tmp_path, data=items(), config=cfg, epochs=3)
    g, h = runs.geko("geko"), runs.hf("hf")
    _parity(g, h)
    multiplier = g.session.lr_multiplier()
    assert multiplier != 1.0  # CONSOLIDATE at the end
    assert h.lr_scheduler.get_last_lr()[0] == pytest.approx(LR * multiplier)
    assert g.scheduler.get_last_lr()[0] == pytest.approx(LR * multiplier)


def test_progress_based_lr_decay_in_both_trainers(tmp_path):
    # A linear decay over training progress: both trainers reach LR 0 at their last step although
    # GEKO's shrinking epochs take fewer steps than the full-data count HF sizes its schedule with.
    runs = _Runs(tmp_path, data=items(), config=FAST, epochs=3, accum=2, schedule="linear")
    g, h = runs.geko("geko"), runs.hf("hf")
    _parity(g, h)  # same weights: the same learning rate at every step
    assert read_summary(g.run.root)["samples_trained"][-1] < N
    assert h.state.global_step < h.state.max_steps
    assert g.scheduler.get_last_lr()[0] == h.lr_scheduler.get_last_lr()[0] == 0.0


def test_stopped_and_resumed_runs_end_like_the_uninterrupted_ones(tmp_path):
    runs = _Runs(tmp_path, data=items(unlabelled=(5,)), config=FAST, epochs=3, accum=2)
    g_full, h_full = runs.geko("geko_full"), runs.hf("hf_full")
    k = 4  # inside epoch 2 (3 optimizer steps per full epoch)
    runs.geko("geko_split", max_steps=k)
    runs.hf("hf_split", stop_at=k)
    g = runs.geko("geko_split", resume=tmp_path / "geko_split" / f"checkpoint-{k}", seed=9)
    h = runs.hf("hf_split", resume=tmp_path / "hf_split" / f"checkpoint-{k}", seed=9)
    # each trainer resumes exactly (the same plans from the resumed epoch on), and the two agree
    assert_same_state(g.store, g_full.store)
    assert_same_state(h.geko_store, h_full.geko_store)
    assert_same_plans(g.plans, g_full.plans[-len(g.plans):])
    assert_same_plans(h.plans, h_full.plans[-len(h.plans):])
    assert_same_history(g.run.root, g_full.run.root)
    assert_same_history(h.geko_run_dir, h_full.geko_run_dir)
    _parity(g_full, h_full)
    assert_same_state(g.store, h.geko_store)


# --------------------------------------------------------------------------- one checkpoint layout


GEKO_PART = {GEKO_STATE_FILE, "geko_sampler.json", "geko_history.json", "geko_history.safetensors",
             "geko_epochs.parquet", GEKO_META_FILE}


def test_one_checkpoint_layout_and_old_layout_refused(tmp_path):
    runs = _Runs(tmp_path, data=items(), config=FAST, epochs=2)
    runs.geko("geko", max_steps=7)  # inside epoch 2: the summary has a row
    runs.hf("hf", stop_at=7)
    g_ckpt, h_ckpt = tmp_path / "geko" / "checkpoint-7", tmp_path / "hf" / "checkpoint-7"
    geko_files = {p.name for p in g_ckpt.iterdir() if p.name.startswith("geko_")}
    hf_files = {p.name for p in h_ckpt.iterdir() if p.name.startswith("geko_")}
    assert GEKO_PART <= geko_files and geko_files == hf_files
    assert not any((g_ckpt / f).exists() for f in ("state.arrow", "sampler.json", "history.json", "epochs.parquet"))

    # A checkpoint of the older GEKOTrainer layout is refused, by both trainers, with a message
    # that says so (before anything of the live run is touched).
    old = tmp_path / "old" / "checkpoint-7"
    shutil.copytree(g_ckpt, old)
    for new, legacy in ((GEKO_STATE_FILE, "state.arrow"), ("geko_sampler.json", "sampler.json"),
                        ("geko_epochs.parquet", "epochs.parquet")):
        (old / new).rename(old / legacy)
    (old / GEKO_META_FILE).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(StateFileError, match="older GEKOTrainer layout"):
            runs.geko("geko_again", resume=old)
        with pytest.raises(StateFileError, match="older GEKOTrainer layout"):
            runs.hf("hf_again", resume=old)


def test_a_run_resumed_at_a_mastered_epochs_last_step_stops_in_both_trainers(tmp_path):
    # The checkpoint of the epoch's last step is saved before the epoch ends; the resumed run ends
    # it first and, as the uninterrupted run did, stops there because the state is mastered.
    everything_right = GEKOConfig(log_bucket_stats=False, use_curriculum=False, freeze_confidence=0.0,
                                  freeze_quality=0.0, min_q_for_freeze=0.0)
    runs = _Runs(tmp_path, data=items(), config=everything_right, epochs=3,
                 correctness=lambda outputs, batch: torch.ones(batch["labels"].shape[0], dtype=torch.bool))
    last = N // BATCH
    runs.geko("geko", max_steps=last)
    runs.hf("hf", stop_at=last)
    g = runs.geko("geko", resume=tmp_path / "geko" / f"checkpoint-{last}", seed=9)
    h = runs.hf("hf", resume=tmp_path / "hf" / f"checkpoint-{last}", seed=9)
    assert g.global_step == h.state.global_step == last
    for run in (g.run.root, h.geko_run_dir):
        summary = read_summary(run)
        assert summary.height == 1 and summary["mastered"].item()
    assert_same_state(g.store, h.geko_store)
