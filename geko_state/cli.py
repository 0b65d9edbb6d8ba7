"""The engine's side of the ``geko`` command line.

Subcommands register themselves in ``COMMANDS``; ``geko_torch`` builds the full command on top of
:func:`build_parser`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

from .config import PRESETS
from .errors import GekoError, InputError
from .validate import check_int, check_number, int_form, number_form

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (configure(subparser), run(args) -> exit status)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, example: str):
    def deco(fn_pair):
        configure, run = fn_pair()

        def _configure(p: argparse.ArgumentParser) -> None:
            p.description = textwrap.fill(help, 88)
            p.epilog = f"example:\n  {example}"
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            configure(p)

        COMMANDS[name] = (_configure, run)
        # `geko --help` lists each command with its first sentence; `geko NAME --help` has it all.
        _configure.help = help.split(". ")[0].rstrip(".") + "."  # type: ignore[attr-defined]
        return fn_pair

    return deco


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low`` (argparse names the option in its error)."""
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {int_form(low)}, got {text!r}") from None
        try:
            return check_int(v, "value", low)
        except InputError:
            raise argparse.ArgumentTypeError(f"expected {int_form(low)}, got {v}") from None

    conv.__name__ = f"int>={low}"
    return conv


def number_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
              high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number within the bounds (see :func:`geko_state.validate.check_number`)."""
    form = number_form(low, high, low_open=low_open, high_open=high_open)

    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {form}, got {text!r}") from None
        try:
            return check_number(v, "value", low, high, low_open=low_open, high_open=high_open)
        except InputError:
            finite = "" if math.isfinite(v) else "finite "
            raise argparse.ArgumentTypeError(f"expected a {finite}number {form}, got {text!r}") from None

    conv.__name__ = f"number {form}"
    return conv


def _fmt_int(v: int) -> str:
    return f"{v:,}"


@command("inspect", "Show a state file's metadata, configuration and bucket counts.", "geko inspect runs/sim/state.arrow")
def _inspect():
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("state", type=Path, help="a state file or checkpoint (.arrow), or a run directory")
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    def run(args: argparse.Namespace) -> int:
        from .run import state_file
        from .store import StateStore

        with StateStore.open(state_file(args.state), mode="r") as store:
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
        p.add_argument("--n", type=int_at_least(1), default=100_000, help="number of samples (default 100000)")
        p.add_argument("--epochs", type=int_at_least(1), default=8, help="epochs to run (default 8)")
        p.add_argument("--preset", choices=sorted(PRESETS), default="balanced", help="GEKOConfig preset (default balanced)")
        p.add_argument("--budget", default="trainable", help="'trainable' (default), 'full', a count or a fraction")
        p.add_argument("--prune-after", type=int_at_least(0), default=0,
                       help="prune samples frozen this many epochs in a row (0: never)")
        p.add_argument("--seed", type=int_at_least(0), default=0)
        p.add_argument("--out", type=Path, default=None,
                       help="run directory: state file, checkpoint, history and epoch summary")
        p.add_argument("--history-every", type=int_at_least(1), default=1,
                       help="with --out: per-sample history snapshot every this many epochs (default 1)")
        p.add_argument("--history-changed-only", action="store_true",
                       help="with --out: snapshots hold only the samples whose bucket changed")

    def run(args: argparse.Namespace) -> int:
        from tqdm import tqdm

        from .errors import InputError
        from .history import HistoryConfig, HistoryWriter
        from .planning import parse_budget_text
        from .run import Run
        from .simulate import SyntheticTask, simulate
        from .store import StateStore

        # Everything that can refuse the input runs before anything is written.
        try:
            budget = parse_budget_text(args.budget)
        except InputError as e:
            raise InputError(f"--budget {args.budget!r}: {e}") from None
        config = PRESETS[args.preset].replace(prune_frozen_after=args.prune_after, log_bucket_stats=False)
        cfg = HistoryConfig(every=args.history_every, changed_only=args.history_changed_only)
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise InputError(f"--out {args.out}: exists and is not a directory; expected a run directory")
        path, writer = None, None
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / "state.arrow"
            # A new simulation replaces the directory's state, so its old history goes too.
            run_dir = Run(args.out)
            for old in [run_dir.epochs_path, *run_dir.history_files().values()]:
                old.unlink(missing_ok=True)
            writer = HistoryWriter(args.out, cfg)
        store = StateStore.create(args.n, path, config, overwrite=True)
        t0 = time.perf_counter()
        rows = []
        header = f"{'epoch':>5} {'trained':>12} {'FREEZE':>7} {'LIGHT':>7} {'FOCUS':>7} {'HARD':>7} {'pruned':>7} {'acc':>6}"
        with tqdm(total=args.epochs, desc="simulate", unit="epoch", file=sys.stderr) as bar:
            for r in simulate(store, args.epochs, SyntheticTask(seed=args.seed), seed=args.seed, budget=budget):
                if writer is not None:
                    writer.record(store, r.stats, samples_trained=r.trained,
                                  phase=_phase_label(store, r.epoch - 1, args.epochs))
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
            print(f"state: {path}  checkpoint: {ckpt}  history: {args.out / 'history'}  "
                  f"summary: {args.out / 'epochs.parquet'}")
            print(f"try: geko inspect {path}\n     geko report {args.out}\n"
                  f"     geko sql {args.out} \"SELECT bucket, count(*) FROM samples GROUP BY bucket\"")
        store.close()
        return 0

    return configure, run


def _phase_label(store: StateStore, epoch: int, total_epochs: int) -> str | None:
    """Curriculum phase(s) an epoch was drawn in, e.g. ``"ASCENT>PEAK"``; None without curriculum."""
    names: list[str] = []
    for seg in store.weight_segments(total_epochs=total_epochs, epoch=epoch):
        if seg.phase is not None and seg.phase.name not in names:
            names.append(seg.phase.name)
    return ">".join(names) or None


def _tables(items: list[str]) -> dict[str, str]:
    """``--table NAME=FILE`` options as a dict (InputError for one without ``=``)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--table {item!r}: expected NAME=FILE, e.g. kinds=runs/demo/sample_kinds.parquet")
        out[name] = path
    return out


