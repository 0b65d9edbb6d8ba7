#!/usr/bin/env python3
"""Training savings: GEKO against uniform training and honest baselines, side by side.

For every built-in offline task (``geko_torch.tasks``: a model trained on a base task, then
fine-tuned on easy, hard and mislabeled samples) and every seed, the same base model is fine-tuned
once per policy with ``GEKOTrainer`` (same optimizer, batch size, LR, warmup, epochs, eval after
every epoch); only the sample selection differs:

* ``uniform``: every sample once per epoch (full data);
* ``geko_seeds``: GEKO with the seeds' exact settings (``GEKO_SEEDS``, draws with replacement);
* ``geko``: GEKO with the defaults this project ships (``GEKO_DEFAULT``: balanced thresholds, no
  curriculum, Q learning rate 0.3; plans without replacement, the trainer's default);
* ``infobatch``: InfoBatch-style (drop below-mean-loss samples with p=0.5, rescale the kept ones
  by 2, full data in the last 12.5% of epochs);
* ``random_subset``: a uniformly random subset each epoch, sized so that its total compute equals
  the ``geko`` run's of the same seed.

Reported per task and policy: sample passes trained, wall time, final eval metric (mean and spread
over seeds), and the sample passes each needs to reach uniform's final quality (within 0.5 points
of accuracy, or 1% of eval loss, as in DESIGN section 5), evaluated after every epoch.

Run from the repository root::

    python benchmarks/bench_training.py                       # 3 tasks x 5 policies x 3 seeds
    python benchmarks/bench_training.py --tasks clusters --seeds 0 --policies uniform geko
    python benchmarks/bench_training.py --variant "q03:preset=seeds,q_value_lr=0.3"   # explore settings
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geko_state import PRESETS, GEKOConfig
from geko_state.selection import SelectionConfig
from geko_torch import GEKOTrainer
from geko_torch.tasks import TASKS, Metric, TaskData, build_task
from geko_torch.trainer import DEFAULT_CONFIG


@dataclass(frozen=True)
class Policy:
    """A selection policy as the trainer runs it: GEKO settings, training-args overrides, and
    whether its budget is matched to the ``geko`` run's compute."""

    name: str
    config: GEKOConfig
    args: dict[str, Any] = field(default_factory=dict)
    match_compute_of: str | None = None


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("uniform", DEFAULT_CONFIG, {"selection": "uniform"}),
        Policy("geko_seeds", PRESETS["seeds"], {"selection": "geko", "replacement": True}),
        # The trainer's defaults: GEKO_DEFAULT, plans without replacement.
        Policy("geko", DEFAULT_CONFIG, {"selection": "geko"}),
        Policy("infobatch", DEFAULT_CONFIG, {"selection": "infobatch"}),
        Policy("random_subset", DEFAULT_CONFIG, {"selection": "random_subset"}, match_compute_of="geko"),
    )
}

_ARG_KEYS = {"replacement", "budget"}
_SELECTION_KEYS = {"recheck_fraction", "anneal_fraction", "prune_probability"}


def parse_variant(text: str) -> Policy:
    """``NAME:key=value,...``: ``preset=`` a preset name, GEKOConfig fields, ``replacement``,
    ``budget``, ``curriculum``, and GEKO selection options (``recheck_fraction``, ``anneal_fraction``)."""
    name, _, spec = text.partition(":")
    cfg = PRESETS["seeds"]
    changes: dict[str, Any] = {}
    args: dict[str, Any] = {}
    selection: dict[str, Any] = {"policy": "geko"}
    for part in filter(None, spec.split(",")):
        key, _, raw = part.partition("=")
        value: Any = {"true": True, "false": False, "on": True, "off": False}.get(raw.lower(), raw)
        if isinstance(value, str):
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    pass
        if key == "preset":
            cfg = PRESETS[str(value)]
        elif key == "curriculum":
            changes["use_curriculum"] = bool(value)
        elif key == "weights":
            changes["bucket_weights"] = tuple(float(w) for w in str(raw).split("/"))
        elif key in _ARG_KEYS:
            args[key] = value
        elif key in _SELECTION_KEYS:
            selection[key] = value
        else:
            changes[key] = value
    args["selection"] = SelectionConfig(**selection)
    return Policy(name, cfg.replace(**changes), args)


