"""What the dashboard says about a run: status line, stat boxes, bucket caption, summary card.

Pure text from a :class:`~geko_torch.app.runs.RunView` (and, for runs the app started, the state of
its training process). No gradio.
"""
from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from typing import Literal

from geko_state.history import count_column
from geko_state.schema import Bucket

from .process import Launch
from .runs import APP_LOG, RunView, seconds_ago, tail

__all__ = ["Status", "bucket_caption", "format_duration", "hardware_line", "run_status", "stat_boxes",
           "stats_html", "summary_card"]

StatusKind = Literal["empty", "starting", "training", "stopping", "stopped", "complete", "error", "live", "idle"]
_LIVE_WINDOW_S = 120.0  # a run nobody here started counts as live while its files changed this recently
_ERROR_LINE = re.compile(r"^(geko [a-z]+: error: .*|[A-Za-z_.]*(Error|Exception): .*)$")


@dataclass(frozen=True)
class Status:
    kind: StatusKind
    text: str


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``"1m 15s"``; None -> ``"-"``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def error_line(log_text: str) -> str | None:
    """The last error message of a training log (``geko train: error: ...`` or an exception line)."""
    for line in reversed(log_text.splitlines()):
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    return None


def _where(view: RunView) -> str:
    parts = [f"step {view.step:,}"]
    if view.plan is not None:
        current = min(view.epochs_done + (0 if view.finished else 1), view.plan.num_epochs)
        parts.append(f"epoch {current} of {view.plan.num_epochs}")
    elif view.epochs_done:
        parts.append(f"{view.epochs_done} epochs done")
    return " · ".join(parts)


def run_status(view: RunView, launch: Launch | None, *, now: float | None = None) -> Status:
    """The headline of the dashboard. ``launch``: the app's training process for this run, if any."""
    ckpt = view.latest.path.name if view.latest is not None else None
    if launch is not None:
        state = launch.state
        if state in ("running", "stopping"):
            if view.last_update is None or view.last_update < launch.started or not view.records:
                what = "resuming from " + launch.resumed_from.name if launch.resumed_from else "starting"
                text = f"{what}: loading the model and the data" + (" (stop requested)" if state == "stopping" else "")
                return Status("stopping" if state == "stopping" else "starting", text.capitalize())
            if state == "stopping":
                return Status("stopping", f"Stopping after the current step · {_where(view)}")
            return Status("training", f"Training · {_where(view)}")
        if view.finished:
            return Status("complete", f"Complete · {_where(view)}")
        if state == "failed":
            err = error_line(tail(launch.run_dir / APP_LOG, 200)) or f"exit status {launch.returncode}"
            return Status("error", f"Error: {err}")
        if view.latest is not None:
            return Status("stopped", f"Stopped at step {view.latest.step:,} · resumable from {ckpt}")
        return Status("stopped", "Stopped before the first checkpoint: nothing to resume")
    if not view.exists:
        return Status("empty", f"No run directory {view.run_dir} yet")
    if not view.has_data:
        return Status("empty", f"No training data in {view.run_dir} yet")
    if view.finished:
        return Status("complete", f"Complete · {_where(view)}")
    age = seconds_ago(view.last_update, now)
    if age is not None and age < _LIVE_WINDOW_S:
        return Status("live", f"In progress · {_where(view)} · updated {format_duration(age)} ago")
    resumable = f" · resumable from {ckpt}" if ckpt else " · no checkpoint yet"
    return Status("idle", f"Not running (stopped or interrupted) · {_where(view)}{resumable}")


def stat_boxes(view: RunView, status: Status) -> dict[str, str]:
    """The stat boxes: label -> value (the seeds' Epoch, Step, Compute saved, Avg loss, Steps/sec,
    ETA, Eval loss)."""
    plan = view.plan
    epoch = f"{view.epochs_done} / {plan.num_epochs}" if plan is not None else f"{view.epochs_done} / ?"
    saved = "-"
    if view.report is not None:
        r = view.report
        saved = f"{100 * r.compute_saved:.1f}%"
    loss = view.last_epoch_loss
    ev = view.last_eval
    live = status.kind in ("training", "live", "stopping")
    return {
        "Epochs done": epoch,
        "Step": f"{view.step:,}",
        "Compute saved": saved,
        "Avg loss": "-" if loss is None else f"{loss:.4f}",
        "Steps/sec": "-" if view.rate is None or not live else f"{view.rate:.2f}",
        "ETA": format_duration(view.eta) if live else ("done" if status.kind == "complete" else "-"),
        "Eval loss": "-" if ev is None else f"{ev['eval_loss']:.4f}",
    }


