"""``geko demo``: GEKO against uniform training, side by side, on a built-in task (offline, CPU).

Registered in the engine's ``COMMANDS`` registry when imported; the work is :func:`geko_torch.demo.run_demo`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from geko_state.cli import command, int_at_least
from geko_state.errors import InputError

from .requires import require_torch

__all__: list[str] = []


@command(
    "demo",
    "GEKO against uniform training, side by side, on a built-in task (offline, CPU, about two minutes). "
    "A small model first learns a base task, then is fine-tuned twice from the same weights on easy, "
    "hard and mislabeled samples: with GEKO and with uniform full-data training. Prints the per-epoch "
    "buckets, samples trained, eval quality and the compute actually saved, and writes both runs "
    "(state, history, plots) and a comparison plot to OUT.",
    "geko demo --out runs/demo",
)
def _demo():
    def configure(p: argparse.ArgumentParser) -> None:
        require_torch("demo")
        from ..tasks import TASKS

        p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
        p.add_argument("--task", choices=sorted(TASKS), default="topics",
                       help="built-in task (default topics: tiny BERT classification); "
                            + "; ".join(f"{k}: {v.description}" for k, v in TASKS.items()))
        p.add_argument("--epochs", type=int_at_least(1), default=None, metavar="N",
                       help="fine-tuning epochs (default: the task's, 8)")
        p.add_argument("--samples", type=int_at_least(50), default=None, metavar="N",
                       help="fine-tuning samples (default: the task's: 3,000 for topics and rules, 4,000 for clusters)")
        p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of data, models and plans (default 0)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    def run(args: argparse.Namespace) -> int:
        if args.out.exists() and not args.out.is_dir():
            raise InputError(f"--out {args.out}: exists and is not a directory")
        from ..demo import format_demo, run_demo

        result = run_demo(args.out, task=args.task, seed=args.seed, epochs=args.epochs, samples=args.samples,
                          progress=not args.no_progress, say=lambda t: print(t, flush=True))
        print(format_demo(result), flush=True)
        return 0

    return configure, run
