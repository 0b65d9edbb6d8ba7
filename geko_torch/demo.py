"""``geko demo``: GEKO against uniform training on a built-in task, side by side, offline on a CPU.

A small model is first trained on a base task, then fine-tuned twice from the same weights on a
training set of easy, hard and mislabeled samples: once with GEKO (the trainer's defaults), once
with uniform full-data training (every sample every epoch). Both runs are ordinary GEKOTrainer run
directories; every figure printed is read back from them (wall times: see :mod:`.demo_wall`).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from geko_state import build_report
from geko_state.history import read_summary
from geko_state.io import atomic_path

from .demo_wall import RunClock, wall_lines, warm_up
from .tasks import TASKS, SampleKind, TaskData, build_task

__all__ = ["COMPARISON_FILE", "KINDS_FILE", "DemoResult", "run_demo"]

COMPARISON_FILE = "comparison.json"
KINDS_FILE = "sample_kinds.parquet"
PLOT_FILE = "comparison.png"
_POLICIES = ("geko", "uniform")


@dataclass
class DemoResult:
    """What :func:`run_demo` measured; ``runs[policy]`` is that run's directory."""

    out: Path
    task: TaskData
    runs: dict[str, Path]
    summary: dict[str, Any]


def _train(data: TaskData, policy: str, out: Path, *, seed: int, epochs: int, progress: bool) -> dict[str, Any]:
    import torch

    from .trainer import GEKOTrainer

    args = data.training_args(out, seed=seed, num_epochs=epochs, selection=policy, save_at_end=True,
                              save_total_limit=1, disable_progress_bar=not progress, progress_label=f"{policy:7s}")
    model = copy.deepcopy(data.model)
    trainer = GEKOTrainer(model, data.train, eval_dataset=data.eval, args=args)
    clock = RunClock()
    metrics = trainer.train()
    metrics["wall_s"], metrics["cpu_s"] = clock.stop()
    times = trainer.phase_times
    metrics["geko_work_s"] = times[times.GEKO] + times[times.PLOTS]
    metrics["eval_s"] = times[times.EVAL]
    metrics["threads"] = torch.get_num_threads()
    metrics["device"] = trainer.device.type
    evals = [r for r in trainer.log_history if data.metric.key in r]
    metrics["eval_curve"] = [float(r[data.metric.key]) for r in evals]
    trainer.close()
    return metrics


