#!/usr/bin/env python3
"""The label-noise README block, generated from ``benchmarks/results/noise*.json`` (bench_noise.py).

    python benchmarks/noise_report.py                        # the files README.md's block names
    python benchmarks/noise_report.py --json benchmarks/results/noise_supersense_20_e6.json --no-readme

Replaces the block between ``<!-- noise:begin -->`` and ``<!-- noise:end -->`` in README.md with
:func:`table`'s output per result file; ``tests/test_result_tables.py`` checks that block against
the JSON, so no figure is typed by hand. Needs neither cleanlab nor torch.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from frontier_report import RESULTS, Block, fmt_value, plus_minus, readme_sources, update_readme


def _pm3(mean: float | None, ci: float | None) -> str:
    """A figure in [0, 1] with three decimals (AUROC), ± its interval when there is one."""
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if ci is None or math.isnan(ci) else f"{mean:.3f} ± {ci:.3f}"


def _cut(d: dict[str, Any]) -> str:
    if d["cut_rule"] is None:
        return "–"
    return (f"{d['cut_rule']}: {d['cut_size_mean']:.0f} flagged, P {fmt_value(d['cut_precision_mean'], True)}, "
            f"R {fmt_value(d['cut_recall_mean'], True)}")


def detector_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| detector | extra training passes (× N·Emax) | extra forward passes (× N) | P@k | R@k | F1@k | AUROC "
        "| own cut (mean flagged, P, R) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in res["summary"]["detectors"].items():
        lines.append(
            f"| {name} | {d['extra_passes_share_mean']:.2f} | {d['extra_forward_share_mean']:.2f} | "
            f"{plus_minus(d['p_at_k_mean'], d['p_at_k_ci95'], True)} | {plus_minus(d['r_at_k_mean'], d['r_at_k_ci95'], True)} | "
            f"{plus_minus(d['f1_at_k_mean'], d['f1_at_k_ci95'], True)} | {_pm3(d['auroc_mean'], d['auroc_ci95'])} | "
            f"{_cut(d)} |")
    return lines


def downstream_table(res: dict[str, Any]) -> list[str]:
    acc = res["metric"] == "eval_accuracy"
    what = "eval accuracy" if acc else "eval loss"
    lines = [
        f"Retrained from the pretrained weights (uniform, {res['emax']} epoch{'s' * (res['emax'] > 1)}) on each "
        f"training set; {what}, and the difference to all data paired by seed (positive = better). A set ending "
        "in `_equal_steps` is padded back to N rows with a seeded draw of its own samples, so it takes as many "
        "optimizer steps as all data; the others take fewer. A set ending in `_e{E}` was trained for E epochs and "
        "is compared with `all_e{E}`:",
        "",
        f"| training set | removed (corrupted among them) | {what} | vs all data |",
        "|---|---|---|---|",
    ]
    for name, d in res["summary"]["downstream"].items():
        vs = "–" if re.fullmatch(r"all(_e\d+)?", name) else plus_minus(d["vs_all_mean"], d["vs_all_ci95"], acc, signed=True)
        lines.append(f"| {name} | {d['removed_mean']:.0f} ({d['removed_corrupted_mean']:.0f}) | "
                     f"{plus_minus(d['final_mean'], d['final_ci95'], acc)} | {vs} |")
    return lines


def table(payload: dict[str, Any]) -> str:
    """Markdown: per task and noise rate, each detector's extra compute, top-k figures, AUROC and
    own cut; then, for classification, the downstream retraining."""
    lines = []
    for res in payload["results"]:
        seeds = len(res["seeds"])
        lines += [
            f"**{res['task']}, {res['noise']:.0%} label noise** (k = {res['k']} corrupted of N = {res['n_train']}, "
            f"Emax = {res['emax']}; {seeds} seed{'s' * (seeds > 1)}; mean ± 95% interval over seeds)",
            "",
            *detector_table(res),
            "",
        ]
        if res["note"]:
            lines += [f"*{res['note']}.*", ""]
        if res["summary"]["downstream"]:
            lines += [*downstream_table(res), ""]
    return "\n".join(lines).rstrip() + "\n"


NOISE = Block("<!-- noise:begin -->", "<!-- noise:end -->", "noise_report.py", table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, nargs="+", default=None,
                   help="result files (default: those the README's block names, else noise.json / noise_quick.json)")
    p.add_argument("--no-readme", action="store_true")
    a = p.parse_args(argv)
    paths = a.json or readme_sources(block=NOISE) or [q for q in (RESULTS / "noise.json", RESULTS / "noise_quick.json")
                                                      if q.is_file()][:1]
    missing = [str(q) for q in paths if not q.is_file()]
    if not paths or missing:
        print(f"no noise results {missing or ''}: run python benchmarks/bench_noise.py [--quick] first", file=sys.stderr)
        return 2
    for path in paths:
        print(table(json.loads(path.read_text())))
    if not a.no_readme:
        update_readme(paths, block=NOISE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