# ---------------------------------------------------------------------- one run
def run_policy(data: TaskData, policy: Policy, seed: int, out: Path, budget: Any = None) -> dict[str, Any]:
    """Fine-tune a copy of the task's base model under ``policy``; the per-epoch curve and totals."""
    model = copy.deepcopy(data.model)
    overrides = dict(policy.args)
    if budget is not None:
        overrides["budget"] = budget
    args = data.training_args(out, seed=seed, disable_progress_bar=True, plots=False, **overrides)
    trainer = GEKOTrainer(model, data.train, eval_dataset=data.eval, config=policy.config, args=args)
    t0 = time.perf_counter()
    metrics = trainer.train()
    wall = time.perf_counter() - t0
    passes, curve = 0, []
    for rec in trainer.log_history:
        if "samples_trained" in rec:
            passes += int(rec["samples_trained"])
        elif data.metric.key in rec:
            curve.append({"passes": passes, "value": float(rec[data.metric.key]),
                          "eval_loss": float(rec["eval_loss"]), "eval_accuracy": float(rec["eval_accuracy"])})
    kinds_frozen = {}
    bucket = trainer.store.column("bucket")
    for k, label in ((0, "easy"), (1, "hard"), (2, "mislabeled")):
        m = data.kinds == k
        kinds_frozen[label] = float((bucket[m] == 0).mean()) if m.any() else float("nan")
    trainer.close()
    return {
        "policy": policy.name, "seed": seed, "passes": passes, "full_passes": len(data.train) * data.epochs,
        "wall_s": wall, "final": curve[-1]["value"], "curve": curve,
        "samples_mastered": metrics["samples_mastered"], "frozen_share_by_kind": kinds_frozen,
    }


def passes_to_reach(curve: list[dict[str, Any]], metric: Metric, target: float) -> float:
    """Sample passes at the first eval that reaches ``target`` (NaN when never reached)."""
    for point in curve:
        if metric.reached(point["value"], target):
            return float(point["passes"])
    return float("nan")


