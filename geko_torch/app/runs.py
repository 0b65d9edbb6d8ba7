"""Dashboard readers: everything the app shows about a run, read from its run directory only.

So the dashboard works the same for a run the app started, one started by ``geko train`` or by a
``GEKOTrainer`` in a Python script, live or finished:

* ``trainer_log.jsonl``: step lines (step, time, epoch, train_loss: the epoch's running mean,
  step_loss: the loss since the previous step line, learning_rate, phase), epoch
  lines (samples_trained, bucket counts) and eval lines (eval_loss, eval_accuracy);
* ``epochs.parquet`` (through :func:`geko_state.build_report`): bucket shares per epoch, moves
  between buckets, compute actually saved;
* ``checkpoint-<step>/trainer_state.json``: the planned epochs and whether the run finished;
* ``geko_app.json`` (runs the app launched): the planned epochs before the first checkpoint.

Pure functions of the files (no gradio); frames are ``polars.DataFrame``.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from geko_state.errors import GekoError
from geko_state.history import count_column
from geko_state.report import EfficiencyReport, build_report
from geko_state.schema import BUCKET_NAMES, Bucket
from geko_state.validate import is_number

from ..rundir import TRAINER_LOG, TRAINER_STATE, checkpoint_dirs

__all__ = [
    "APP_LOG",
    "EVAL_SERIES",
    "LOSS_SERIES",
    "MEAN_SERIES",
    "TRAINER_LOG",
    "CheckpointInfo",
    "RunPlan",
    "RunView",
    "bucket_shares",
    "checkpoints",
    "epoch_labels",
    "eta_seconds",
    "eval_points",
    "loss_curve",
    "read_log",
    "read_plan",
    "read_run",
    "smoothed",
    "steps_per_second",
    "tail",
    "transition_table",
]

APP_LOG = "geko_app.log"  # stdout and stderr of the training process the app started
_STEP_KEY = "learning_rate"  # only the per-step lines carry it
_EPOCH_KEY = "samples_trained"  # only the end-of-epoch lines carry it
LOSS_SERIES = "train (per step, smoothed)"
MEAN_SERIES = "train (epoch running mean)"  # logs written before step lines carried step_loss
EVAL_SERIES = "eval"
SMOOTHING = 0.6  # weight of the past in the loss curve's moving average (TensorBoard's default)


# ---------------------------------------------------------------------- trainer_log.jsonl
def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``trainer_log.jsonl`` (empty when there is none). A line cut short by a
    writer that is still writing, or by a crash, is left out."""
    path = Path(run_dir) / TRAINER_LOG
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def _finite(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def loss_curve(records: list[dict[str, Any]]) -> pl.DataFrame:
    """``step, loss, series``: the training loss per logging step (``step_loss``), smoothed by
    :func:`smoothed`, plus the eval losses. A log without ``step_loss`` (an older trainer) gives the
    running mean of the current epoch and the end-of-epoch means instead."""
    steps = {r["step"]: float(r["step_loss"]) for r in records if _STEP_KEY in r and _finite(r.get("step_loss"))}
    if steps:
        xs = sorted(steps)
        rows = [(x, y, LOSS_SERIES) for x, y in zip(xs, smoothed([steps[x] for x in xs]))]
    else:
        rows = [(r["step"], float(r["train_loss"]), MEAN_SERIES) for r in records
                if (_STEP_KEY in r or _EPOCH_KEY in r) and _finite(r.get("train_loss"))]
    rows += [(r["step"], float(r["eval_loss"]), EVAL_SERIES) for r in records if _finite(r.get("eval_loss"))]
    frame = pl.DataFrame(rows, schema={"step": pl.Int64, "loss": pl.Float64, "series": pl.String}, orient="row")
    return frame.unique(subset=["step", "series"], keep="last", maintain_order=True).sort("series", "step")


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, debiased (its first points are not pulled towards 0): a
    per-step loss is noisy, an epoch's running mean jumps when the epoch restarts it."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def eval_points(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The eval lines, oldest first."""
    return [r for r in records if _finite(r.get("eval_loss"))]


def steps_per_second(records: list[dict[str, Any]], window: int = 20) -> float | None:
    """Optimizer steps per second over the last ``window`` step lines. Pauses (a stopped run
    resumed later) are left out: a gap over 30 s and 5x the typical one does not count."""
    pts = [(r["step"], r["time"]) for r in records if (_STEP_KEY in r or _EPOCH_KEY in r) and _finite(r.get("time"))]
    pts = sorted(set(pts))[-(window + 1):]
    pairs = [(s1 - s0, t1 - t0) for (s0, t0), (s1, t1) in itertools.pairwise(pts) if s1 > s0 and t1 >= t0]
    if not pairs:
        return None
    per_step = sorted(dt / ds for ds, dt in pairs)
    typical = per_step[len(per_step) // 2]
    kept = [(ds, dt) for ds, dt in pairs if dt <= max(30.0, 5 * typical * ds)]
    steps, secs = sum(ds for ds, _ in kept), sum(dt for _, dt in kept)
    return steps / secs if secs > 0 and steps > 0 else None


# ---------------------------------------------------------------------- checkpoints and plan
@dataclass(frozen=True)
class CheckpointInfo:
    """A complete ``checkpoint-<step>`` directory."""

    step: int
    path: Path
    finished: bool  # written when training had ended (the last checkpoint of a complete run)
    state: dict[str, Any] = field(repr=False, default_factory=dict)  # its trainer_state.json


def checkpoints(run_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """The run's complete checkpoints, oldest first (see ``geko_torch.rundir.checkpoint_dirs``)."""

    out = []
    for step, path in checkpoint_dirs(run_dir):
        try:
            state = json.loads((path / TRAINER_STATE).read_text())
        except (OSError, ValueError):
            continue  # removed meanwhile (save_total_limit) or unreadable: not resumable either
        extra = state.get("extra") or {}
        out.append(CheckpointInfo(step, path, bool(extra.get("finished", False)), state))
    return out


@dataclass(frozen=True)
class RunPlan:
    """What the run was asked to do, as far as the run directory says."""

    num_epochs: int
    batch_size: int
    grad_accum: int
    max_steps: int | None
    source: str  # where it was read


def read_plan(run_dir: str | os.PathLike, latest: CheckpointInfo | None = None) -> RunPlan | None:
    """From the newest checkpoint's settings, else from the app's launch file, else None."""
    if latest is not None:
        a = (latest.state.get("extra") or {}).get("args") or {}
        try:
            return RunPlan(int(a["num_epochs"]), int(a["batch_size"]), int(a.get("gradient_accumulation_steps", 1)),
                           None if a.get("max_steps") is None else int(a["max_steps"]), latest.path.name)
        except (KeyError, TypeError, ValueError):
            pass
    from .command import read_launch

    try:
        form = read_launch(run_dir)
    except GekoError:
        return None
    if form is None:
        return None
    o = form.options
    return RunPlan(int(o["epochs"]), int(o["batch_size"]), int(o.get("grad_accum") or 1),
                   None if o.get("max_steps") is None else int(o["max_steps"]), "geko_app.json")


@lru_cache(maxsize=32)
def _state_n_samples(path: str, inode: int, size: int) -> int | None:
    from geko_state import StateStore

    try:
        with StateStore.open(path, mode="r") as store:
            return store.n_samples
    except (GekoError, OSError):
        return None


def _n_samples(run_dir: Path, report: EfficiencyReport | None, latest: CheckpointInfo | None) -> int | None:
    if report is not None:
        return report.n_samples
    if latest is not None and isinstance(latest.state.get("n_samples"), int):
        return int(latest.state["n_samples"])
    state = run_dir / "state.arrow"
    try:
        st = state.stat()
    except OSError:
        return None
    return _state_n_samples(str(state), st.st_ino, st.st_size)  # one checksum read per state file


def eta_seconds(records: list[dict[str, Any]], plan: RunPlan | None, rate: float | None,
                n_samples: int | None) -> float | None:
    """Seconds left at ``rate`` steps/s: the rest of the current epoch plus the remaining epochs,
    each as long as the last finished one (GEKO epochs usually shrink, so this errs long); the
    first epoch draws every sample. None when it cannot be told."""
    if plan is None or rate is None or rate <= 0 or not records:
        return None
    step = max(r["step"] for r in records)
    ends = [(int(r["epoch"]), int(r["step"])) for r in records if _EPOCH_KEY in r and isinstance(r.get("epoch"), int)]
    done = ends[-1][0] if ends else 0
    if done >= plan.num_epochs:
        return 0.0
    if len(ends) >= 2:
        per_epoch = ends[-1][1] - ends[-2][1]
    elif ends:
        per_epoch = ends[-1][1]
    elif n_samples:
        per_epoch = math.ceil(math.ceil(n_samples / plan.batch_size) / plan.grad_accum)
    else:
        return None
    into = step - (ends[-1][1] if ends else 0)
    remaining = max(per_epoch - into, 0) + per_epoch * (plan.num_epochs - done - 1)
    if plan.max_steps is not None:
        remaining = min(remaining, max(plan.max_steps - step, 0))
    return remaining / rate


# ---------------------------------------------------------------------- epochs.parquet
def bucket_shares(report: EfficiencyReport) -> pl.DataFrame:
    """``epoch, bucket, share``: each bucket's percent of the unpruned samples after each epoch
    (long form, buckets in FREEZE, LIGHT, FOCUS, HARD order)."""
    e = report.epochs
    active = pl.max_horizontal(pl.col("active"), pl.lit(1))
    return pl.concat([
        e.select(pl.col("epoch").cast(pl.Int64), pl.lit(b.name).alias("bucket"),
                 (100.0 * pl.col(count_column(b)) / active).alias("share"))
        for b in Bucket
    ]).sort("epoch", pl.col("bucket").cast(pl.Enum(list(BUCKET_NAMES))))


def epoch_labels(frame: pl.DataFrame, num_epochs: int | None = None) -> pl.DataFrame:
    """``frame`` with its ``epoch`` column as text padded on the left with spaces to one width
    (``" 9"``, ``"10"``), so a chart that sorts its categories as text keeps the epoch order;
    the width is that of ``num_epochs`` when known (labels then keep their width for the whole run)."""
    width = len(str(max(num_epochs or 0, int(frame["epoch"].max() or 0) if frame.height else 0)))
    return frame.with_columns(pl.col("epoch").cast(pl.String).str.pad_start(width, " "))


def transition_table(report: EfficiencyReport) -> pl.DataFrame:
    """Moves summed over all epochs: one row per from-bucket, one column per to-bucket
    (``build_report(run).transition_matrix()``; staying is not a move: the diagonal is 0)."""
    m = report.transition_matrix()
    return pl.DataFrame({"from": list(BUCKET_NAMES),
                         **{f"to {name}": [int(m[a, b]) for a in range(4)] for b, name in enumerate(BUCKET_NAMES)}})


# ---------------------------------------------------------------------- all of it
def tail(path: str | os.PathLike, lines: int = 40, max_bytes: int = 64 << 10) -> str:
    """The last ``lines`` lines of a text file ("" when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").replace("\r", "\n")
    return "\n".join([l for l in text.splitlines() if l.strip()][-lines:])


@dataclass(frozen=True)
class RunView:
    """One reading of a run directory: what a dashboard refresh shows."""

    run_dir: Path
    exists: bool
    records: list[dict[str, Any]]
    report: EfficiencyReport | None  # None before the first epoch ends
    report_error: str | None  # a corrupt summary: said, not raised
    checkpoints: list[CheckpointInfo]
    plan: RunPlan | None
    n_samples: int | None
    rate: float | None  # optimizer steps per second, recent
    eta: float | None  # seconds
    last_update: float | None  # newest modification time of the log / summary / checkpoints

    @property
    def latest(self) -> CheckpointInfo | None:
        return self.checkpoints[-1] if self.checkpoints else None

    @property
    def finished(self) -> bool:
        return self.latest is not None and self.latest.finished

    @property
    def has_data(self) -> bool:
        return bool(self.records or self.report is not None or self.checkpoints)

    @property
    def step(self) -> int:
        steps = [r["step"] for r in self.records] + [c.step for c in self.checkpoints]
        return max(steps, default=0)

    @property
    def epochs_done(self) -> int:
        return 0 if self.report is None else int(self.report.epochs["epoch"].max())

    @property
    def last_epoch_loss(self) -> float | None:
        losses = [r["train_loss"] for r in self.records if _EPOCH_KEY in r and _finite(r.get("train_loss"))]
        return losses[-1] if losses else None

    @property
    def last_eval(self) -> dict[str, Any] | None:
        evals = eval_points(self.records)
        return evals[-1] if evals else None

    @property
    def phase(self) -> str | None:
        for r in reversed(self.records):
            if _STEP_KEY in r:
                return r.get("phase")
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def signature(run_dir: str | os.PathLike) -> tuple:
    """Changes whenever a file the dashboard reads changes (cheap: stat calls only)."""
    root = Path(run_dir)
    out: list[Any] = []
    for name in (TRAINER_LOG, "epochs.parquet", APP_LOG, "geko_app.json"):
        try:
            st = (root / name).stat()
            out.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((name, None))
    try:
        out.append(tuple(sorted(p.name for p in root.glob("checkpoint-*"))))
    except OSError:
        pass
    return tuple(out)


def read_run(run_dir: str | os.PathLike) -> RunView:
    """Read everything the dashboard shows; never raises for a run being written (a missing or
    half-written file reads as not there yet; a corrupt summary is reported in ``report_error``)."""
    root = Path(run_dir)
    records = read_log(root)
    report, report_error = None, None
    if (root / "epochs.parquet").is_file():
        try:
            report = build_report(root)
        except GekoError as e:
            report_error = str(e)
    cks = checkpoints(root) if root.is_dir() else []
    latest = cks[-1] if cks else None
    plan = read_plan(root, latest) if root.is_dir() else None
    n = _n_samples(root, report, latest)
    rate = steps_per_second(records)
    eta = None if latest is not None and latest.finished else eta_seconds(records, plan, rate, n)
    times = [t for t in (_mtime(root / TRAINER_LOG), _mtime(root / "epochs.parquet"),
                         *(_mtime(c.path) for c in cks[-1:])) if t is not None]
    return RunView(root, root.is_dir(), records, report, report_error, cks, plan, n, rate, eta,
                   max(times) if times else None)


def seconds_ago(t: float | None, now: float | None = None) -> float | None:
    return None if t is None else max(0.0, (time.time() if now is None else now) - t)