@command(
    "sql",
    "Query a run directory with DuckDB SQL. Views: samples (current state, one row per sample, "
    "read in place), history (per-sample snapshots: epoch, sample_id, bucket, q_value, confidence, "
    "last_loss, correct, times_seen, pruned, aum, wrong_streak), epochs (one summary row per epoch), "
    "transitions (sample_id, epoch, from_bucket, to_bucket), transition_counts (epoch, from_bucket, "
    "to_bucket, count) and suspects (sample_id, score, rank, in_cut, aum, wrong_streak, times_seen, "
    "bucket; WHERE in_cut: the default suspects). One read-only statement (SELECT, WITH, DESCRIBE, SUMMARIZE, SHOW) on a locked "
    "connection: no file, network or extension access; --unsafe gives full DuckDB. A query DuckDB "
    "refuses prints DuckDB's message and exits with status 2.",
    'geko sql runs/sim "SELECT epoch, to_bucket, count(*) FROM transitions GROUP BY ALL ORDER BY ALL"',
)
def _sql():
    def configure(p: argparse.ArgumentParser) -> None:
        from .tables import RESULT_FORMATS

        p.add_argument("run_dir", type=Path, help="run directory (state.arrow, history/, epochs.parquet)")
        p.add_argument("query", help="the SQL statement")
        p.add_argument("--format", choices=RESULT_FORMATS, default="table",
                       help="output format (default table; parquet needs --output)")
        p.add_argument("--output", type=Path, default=None, help="write the result to this file instead of stdout")
        p.add_argument("--table", action="append", default=[], metavar="NAME=FILE",
                       help="also query FILE (Parquet, CSV or Arrow) as the table NAME, e.g. labels to join on "
                            "sample_id; repeatable")
        p.add_argument("--unsafe", action="store_true",
                       help="full DuckDB: any statement, file and extension access (COPY, ATTACH, read_csv, "
                            "INSTALL, ...); default: one read-only statement over the run's views only")

    def run(args: argparse.Namespace) -> int:
        from .errors import InputError
        from .sql import QueryError, query
        from .tables import TEXT_FORMATS, render_text, write_result

        if args.format not in TEXT_FORMATS and args.output is None:
            raise InputError(f"--format {args.format} writes a binary file: give --output FILE")
        try:
            df = query(args.run_dir, args.query, unsafe=args.unsafe, tables=_tables(args.table))
        except QueryError as e:
            print(str(e), file=sys.stderr)
            return 2
        if args.output is not None:
            write_result(df, args.output, args.format)
            print(f"{df.height:,} rows -> {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(render_text(df, args.format).rstrip("\n") + "\n")
        return 0

    return configure, run


def _suspect_options(p: argparse.ArgumentParser, score_help: str) -> None:
    """--top, --threshold and --score: which samples count as suspects (a SuspectsConfig)."""
    from .noise import DEFAULT_NOISE_SCORE, NOISE_SCORES

    scores = "; ".join(f"{s.name}: {s.description}"
                       + (f" (cut: {s.cut_text})" if s.cut_text is not None else " (no cut)")
                       for s in NOISE_SCORES.values())
    p.add_argument("--top", type=int_at_least(1), default=None, metavar="K",
                   help="the K most suspicious samples (with --threshold: of those above it)")
    p.add_argument("--threshold", type=number_in(), default=None, metavar="T",
                   help="samples whose score is above T (default: the score's own cut)")
    p.add_argument("--score", choices=sorted(NOISE_SCORES), default=None,
                   help=f"{score_help} (default {DEFAULT_NOISE_SCORE}): {scores}")


def _suspects_config(args: argparse.Namespace):
    from .noise import DEFAULT_NOISE_SCORE, SuspectsConfig

    return SuspectsConfig(score=args.score or DEFAULT_NOISE_SCORE, top=args.top, threshold=args.threshold)


@command(
    "suspects",
    "List the samples whose label is probably wrong (the noise score of docs/noise.md: by default, wrong "
    "at the last observation with the loss not going down), most suspicious first, from one ordinary "
    "training run. Prints the first rows (with --data, beside the data row of each) and writes them all "
    "to a Parquet file (sample_id, score, rank, in_cut, aum, wrong_streak, times_seen, bucket). geko export --drop-suspects leaves "
    "the same samples out of the next run's dataset.",
    "geko suspects runs/sft --top 100 --data data.jsonl",
)
def _suspects():
    def configure(p: argparse.ArgumentParser) -> None:
        from .datafiles import supported_formats
        from .suspects import SUSPECTS_FILE

        p.add_argument("run_dir", type=Path, help="run directory (or a state file)")
        _suspect_options(p, "the noise score to rank by")
        p.add_argument("--out", type=Path, default=None, metavar="FILE.parquet",
                       help=f"where to write the suspects (default RUN_DIR/{SUSPECTS_FILE})")
        p.add_argument("--data", type=Path, default=None, metavar="DATAFILE",
                       help=f"the dataset the run trained on ({supported_formats()}; row i is sample i): "
                            "show each suspect's row")
        p.add_argument("--show", type=int_at_least(1), default=20, metavar="N",
                       help="rows to print (default 20; the file holds every suspect)")

    def run(args: argparse.Namespace) -> int:
        from .run import state_file
        from .store import StateStore
        from .suspects import SUSPECTS_FILE, check_suspects_path, read_suspects, write_suspects
        from .tables import render_text

        config = _suspects_config(args)
        path = state_file(args.run_dir)
        out = check_suspects_path(args.out if args.out is not None else path.parent / SUSPECTS_FILE, "--out")
        with StateStore.open(path, mode="r") as store:
            found = read_suspects(store, config)
        # The data rows first: a dataset that is not the run's refuses before anything is written.
        shown = found.display(args.show, dataset=args.data, what="--data", align=True)
        write_suspects(found.table, out)
        print(found.summary())
        if shown.height:
            print(render_text(shown).rstrip("\n"))
        more = found.table.num_rows - shown.height
        print((f"... and {more:,} more; " if more > 0 else "") + f"all in {out}")
        return 0

    return configure, run


@command(
    "export",
    "Export what to keep for the next run: the ids of the unpruned samples in the chosen buckets "
    "(--ids-out, .txt or .parquet) and/or those rows of your dataset (--dataset, --output: Parquet, "
    "JSONL, CSV or Arrow, streamed, so datasets larger than memory work). --drop-suspects also leaves out "
    "the samples geko suspects lists (same --top, --threshold, --score): the cleaned dataset. Row i of "
    "the dataset is sample i; a dataset with another row count than the state is refused.",
    "geko export runs/sim --keep HARD,FOCUS,LIGHT --ids-out kept.txt --dataset data.jsonl --output kept.jsonl",
)
def _export():
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir", type=Path, help="run directory (or a state file)")
        p.add_argument("--keep", default="HARD,FOCUS,LIGHT",
                       help="comma-separated buckets to keep (default HARD,FOCUS,LIGHT); pruned samples never are")
        p.add_argument("--ids-out", type=Path, default=None, help="write the kept ids here (.txt or .parquet)")
        p.add_argument("--dataset", type=Path, default=None,
                       help="dataset the state was built on (.parquet, .jsonl, .csv, .arrow)")
        p.add_argument("--output", type=Path, default=None, help="where to write the kept dataset rows")
        p.add_argument("--drop-suspects", action="store_true",
                       help="also leave out the suspected mislabeled samples (geko suspects; by default those "
                            "above the score's cut)")
        _suspect_options(p, "with --drop-suspects: the noise score")

    def run(args: argparse.Namespace) -> int:
        from .datafiles import id_writer
        from .errors import InputError
        from .export import export_rows, kept_ids, parse_buckets, write_ids
        from .run import state_file
        from .store import StateStore

        if args.ids_out is None and args.dataset is None:
            raise InputError("nothing to export: give --ids-out FILE and/or --dataset FILE --output FILE")
        if (args.dataset is None) != (args.output is None):
            raise InputError("--dataset and --output go together")
        given = [flag for flag, v in (("--top", args.top), ("--threshold", args.threshold), ("--score", args.score))
                 if v is not None]
        if given and not args.drop_suspects:
            raise InputError(f"{', '.join(given)}: choose suspects to drop; add --drop-suspects")
        drop = _suspects_config(args) if args.drop_suspects else None
        keep = parse_buckets(args.keep)
        if args.ids_out is not None:
            id_writer(args.ids_out, "--ids-out")  # refuse a bad suffix before any work
        lines = []
        with StateStore.open(state_file(args.run_dir), mode="r") as store:
            ids = kept_ids(store, keep, drop_suspects=drop)
            names = ",".join(b.name for b in keep)
            dropped = ""
            if drop is not None:
                from .noise import store_suspects

                total = store_suspects(store, drop).num_rows
                left_out = kept_ids(store, keep).size - ids.size  # the other suspects were not kept anyway
                dropped = f"; dropped {left_out:,} of {total:,} suspects: {drop.describe()}"
            lines.append(f"kept {ids.size:,} of {store.n_samples:,} samples ({names}; pruned excluded{dropped})")
            # Rows first: the dataset check is the step most likely to refuse.
            if args.dataset is not None:
                rows = export_rows(store, args.dataset, args.output, keep, drop_suspects=drop)
                lines.append(f"rows: {rows:,} rows of {args.dataset} -> {args.output}")
            if args.ids_out is not None:
                write_ids(ids, args.ids_out)
                lines.append(f"ids: {args.ids_out}")
        print("\n".join(lines))
        return 0

    return configure, run


@command(
    "report",
    "Print a run's efficiency report (per-epoch buckets, samples trained against N x epochs = "
    "compute actually saved, accuracy, pruning, bucket moves, history size) and write PNG plots: "
    "bucket shares, bucket transitions, Q and loss distributions per bucket.",
    "geko report runs/sim --plots-dir runs/sim/plots",
)
def _report():
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir", type=Path, help="run directory with epochs.parquet (e.g. from geko simulate --out)")
        p.add_argument("--plots-dir", type=Path, default=None,
                       help="where to write the PNGs (default RUN_DIR/plots; without matplotlib, the default "
                            "skips the plots with a note)")
        p.add_argument("--no-plots", action="store_true", help="print the report only")

    def run(args: argparse.Namespace) -> int:
        from .report import build_report

        print(build_report(args.run_dir).format())
        if not args.no_plots:
            from .plots import MissingDependencyError, render_plots

            try:
                paths = render_plots(args.run_dir, args.plots_dir)
            except MissingDependencyError as e:
                if args.plots_dir is not None:
                    raise
                # The plain install has no matplotlib: the report is the answer, plots are extra.
                print(f"\nno plots: {e}", file=sys.stderr)
                return 0
            print("\nplots: " + "\n       ".join(str(p) for p in paths))
        return 0

    return configure, run


def build_parser(prog: str = "geko", *, configure: Collection[str] | None = None,
                 ) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``geko`` parser; ``configure`` names the commands whose options are set up (None: all).

    The others get only their one-line help, which is all ``geko --help`` shows: a command's
    options may import heavy modules (``train``'s defaults come from torch-side classes).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="GEKO: per-sample learning state for fine-tuning. Skip what the model already "
        "knows, draw more of what it gets confidently wrong.",
        epilog="example:\n  geko simulate --n 1000000 --epochs 8 --out runs/sim\n  geko inspect runs/sim/state.arrow\n"
        "  geko report runs/sim\n  geko sql runs/sim \"SELECT bucket, count(*) FROM samples GROUP BY bucket\"\n"
        "  geko export runs/sim --keep HARD,FOCUS,LIGHT --ids-out runs/sim/kept.txt\n"
        "  geko suspects runs/sft --top 100 --data data.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (setup, _) in COMMANDS.items():
        p = sub.add_parser(name, help=setup.help)  # type: ignore[attr-defined]
        if configure is None or name in configure:
            setup(p)
    return parser, sub


def main(argv: list[str] | None = None, *,
         build: Callable[..., tuple[argparse.ArgumentParser, object]] | None = None) -> int:
    """Run ``geko``; ``build`` makes the parser (geko_torch passes its fuller one) and takes
    ``configure=`` as :func:`build_parser` does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Only the command being run sets up its options, so `geko --help` and the engine's commands
    # never pay for another command's imports.
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        parser, sub = (build or build_parser)(configure=() if chosen is None else (chosen,))
    except GekoError as e:  # e.g. a command whose options need a missing optional dependency
        print(f"geko {chosen}: error: {e}", file=sys.stderr)
        return 2
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # the command's own usage, not the top-level one: that is where the flag was looked for
        owner = sub.choices.get(args.command, parser) if args.command else parser  # type: ignore[attr-defined]
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
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