# ---------------------------------------------------------------------- summary
def _mean_sd(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(task: str, metric: Metric, runs: list[dict[str, Any]], policies: list[str]) -> dict[str, Any]:
    by = {(r["policy"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    out: dict[str, Any] = {}
    for name in policies:
        rs = [by[(name, s)] for s in seeds if (name, s) in by]
        reach, saving = [], []
        for r in rs:
            uni = by.get(("uniform", r["seed"]))
            if uni is None:
                continue
            target = uni["final"]
            mine = passes_to_reach(r["curve"], metric, target)
            ref = passes_to_reach(uni["curve"], metric, target)
            reach.append(mine)
            saving.append(1 - mine / ref if not math.isnan(mine) else float("nan"))
        fm, fs = _mean_sd([r["final"] for r in rs])
        pm, _ = _mean_sd([r["passes"] / r["full_passes"] for r in rs])
        rm, rsd = _mean_sd(reach)
        sm, ssd = _mean_sd(saving)
        out[name] = {
            "seeds": len(rs), "final_mean": fm, "final_sd": fs, "passes_share": pm,
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "passes_to_uniform_quality_mean": rm, "passes_to_uniform_quality_sd": rsd,
            "reached_uniform_quality": sum(not math.isnan(x) for x in reach),
            "saving_at_uniform_quality_mean": sm, "saving_at_uniform_quality_sd": ssd,
        }
    return {"task": task, "metric": metric.key, "higher_is_better": metric.higher_is_better, "policies": out}


def markdown(summaries: list[dict[str, Any]], n_full: dict[str, int]) -> str:
    lines = [
        "| task (metric) | policy | sample passes (share of uniform) | final metric, mean ± sd | "
        "reached uniform's quality | passes to uniform's quality (share of uniform's) | wall s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        fmt = "{:.1%}" if s["metric"] == "eval_accuracy" else "{:.4f}"
        for name, p in s["policies"].items():
            final = f"{fmt.format(p['final_mean'])} ± {fmt.format(p['final_sd'])}"
            if p["reached_uniform_quality"]:
                saving = 1 - p["saving_at_uniform_quality_mean"] if not math.isnan(p["saving_at_uniform_quality_mean"]) else float("nan")
                reach = f"{p['passes_to_uniform_quality_mean'] / n_full[s['task']]:.2f} N ({saving:.0%} ± {p['saving_at_uniform_quality_sd']:.0%})"
            else:
                reach = "never"
            lines.append(
                f"| {s['task']} ({s['metric'].replace('eval_', '')}) | {name} | {p['passes_share']:.0%} | {final} | "
                f"{p['reached_uniform_quality']}/{p['seeds']} | {reach} | {p['wall_s_median']:.1f} |"
            )
    return "\n".join(lines)


def plot(summaries_runs: dict[str, list[dict[str, Any]]], metrics: dict[str, Metric], n_full: dict[str, int],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summaries_runs)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        runs = summaries_runs[task]
        for i, name in enumerate(dict.fromkeys(r["policy"] for r in runs)):
            rs = [r for r in runs if r["policy"] == name]
            for j, r in enumerate(rs):
                xs = [0.0] + [p["passes"] / n_full[task] for p in r["curve"]]
                ys = [float("nan")] + [p["value"] for p in r["curve"]]
                ax.plot(xs[1:], ys[1:], color=f"C{i}", alpha=0.35 if len(rs) > 1 else 1.0, lw=1,
                        marker="o", ms=2.5, label=name if j == 0 else None)
        m = metrics[task]
        ax.set_title(f"{task}")
        ax.set_xlabel("sample passes trained (x N)")
        ax.set_ylabel(m.key.replace("_", " ") + (" (higher is better)" if m.higher_is_better else " (lower is better)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Eval quality against sample passes (one line per seed)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--variant", action="append", default=[], help="extra GEKO variant NAME:key=value,...")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    policies = [POLICIES[n] for n in a.policies] + [parse_variant(v) for v in a.variant]
    # Compute-matched baselines run after the run they match.
    policies.sort(key=lambda pol: pol.match_compute_of is not None)

    all_runs: dict[str, list[dict[str, Any]]] = {}
    summaries, metrics, n_full = [], {}, {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for task in a.tasks:
            runs: list[dict[str, Any]] = []
            for seed in a.seeds:
                data = build_task(task, seed=seed)
                metrics[task], n_full[task] = data.metric, len(data.train)
                done: dict[str, dict[str, Any]] = {}
                for pol in policies:
                    budget = None
                    if pol.match_compute_of:
                        ref = done.get(pol.match_compute_of)
                        if ref is None:
                            continue
                        budget = ref["passes"] / ref["full_passes"]
                    r = run_policy(data, pol, seed, Path(tmp) / f"{task}-{seed}-{pol.name}", budget)
                    done[pol.name] = r
                    runs.append(r)
                    print(f"{task:9s} seed {seed} {pol.name:14s} passes {r['passes'] / len(data.train):5.2f} N  "
                          f"final {data.metric.key} {r['final']:.4f}  wall {r['wall_s']:5.1f} s  "
                          f"frozen easy/hard/mis {r['frozen_share_by_kind']['easy']:.2f}/"
                          f"{r['frozen_share_by_kind']['hard']:.2f}/{r['frozen_share_by_kind']['mislabeled']:.2f}",
                          flush=True)
            all_runs[task] = runs
            summaries.append(summarise(task, data.metric, runs, [pol.name for pol in policies]))
    table = markdown(summaries, n_full)
    print()
    print(table)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": "python benchmarks/bench_training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "torch": torch.__version__, "threads": a.threads},
            "policies": {pol.name: {"config": pol.config.to_dict(),
                                    "args": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in pol.args.items()},
                                    "match_compute_of": pol.match_compute_of} for pol in policies},
            "summaries": summaries, "runs": all_runs,
        }
        a.json.write_text(json.dumps(payload, indent=1, allow_nan=True))
    if a.markdown:
        a.markdown.write_text(table + "\n")
    if a.plot:
        plot(all_runs, metrics, n_full, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
