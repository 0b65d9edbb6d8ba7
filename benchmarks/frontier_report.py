#!/usr/bin/env python3
"""The frontier's README table and plots, generated from ``benchmarks/results/frontier*.json``.

    python benchmarks/frontier_report.py                        # the files README.md's block names
    python benchmarks/frontier_report.py --json benchmarks/results/frontier_quick.json --no-readme

Writes one PNG per task and noise rate next to the JSON (``<file>_<task>_noise<pct>.png``:
quality against compute, 95% intervals, one line per policy) and replaces the block between
``<!-- frontier:begin -->`` and ``<!-- frontier:end -->`` in README.md with :func:`table`'s output;
``tests/test_result_tables.py`` checks that block against the JSON, so no figure is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- frontier:begin -->", "<!-- frontier:end -->"


def fmt_value(value: float | None, accuracy: bool, signed: bool = False) -> str:
    """A table cell: accuracy as a percentage, a loss to 4 decimals, '–' for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if accuracy:
        return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}%"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def plus_minus(mean: float | None, ci: float | None, accuracy: bool, signed: bool = False) -> str:
    """``mean ± ci`` as :func:`fmt_value` writes them; the mean alone without an interval."""
    text = fmt_value(mean, accuracy, signed)
    if ci is None or math.isnan(ci):
        return text
    return f"{text} ± {fmt_value(ci, accuracy).rstrip('%')}"


