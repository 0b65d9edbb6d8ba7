"""The dashboard's texts: status line, stat boxes, bucket caption, summary card."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from geko_torch.app import dashboard as d
from geko_torch.app.process import Launch
from geko_torch.app.runs import APP_LOG, read_run


def _launch(run_dir, *, code: str = "pass", stop_requests: int = 0, started: float | None = None) -> Launch:
    p = subprocess.Popen([sys.executable, "-c", code])
    p.wait()
    launch = Launch(run_dir, p, [], "geko train ...", None, started=time.time() if started is None else started)
    launch.stop_requests = stop_requests
    return launch


def test_format_duration_and_error_line():
    assert [d.format_duration(s) for s in (None, 4.4, 75, 3725)] == ["-", "4s", "1m 15s", "1h 02m"]
    log = "Traceback (most recent call last):\n  File x\nValueError: bad row 3\nother\n"
    assert d.error_line(log) == "ValueError: bad row 3"
    assert d.error_line("geko train: error: --epochs 0\n") == "geko train: error: --epochs 0"
    assert d.error_line("all fine\n") is None


def test_status_of_runs_nobody_here_started(tmp_path, finished_run, stopped_run):
    assert d.run_status(read_run(tmp_path / "missing"), None).kind == "empty"
    assert d.run_status(read_run(tmp_path), None).kind == "empty"
    done = d.run_status(read_run(finished_run), None)
    assert done.kind == "complete" and "epoch 3 of 3" in done.text
    view = read_run(stopped_run)
    assert d.run_status(view, None, now=view.last_update + 5).kind == "live"
    idle = d.run_status(view, None, now=view.last_update + 3600)
    assert idle.kind == "idle" and "resumable from checkpoint-8" in idle.text


def test_status_of_runs_the_app_started(tmp_path, finished_run, stopped_run):
    view = read_run(stopped_run)
    assert d.run_status(view, _launch(stopped_run, stop_requests=1)).kind == "stopped"
    assert d.run_status(read_run(finished_run), _launch(finished_run)).kind == "complete"
    running = _launch(stopped_run, started=0)
    running.popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert d.run_status(view, running).kind == "training"
        running.started = time.time() + 10  # nothing written since this process started
        assert d.run_status(view, running).kind == "starting"
        running.stop_requests = 1
        assert d.run_status(view, running).kind == "stopping"
    finally:
        running.popen.send_signal(signal.SIGKILL)
        running.popen.wait()
    (tmp_path / APP_LOG).write_text("loading\ngeko train: error: DATA_FILE x.jsonl: no such file\n")
    failed = d.run_status(read_run(tmp_path), _launch(tmp_path, code="raise SystemExit(2)"))
    assert failed.kind == "error" and "no such file" in failed.text


def test_stat_boxes_and_caption(finished_run, stopped_run):
    view = read_run(finished_run)
    boxes = d.stat_boxes(view, d.run_status(view, None))
    assert list(boxes) == ["Epochs done", "Step", "Compute saved", "Avg loss", "Steps/sec", "ETA", "Eval loss"]
    assert boxes["Epochs done"] == "3 / 3" and boxes["ETA"] == "done" and boxes["Steps/sec"] == "-"
    assert boxes["Compute saved"] == f"{100 * view.report.compute_saved:.1f}%"
    assert boxes["Eval loss"] == f"{view.last_eval['eval_loss']:.4f}"
    live = read_run(stopped_run)
    live_boxes = d.stat_boxes(live, d.run_status(live, None, now=live.last_update))
    assert live_boxes["Steps/sec"] != "-"
    assert d.bucket_caption(view).startswith("After epoch 3: FREEZE ")
    html = d.stats_html(boxes, d.Status("complete", "Done <ok>"))
    assert 'data-kind="complete"' in html and "Done &lt;ok&gt;" in html and 'data-stat="ETA"' in html


def test_summary_cards(tmp_path, finished_run, stopped_run):
    view = read_run(finished_run)
    card = d.summary_card(view, d.run_status(view, None))
    for part in ("Training complete", "Compute saved", "Final loss", "Samples mastered", "Eval loss / accuracy",
                 str(finished_run)):
        assert part in card
    stopped = read_run(stopped_run)
    card = d.summary_card(stopped, d.Status("stopped", ""))
    assert "Stopped at step 8" in card and "checkpoint-8" in card and "Resume" in card
    assert d.summary_card(stopped, d.Status("training", "")) == ""
    assert "Training failed" in d.summary_card(read_run(tmp_path), d.Status("error", "Error: boom"))


def test_hardware_line():
    import torch

    line = d.hardware_line()
    assert line.startswith(f"PyTorch {torch.__version__} · ") and ("GPU" in line or "CPU" in line)
