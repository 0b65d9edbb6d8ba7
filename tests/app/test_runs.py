"""Dashboard readers of a run directory: log, loss curve, rates, ETA, buckets, moves, checkpoints."""
from __future__ import annotations

import json
import math

import polars as pl
import pytest

from geko_state import build_report
from geko_state.config import PRESETS
from geko_torch.app import runs
from geko_torch.app.command import TrainForm, write_launch
from geko_torch.app.fields import config_values, training_fields


def _write_log(path, records, tail=""):
    path.mkdir(parents=True, exist_ok=True)
    (path / runs.TRAINER_LOG).write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _step(step, t, loss=1.0, epoch=0):
    return {"step": step, "time": t, "epoch": epoch, "train_loss": loss, "learning_rate": 1e-3, "phase": None}


def _epoch_end(step, t, epoch, loss=0.5):
    return {"step": step, "time": t, "epoch": epoch, "train_loss": loss, "samples_trained": 10}


def test_read_log_skips_a_line_being_written(tmp_path):
    _write_log(tmp_path, [_step(1, 0.0), _step(2, 1.0)], tail='{"step": 3, "ti')
    assert [r["step"] for r in runs.read_log(tmp_path)] == [1, 2]
    assert runs.read_log(tmp_path / "missing") == []


def test_loss_curve_is_per_logging_step_and_smoothed():
    losses = [3.0, 1.0, 2.0, 4.0]
    records = [{**_step(s, s, loss=9.0, epoch=s // 3), "step_loss": v} for s, v in enumerate(losses, 1)]
    records += [{"step": 2, "time": 2, "eval_loss": 1.8}, _epoch_end(2, 2, 1, 9.0)]
    curve = runs.loss_curve(records)
    train = curve.filter(series=runs.LOSS_SERIES)
    assert train["step"].to_list() == [1, 2, 3, 4]  # one point per step line: no epoch means, no running mean
    assert train["loss"].to_list() == pytest.approx(runs.smoothed(losses))
    assert curve.filter(series=runs.EVAL_SERIES)["loss"].to_list() == [1.8]
    assert runs.MEAN_SERIES not in curve["series"].to_list()


def test_smoothed_is_a_debiased_moving_average():
    assert runs.smoothed([]) == []
    assert runs.smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # not pulled towards 0
    out = runs.smoothed([0.0, 10.0], weight=0.5)
    assert out == pytest.approx([0.0, 10 * 0.5 / 0.75])


def test_loss_curve_of_an_older_log_has_train_and_eval_series():
    records = [_step(1, 0, 2.0), _step(2, 1, 1.5), _epoch_end(2, 1, 1, 1.5),
               {"step": 2, "time": 1, "eval_loss": 1.8, "eval_accuracy": 0.5},
               _step(3, 2, float("nan")), {"step": 4, "time": 3, "eval_loss": float("inf")}]
    curve = runs.loss_curve(records)
    assert curve.filter(series="eval")["loss"].to_list() == [1.8]
    train = curve.filter(pl.col("series") != "eval")
    assert train["step"].to_list() == [1, 2] and train["loss"].to_list() == [2.0, 1.5]  # non-finite left out
    assert runs.loss_curve([]).height == 0 and runs.loss_curve([]).columns == ["step", "loss", "series"]


def test_steps_per_second_over_a_window_without_pauses():
    records = [_step(s, 0.5 * s) for s in range(1, 11)]  # 2 steps/s
    assert runs.steps_per_second(records) == pytest.approx(2.0)
    # stopped after step 10 and resumed an hour later: the pause does not count
    records += [_step(s, 3600 + 0.25 * s) for s in range(11, 21)]
    assert runs.steps_per_second(records, window=20) == pytest.approx(18 / (9 * 0.5 + 9 * 0.25))
    assert runs.steps_per_second(records[:1]) is None and runs.steps_per_second([]) is None


def test_eta_from_the_plan_and_the_last_epoch():
    plan = runs.RunPlan(num_epochs=4, batch_size=10, grad_accum=1, max_steps=None, source="test")
    # first epoch, 100 samples: 10 steps per epoch expected; at step 4 of 40 steps in all
    first = [_step(s, s) for s in range(1, 5)]
    assert runs.eta_seconds(first, plan, 2.0, 100) == pytest.approx((6 + 3 * 10) / 2.0)
    assert runs.eta_seconds(first, plan, 2.0, None) is None  # N unknown before the first epoch ends
    # epochs 1 and 2 done (10 then 6 steps): later epochs are estimated at 6 steps
    recs = [_epoch_end(10, 10, 1), _epoch_end(16, 16, 2), _step(18, 18)]
    assert runs.eta_seconds(recs, plan, 1.0, 100) == pytest.approx(4 + 6)
    capped = runs.RunPlan(4, 10, 1, max_steps=20, source="test")
    assert runs.eta_seconds(recs, capped, 1.0, 100) == pytest.approx(2)
    assert runs.eta_seconds(recs + [_epoch_end(22, 22, 3), _epoch_end(28, 28, 4)], plan, 1.0, 100) == 0.0
    assert runs.eta_seconds(recs, None, 1.0, 100) is None and runs.eta_seconds(recs, plan, None, 100) is None


def test_bucket_shares_and_moves_match_the_report(finished_run):
    report = build_report(finished_run)
    shares = runs.bucket_shares(report)
    assert shares.columns == ["epoch", "bucket", "share"]
    assert shares["bucket"].to_list()[:4] == ["FREEZE", "LIGHT", "FOCUS", "HARD"]
    sums = shares.group_by("epoch").agg(pl.col("share").sum()).sort("epoch")
    assert sums["epoch"].to_list() == [1, 2, 3] and all(math.isclose(s, 100.0) for s in sums["share"])
    table = runs.transition_table(report)
    m = report.transition_matrix()
    assert table["from"].to_list() == ["FREEZE", "LIGHT", "FOCUS", "HARD"]
    assert [table[f"to {b}"].to_list() for b in ("FREEZE", "LIGHT", "FOCUS", "HARD")] == m.T.tolist()


def test_epoch_labels_sort_as_text_in_epoch_order():
    frame = pl.DataFrame({"epoch": [1, 2, 9, 10, 11]})
    labels = runs.epoch_labels(frame)["epoch"].to_list()
    assert labels == [" 1", " 2", " 9", "10", "11"] and sorted(labels) == labels
    assert runs.epoch_labels(pl.DataFrame({"epoch": [1, 2]}), num_epochs=100)["epoch"].to_list() == ["  1", "  2"]


def test_read_run_of_a_finished_run(finished_run):
    view = runs.read_run(finished_run)
    assert view.exists and view.has_data and view.finished
    assert view.epochs_done == 3 and view.n_samples == 48
    assert view.step == view.latest.step and view.latest.path.name == f"checkpoint-{view.step}"
    assert view.plan == runs.RunPlan(3, 8, 1, None, view.latest.path.name)
    assert view.eta is None and view.rate is not None and view.rate > 0
    assert view.last_eval is not None and 0 <= view.last_eval["eval_accuracy"] <= 1
    assert view.last_epoch_loss == pytest.approx(
        next(r["train_loss"] for r in reversed(view.records) if "samples_trained" in r))
    assert view.report is not None and view.report_error is None


def test_read_run_of_a_stopped_run(stopped_run):
    view = runs.read_run(stopped_run)
    assert not view.finished and view.latest.step == 8 and view.epochs_done >= 1
    assert view.plan.max_steps == 8


def test_read_run_of_an_empty_or_missing_directory(tmp_path):
    view = runs.read_run(tmp_path)
    assert view.exists and not view.has_data and view.report is None and view.plan is None
    missing = runs.read_run(tmp_path / "nope")
    assert not missing.exists and missing.checkpoints == [] and missing.n_samples is None


def test_a_corrupt_summary_is_reported_not_raised(tmp_path, finished_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    data = bytearray((run / "epochs.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "epochs.parquet").write_bytes(bytes(data))
    view = runs.read_run(run)
    assert view.report is None and view.report_error and "epochs.parquet" in view.report_error


def test_the_plan_of_an_app_run_before_its_first_checkpoint(tmp_path):
    form = TrainForm.from_values("m", "d.jsonl", {"text_field": "t", "epochs": 7, "batch_size": 4, "grad_accum": 2},
                                 config_values(PRESETS["default"]), {s.name: s.default for s in training_fields()})
    write_launch(tmp_path, form)
    assert runs.read_plan(tmp_path) == runs.RunPlan(7, 4, 2, None, "geko_app.json")
    assert runs.read_plan(tmp_path / "other") is None


def test_tail_and_signature(tmp_path):
    (tmp_path / runs.APP_LOG).write_text("".join(f"line {i}\r\n" for i in range(100)))
    assert runs.tail(tmp_path / runs.APP_LOG, 3) == "line 97\nline 98\nline 99"
    assert runs.tail(tmp_path / "none") == ""
    before = runs.signature(tmp_path)
    _write_log(tmp_path, [_step(1, 0.0)])
    assert runs.signature(tmp_path) != before


def test_the_trainer_logs_the_loss_of_each_logging_step(finished_run):
    records = runs.read_log(finished_run)
    steps = [r for r in records if "learning_rate" in r]
    assert steps and all(math.isfinite(r["step_loss"]) for r in steps[1:])  # the first may precede any observation
    # the epoch's running mean carries on in train_loss for the other readers of the log
    assert all("train_loss" in r for r in steps)
    curve = runs.loss_curve(records)
    assert set(curve["series"]) == {runs.LOSS_SERIES, runs.EVAL_SERIES}