def stats_html(boxes: dict[str, str], status: Status) -> str:
    """The status bar and the stat boxes as one HTML block (classes styled by ``ui.CSS``)."""
    cells = "".join(
        f'<div class="geko-stat" data-stat="{html.escape(k)}"><div class="geko-stat-label">{html.escape(k)}</div>'
        f'<div class="geko-stat-value">{html.escape(v)}</div></div>'
        for k, v in boxes.items()
    )
    return (f'<div id="geko-status" class="geko-status geko-status-{status.kind}" data-kind="{status.kind}">'
            f"{html.escape(status.text)}</div><div class=\"geko-stats\">{cells}</div>")


def bucket_caption(view: RunView) -> str:
    """The latest epoch's bucket shares in words (also what a screen reader gets for the chart)."""
    if view.report is None:
        return "Bucket shares appear when the first epoch ends."
    last = view.report.epochs.row(-1, named=True)
    active = max(int(last["active"]), 1)
    shares = " · ".join(f"{b.name} {100 * last[count_column(b)] / active:.1f}%" for b in Bucket)
    pruned = f" · pruned {last['pruned']:,}" if last["pruned"] else ""
    return f"After epoch {last['epoch']}: {shares}{pruned} · trained {last['samples_trained']:,} samples"


def summary_card(view: RunView, status: Status) -> str:
    """HTML card for a run that ended (complete, stopped or failed); "" while it runs."""
    esc = html.escape
    if status.kind == "complete":
        rows = [("Steps", f"{view.step:,}"), ("Epochs", f"{view.epochs_done}")]
        loss = view.last_epoch_loss
        if loss is not None:
            rows.append(("Final loss", f"{loss:.4f} (mean of the last epoch)"))
        if view.report is not None:
            r = view.report
            last = r.epochs.row(-1, named=True)
            mastered = int(last[count_column(Bucket.FREEZE)]) + int(last["pruned"])
            passes = f"{r.samples_trained:,} of {r.full_data_passes:,} sample passes"
            rows.append(("Compute saved", f"{100 * r.compute_saved:.1f}% ({passes})"))
            rows.append(("Samples mastered", f"{mastered:,} of {r.n_samples:,} (FREEZE + pruned)"))
            if last["accuracy"] is not None:
                rows.append(("Train accuracy", f"{100 * last['accuracy']:.1f}% (seen samples, last epoch)"))
        ev = view.last_eval
        if ev is not None:
            acc = ev.get("eval_accuracy")
            value = f"{ev['eval_loss']:.4f}" + ("" if acc is None else f" / {100 * acc:.1f}%")
            rows.append(("Eval loss / accuracy", value))
        rows.append(("Run directory", str(view.run_dir)))
        final = view.run_dir / "final_model"
        if final.is_dir():
            rows.append(("Model", str(final)))
        body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
        return f'<div class="geko-card geko-card-complete"><h3>Training complete</h3><table>{body}</table></div>'
    if status.kind in ("stopped", "idle") and view.latest is not None:
        return (f'<div class="geko-card geko-card-stopped"><h3>Stopped at step {view.latest.step:,}</h3>'
                "<p>Resumable: press <b>Resume</b>, or run the same <code>geko train</code> command with "
                f"<code>--resume</code> and this checkpoint:</p><p><code>{esc(str(view.latest.path))}</code></p></div>")
    if status.kind == "error":
        return (f'<div class="geko-card geko-card-error"><h3>Training failed</h3><p>{esc(status.text)}</p>'
                "<p>The training log below has the details.</p></div>")
    return ""


def hardware_line() -> str:
    """PyTorch version and the GPU(s) or CPU training runs on (what the seeds showed at page load)."""
    import platform

    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        device = "GPU: " + ", ".join(names)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "GPU: Apple MPS"
    else:
        device = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"PyTorch {torch.__version__} · {device}"