def table(payload: dict[str, Any]) -> str:
    """Markdown: per task and noise rate, each policy's compute, quality, compute at the best
    uniform quality, and quality against RS2 at equal compute."""
    lines = []
    for res in payload["results"]:
        acc = res["metric"] == "eval_accuracy"
        s = res["summary"]
        what = "accuracy" if acc else "eval loss"
        unit = "" if acc else " (lower is better; vs RS2: RS2's loss minus the policy's)"
        seeds = len(res["seeds"])
        lines += [
            f"**{res['task']}, {res['noise']:.0%} label noise** ({what}{unit}; {seeds} seed{'s' * (seeds > 1)}, "
            f"N = {res['n_train']}, Emax = {res['emax']}; best uniform {fmt_value(s['target'], acc)}, cheapest uniform "
            f"reaching it: {s['cheapest_uniform']})",
            "",
            "| policy | compute (× N·Emax) | final quality | reaches best uniform | compute vs cheapest uniform there "
            "| vs RS2 at equal compute | train wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, p in s["policies"].items():
            share = p["compute_share_at_target"]
            lines.append(
                f"| {name} | {p['compute_share_mean']:.2f} | {plus_minus(p['final_mean'], p['final_ci95'], acc)} | "
                f"{'yes' if p['reaches_target'] else 'no'} | {'–' if share is None else f'{share:.0%}'} | "
                f"{plus_minus(p['vs_rs2_mean'], p['vs_rs2_ci95'], acc, signed=True)} | {p['train_wall_s_median']:.0f} |"
            )
        lines.append("")
        lines += savings_table(res)
        lines += stop_table(res)
    return "\n".join(lines).rstrip() + "\n"


# Families that train every sample each epoch (until a stop) or a random share fixed in advance: when
# their savings start says nothing about selection.
_FIXED_SHARE = ("uniform", "rs2", "random_subset", "uniform_stop")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def savings_table(res: dict[str, Any]) -> list[str]:
    """How early each selecting policy saves: per epoch, the share of the N samples it did not
    train (mean over seeds), for the policies that saved any passes. No rows when none did."""
    n, emax = res["n_train"], res["emax"]
    per_epoch: dict[str, list[list[int]]] = {}
    for r in res["runs"]:
        if r["family"] in _FIXED_SHARE or not r.get("curve"):
            continue
        cum = [c["passes"] for c in r["curve"]]
        per_epoch.setdefault(r["policy"], []).append([b - a for a, b in zip([0, *cum], cum)])
    saving = {name: runs for name, runs in per_epoch.items() if any(sum(x) < n * emax for x in runs)}
    if not saving:
        return []
    lines = ["Passes saved per epoch (the share of the N samples not trained in that epoch, mean over seeds; "
             "'–': the run had stopped):", "",
             "| policy | " + " | ".join(f"epoch {e}" for e in range(1, emax + 1)) + " |",
             "|---|" + "---|" * emax]
    for name, runs in saving.items():
        cells = []
        for e in range(emax):
            done = [x[e] for x in runs if len(x) > e]
            cells.append(fmt_value(1 - _mean(done) / n, True) if len(done) == len(runs) else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def stop_table(res: dict[str, Any]) -> list[str]:
    """For a result with ``*_stop`` runs: the epochs each trained, and, per epoch, the learning
    progress of the longest uniform run beside the final quality of uniform training for that many
    epochs (where the rule fired against where uniform quality stops rising). No rows otherwise."""
    runs = res["runs"]
    stops = sorted({r["policy"] for r in runs if r["policy"].endswith("_stop")})
    longest = f"uniform-e{res['emax']}"
    if not stops:
        return []
    acc = res["metric"] == "eval_accuracy"
    lines = [f"Epochs trained by the plateau-stop runs (of Emax = {res['emax']}; by seed "
             f"{', '.join(str(x) for x in res['seeds'])}): "
             + "; ".join(f"{name} " + ", ".join(str(len(r['progress'])) for r in runs if r['policy'] == name)
                         for name in stops) + ".", ""]
    trace = [r for r in runs if r["policy"] == longest and r.get("progress")]
    if not trace:
        return lines
    lines += [f"Per epoch: the learning progress of {longest} (mean over seeds; the stop rule reads "
              "`improving_share`) and the final quality of uniform training for that many epochs:", "",
              "| epoch | improving share | open share | suspects | uniform-e{epoch} final |", "|---|---|---|---|---|"]
    for e in range(1, res["emax"] + 1):
        rows = [r["progress"][e - 1] for r in trace if len(r["progress"]) >= e]
        finals = [r["final"] for r in runs if r["policy"] == f"uniform-e{e}"]
        share = [x["improving_share"] for x in rows if x["improving_share"] is not None]
        open_ = [x["open_share"] for x in rows if x["open_share"] is not None]
        lines.append(f"| {e} | {fmt_value(_mean(share), True)} | {fmt_value(_mean(open_), True)} | "
                     f"{_mean([x['suspects'] for x in rows]):.0f} | {fmt_value(_mean(finals), acc)} |")
    lines.append("")
    return lines


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = res["metric"] == "eval_accuracy"
    scale = 100.0 if acc else 1.0
    n_full = res["n_train"] * res["emax"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    families = list(dict.fromkeys(p["family"] for p in res["summary"]["policies"].values()))
    for i, fam in enumerate(families):
        pts = sorted((p["compute_mean"] / n_full * res["emax"], p["final_mean"] * scale,
                      (p["final_ci95"] if not math.isnan(p["final_ci95"]) else 0.0) * scale)
                     for p in res["summary"]["policies"].values() if p["family"] == fam)
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, color=f"C{i}", marker="o", ms=4, capsize=3, lw=1.2, label=fam)
    if res["summary"]["target"] is not None:
        ax.axhline(res["summary"]["target"] * scale, color="grey", ls=":", lw=1, label="best uniform")
    ax.set_xlabel("compute (sample passes ÷ N: epochs' worth)")
    ax.set_ylabel(("eval accuracy (%)" if acc else "eval loss") + (" ↑" if acc else " ↓"))
    ax.set_title(f"{res['task']}, {res['noise']:.0%} label noise ({len(res['seeds'])} seed(s), 95% intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def png_name(res: dict[str, Any], stem: str) -> str:
    """``<result file>_<task>_noise<pct>.png``: one per task and noise rate of a result file."""
    return f"{stem}_{res['task']}_noise{round(100 * res['noise'])}.png"


@dataclass(frozen=True)
class Block:
    """A README block generated from result files: its markers, the script that writes it, and the
    tables of one result file (benchmarks/noise_report.py has its own)."""

    begin: str
    end: str
    script: str
    table: Callable[[dict[str, Any]], str]


FRONTIER = Block(BEGIN, END, "frontier_report.py", table)


def readme_block(paths: list[Path], block: Block = FRONTIER) -> str:
    """The README's block: each result file's command, then its tables."""
    parts = [block.begin, f"Generated by `python benchmarks/{block.script}` from the result files below.", ""]
    for path in paths:
        payload = json.loads(path.read_text())
        m = payload["machine"]
        parts += [f"From `{path.resolve().relative_to(ROOT)}` (`{payload['command']}`: {payload['total_s'] / 60:.0f} min, "
                  f"{m['cpus']} CPUs, {m['device']}, {m['jobs']} run(s) at a time"
                  + "".join(f"; then `{c}`" for c in payload.get("retrain_commands", []) + payload.get("merge_commands", []))
                  + (f", {payload['retrain_s'] / 60:.0f} min" if "retrain_s" in payload else "") + "):",
                  "", block.table(payload)]
    return "\n".join(parts) + block.end


def readme_sources(readme: Path = ROOT / "README.md", block: Block = FRONTIER) -> list[Path]:
    """The result files the README's block was generated from."""
    text = readme.read_text()
    found = text[text.find(block.begin):text.find(block.end)]
    return [ROOT / rel for rel in re.findall(r"^From `([^`]+\.json)`", found, flags=re.M)]


def update_readme(paths: list[Path], readme: Path = ROOT / "README.md", block: Block = FRONTIER) -> None:
    text = readme.read_text()
    start, end = text.find(block.begin), text.find(block.end)
    if start < 0 or end < 0:
        raise SystemExit(f"{readme} has no {block.begin} ... {block.end} block")
    readme.write_text(text[:start] + readme_block(paths, block) + text[end + len(block.end):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, nargs="+", default=None,
                   help="result files (default: those the README's block names, else frontier.json / frontier_quick.json)")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    paths = a.json or readme_sources() or [q for q in (RESULTS / "frontier.json", RESULTS / "frontier_quick.json")
                                           if q.is_file()][:1]
    missing = [str(q) for q in paths if not q.is_file()]
    if not paths or missing:
        print(f"no frontier results {missing or ''}: run python benchmarks/bench_frontier.py [--quick] first",
              file=sys.stderr)
        return 2
    for path in paths:
        payload = json.loads(path.read_text())
        if not a.no_plots:
            for res in payload["results"]:
                plot(res, path.parent / png_name(res, path.stem))
        print(table(payload))
    if not a.no_readme:
        update_readme(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