def _write_kinds(data: TaskData, path: Path) -> None:
    names = np.array([k.name for k in SampleKind])
    df = pl.DataFrame({"sample_id": np.arange(len(data.kinds), dtype=np.int64), "kind": names[data.kinds]})
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def _plot(summary: dict[str, Any], data: TaskData, path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    n = summary["n_samples"]
    for i, name in enumerate(_POLICIES):
        r = summary[name]
        xs = np.cumsum(r["samples_trained_per_epoch"]) / n
        ax.plot(xs, r["eval_curve"], marker="o", color=f"C{i}", label=name)
    ax.set_xlabel("sample passes trained (x N)")
    ax.set_ylabel(data.metric.key.replace("_", " ") + (" (higher is better)" if data.metric.higher_is_better
                                                        else " (lower is better)"))
    ax.set_title(f"geko demo ({data.name}): eval quality against compute")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def run_demo(out: str | Path = "runs/demo", *, task: str = "topics", seed: int = 0, epochs: int | None = None,
             samples: int | None = None, progress: bool = True, say=print,
             sizes: dict[str, int] | None = None) -> DemoResult:
    """Run the demo into ``out`` (``geko/`` and ``uniform/`` run directories, ``comparison.json``,
    ``comparison.png``, ``sample_kinds.parquet``) and return what was measured.

    ``sizes``: task size overrides for :func:`~geko_torch.tasks.build_task` (``n``, ``n_eval``,
    ``base_steps``); ``samples`` is a shortcut for ``n``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(sizes or {})
    if samples is not None:
        sizes["n"] = samples
    say(f"Task '{task}': {TASKS[task].description}")
    say("Training the base model on its base task ...")
    data = build_task(task, seed=seed, **sizes)
    epochs = data.epochs if epochs is None else epochs
    counts = np.bincount(data.kinds, minlength=3)
    say(f"  done in {data.base_seconds:.1f} s. Fine-tuning set: {len(data.train):,} samples "
        f"({counts[0]:,} easy, {counts[1]:,} hard, {counts[2]:,} mislabeled); clean eval set: {len(data.eval):,}")
    _write_kinds(data, out / KINDS_FILE)
    warm_up()

    runs = {name: out / name for name in _POLICIES}
    summary: dict[str, Any] = {"task": task, "seed": seed, "epochs": epochs, "n_samples": len(data.train),
                               "metric": data.metric.key}
    for name in _POLICIES:
        say(f"Fine-tuning with {'GEKO' if name == 'geko' else 'uniform full-data training'} -> {runs[name]}")
        m = _train(data, name, runs[name], seed=seed, epochs=epochs, progress=progress)
        report = build_report(runs[name])
        summary[name] = {
            "samples_trained": report.samples_trained,
            "samples_trained_per_epoch": [int(v) for v in report.epochs["samples_trained"]],
            "compute_saved": report.compute_saved,
            "final_eval": m["eval_curve"][-1],
            "eval_curve": m["eval_curve"],
            "eval_loss": m["eval_loss"],
            "eval_accuracy": m["eval_accuracy"],
            **{k: m[k] for k in ("wall_s", "cpu_s", "geko_work_s", "eval_s", "threads")},
        }
        summary["device"] = m["device"]
    with atomic_path(out / COMPARISON_FILE) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1))
    _plot(summary, data, out / PLOT_FILE)
    return DemoResult(out, data, runs, summary)


def format_demo(result: DemoResult) -> str:
    """The per-epoch table, the side-by-side summary and the commands to try, from the run dirs."""
    from .commands.train import KEEP_NOTE

    s, data = result.summary, result.task
    geko_dir = result.runs["geko"]
    e = read_summary(geko_dir)
    g, u = s["geko"], s["uniform"]
    pct = data.metric.key == "eval_accuracy"
    fmt = (lambda v: f"{100 * v:6.1f}%") if pct else (lambda v: f"{v:7.4f}")
    label = data.metric.key.replace("eval_", "eval ")
    lines = ["", f"Per epoch (GEKO buckets after the epoch; {label} after the epoch)",
             (f"{'epoch':>5} | {'GEKO trained':>12} {'FREEZE':>7} {'LIGHT':>6} {'FOCUS':>6} {'HARD':>6} "
             f"{label:>10} | {'uniform trained':>15} {label:>10}")]
    for i, row in enumerate(e.iter_rows(named=True)):
        lines.append(
            f"{row['epoch']:>5} | {row['samples_trained']:>12,} {row['freeze_count']:>7,} {row['light_count']:>6,} "
            f"{row['focus_count']:>6,} {row['hard_count']:>6,} {fmt(g['eval_curve'][i]):>10} | "
            f"{u['samples_trained_per_epoch'][i]:>15,} {fmt(u['eval_curve'][i]):>10}")
    bucket = _final_buckets(geko_dir)
    kinds = data.kinds
    by_kind = []
    for k in SampleKind:
        m = kinds == k
        if m.any():
            shares = ", ".join(f"{name} {100 * np.mean(bucket[m] == b):.0f}%"
                               for b, name in enumerate(("FREEZE", "LIGHT", "FOCUS", "HARD")))
            by_kind.append(f"  {k.name.lower():>10}: {shares}")
    saved = 1 - g["samples_trained"] / u["samples_trained"]
    wall_rows, wall_after = wall_lines(s)
    lines += [
        "",
        "Where each kind of sample ended (GEKO's buckets):", *by_kind,
        "",
        f"{'':22}{'GEKO':>14}{'uniform':>14}",
        f"{'samples trained':22}{g['samples_trained']:>14,}{u['samples_trained']:>14,}",
        f"{'final ' + label:22}{fmt(g['final_eval']):>14}{fmt(u['final_eval']):>14}",
        *wall_rows,
        (f"Compute actually saved by GEKO: {100 * saved:.1f}% of uniform's sample passes "
        f"({g['samples_trained']:,} vs {u['samples_trained']:,})."),
        *wall_after,
        "",
        f"Run directory: {result.out}  (geko/ and uniform/ runs, {COMPARISON_FILE}, {PLOT_FILE}, {KINDS_FILE})",
        "Try:",
        f"  geko report {geko_dir}",
        f"  geko sql {geko_dir} \"SELECT epoch, samples_trained, freeze_count, hard_count, accuracy FROM epochs\"",
        (f"  geko sql {geko_dir} \"SELECT k.kind, s.bucket, count(*) AS n FROM samples s "
        f"JOIN kinds k USING (sample_id) GROUP BY ALL ORDER BY ALL\" --table kinds={result.out / KINDS_FILE}"),
        f"  geko export {geko_dir} --keep FREEZE,LIGHT,FOCUS --ids-out {result.out / 'kept_ids.parquet'}",
        f"  ({KEEP_NOTE})",
    ]
    return "\n".join(lines)


def _final_buckets(run_dir: Path) -> np.ndarray:
    from geko_state import StateStore

    with StateStore.open(Path(run_dir) / "state.arrow", mode="r") as store:
        return store.column("bucket").copy()
