"""The engine's side of the ``geko`` command line.

Subcommands register themselves in ``COMMANDS``; ``geko_torch`` builds the full command on top of
:func:`build_parser`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from .config import PRESETS
from .errors import GekoError

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (configure(subparser), run(args) -> exit status)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, example: str):
    def deco(fn_pair):
        configure, run = fn_pair()

        def _configure(p: argparse.ArgumentParser) -> None:
            p.description = help
            p.epilog = f"example:\n  {example}"
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            configure(p)

        COMMANDS[name] = (_configure, run)
        _configure.help = help  # type: ignore[attr-defined]
        return fn_pair

    return deco


def _fmt_int(v: int) -> str:
    return f"{v:,}"


@command("inspect", "Show a state file's metadata, configuration and bucket counts.", "geko inspect runs/sim/state.arrow")
def _inspect():
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("state", type=Path, help="a state file or checkpoint (.arrow)")
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    def run(args: argparse.Namespace) -> int:
        from .store import StateStore

        with StateStore.open(args.state, mode="r") as store:
            counts = store.bucket_counts()
            info = {
                "path": str(args.state),
                "n_samples": store.n_samples,
                "epoch": store.epoch,
                "observations_total": store.observations_total,
                "skipped_nonfinite_total": store.skipped_total,
                "buckets": {b.name: c for b, c in counts.items()},
                "pruned": int(store.column("pruned").sum()),
                "config": store.config.to_dict(),
                "last_stats": store.last_stats.to_dict() if store.last_stats else None,
            }
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            return 0
        print(f"{info['path']}: {_fmt_int(info['n_samples'])} samples, {info['epoch']} epochs done, "
              f"{_fmt_int(info['observations_total'])} observations")
        n = max(info["n_samples"] - info["pruned"], 1)
        for name, c in info["buckets"].items():
            print(f"  {name:<7} {_fmt_int(c):>14}  {100 * c / n:5.1f}%")
        print(f"  {'pruned':<7} {_fmt_int(info['pruned']):>14}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
        return 0

    return configure, run


@command(
    "simulate",
    "Run the engine on a synthetic learner (easy, hard and mislabeled samples) and show how the "
    "samples trained per epoch shrink as samples freeze. No model, offline, any N.",
    "geko simulate --n 1000000 --epochs 8 --out runs/sim",
)
def _simulate():
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, default=100_000, help="number of samples (default 100000)")
        p.add_argument("--epochs", type=int, default=8, help="epochs to run (default 8)")
        p.add_argument("--preset", choices=sorted(PRESETS), default="balanced", help="GEKOConfig preset (default balanced)")
        p.add_argument("--budget", default="trainable", help="'trainable' (default), 'full', a count or a fraction")
        p.add_argument("--prune-after", type=int, default=0, help="prune samples frozen this many epochs in a row (0: never)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", type=Path, default=None, help="write the state file (and checkpoint) to this folder")

    def run(args: argparse.Namespace) -> int:
        from tqdm import tqdm

        from .planning import parse_budget
        from .simulate import SyntheticTask, simulate
        from .store import StateStore

        budget = args.budget
        for conv in (int, float):
            try:
                budget = conv(args.budget)
                break
            except ValueError:
                continue
        parse_budget(budget)
        config = PRESETS[args.preset].replace(prune_frozen_after=args.prune_after, log_bucket_stats=False)
        path = None
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / "state.arrow"
        store = StateStore.create(args.n, path, config, overwrite=True)
        t0 = time.perf_counter()
        rows = []
        header = f"{'epoch':>5} {'trained':>12} {'FREEZE':>7} {'LIGHT':>7} {'FOCUS':>7} {'HARD':>7} {'pruned':>7} {'acc':>6}"
        with tqdm(total=args.epochs, desc="simulate", unit="epoch", file=sys.stderr) as bar:
            for r in simulate(store, args.epochs, SyntheticTask(seed=args.seed), seed=args.seed, budget=budget):
                rows.append(r)
                bar.update(1)
        print(header)
        for r in rows:
            s = r.stats
            ratio = s.ratios
            print(f"{r.epoch:>5} {_fmt_int(r.trained):>12} "
                  + " ".join(f"{100 * ratio[b]:6.1f}%" for b in ratio)
                  + f" {_fmt_int(s.pruned):>7} {100 * s.accuracy:5.1f}%")
        trained = sum(r.trained for r in rows)
        full = args.n * args.epochs
        print(f"sample passes: {_fmt_int(trained)} of {_fmt_int(full)} for uniform full-data epochs "
              f"-> {100 * (1 - trained / full):.1f}% compute saved  ({time.perf_counter() - t0:.1f} s)")
        if path is not None:
            store.flush()
            ckpt = store.checkpoint(args.out / "checkpoint.arrow")
            print(f"state: {path}  checkpoint: {ckpt}\ntry: geko inspect {path}")
        store.close()
        return 0

    return configure, run


def build_parser(prog: str = "geko") -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="GEKO: per-sample learning state for fine-tuning. Skip what the model already "
        "knows, draw more of what it gets confidently wrong.",
        epilog="example:\n  geko simulate --n 1000000 --epochs 8 --out runs/sim\n  geko inspect runs/sim/state.arrow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=configure.help))  # type: ignore[attr-defined]
    return parser, sub


def main(argv: list[str] | None = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _, run = COMMANDS[args.command]
    try:
        return run(args)
    except GekoError as e:
        print(f"geko {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
