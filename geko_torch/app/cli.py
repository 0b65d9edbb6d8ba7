"""``geko app``: the web app (gradio), registered in the ``geko`` command.

Importing this module registers the subcommand through the engine's ``@command`` registry (so
``geko_torch/cli.py`` needs one import line); :func:`add_parser` / :func:`main` serve callers that
build their own parser. gradio is imported only when the command runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geko_state.cli import command, int_at_least
from geko_state.errors import GekoError, InputError

from .guard import TOKEN_ENV, TOKEN_USER, AccessPolicy, parse_auth
from .workspace import Workspace

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "add_parser", "configure", "main", "run"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
HELP = ("Open the GEKO web app (gradio): fine-tune a local Hugging Face model on a local dataset file "
        "without code (every geko train option and GEKOConfig setting, LoRA, precision; Start, Stop with "
        "a resumable checkpoint, Resume), and watch a run live: loss curve, bucket shares, bucket moves, "
        "steps per second and ETA, compute saved, SQL over the run, suspected mislabeled samples. --run "
        "RUN_DIR opens any run directory read-only (from geko train, a GEKOTrainer script or the app). "
        "Binds to 127.0.0.1; uses files "
        "inside --workspace only; another --host needs a login (--auth or GEKO_APP_TOKEN). Needs gradio: "
        "pip install 'geko-engine[app]'.")
EXAMPLE = "geko app --port 7860    |    geko app --run runs/sft"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to serve on (default {DEFAULT_HOST}: this machine only). Any other address "
                        "exposes the app, which starts training processes and reads the files of its "
                        "workspace, to the network: it is refused unless --auth or "
                        f"{TOKEN_ENV} sets a login")
    p.add_argument("--port", type=int_at_least(1), default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--workspace", type=Path, default=None, metavar="DIR",
                   help="the only directory tree the app reads models and data from and writes runs to; "
                        "relative paths in the form start here (default: the current directory)")
    p.add_argument("--auth", default=None, metavar="USER:PASS",
                   help=f"require this login (default: none on {DEFAULT_HOST}). Prefer the {TOKEN_ENV} "
                        f"environment variable (user {TOKEN_USER!r}): a command line is visible to other users")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME[:PORT]",
                   help="also accept requests addressed to this host name (a reverse proxy's or the server's "
                        "name); loopback names are always accepted; repeatable")
    p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                   help="open this run directory read-only: the dashboard only, no Start/Stop (default: the full app)")
    p.add_argument("--output-dir", type=Path, default=None, metavar="OUT",
                   help="the form's default output directory, inside the workspace (default: geko train's, runs/train)")
    p.add_argument("--refresh", type=float, default=1.5, metavar="SECONDS",
                   help="dashboard refresh interval in seconds (default 1.5)")


def run(args: argparse.Namespace) -> int:
    if not 0.2 <= args.refresh <= 60:
        raise InputError(f"--refresh {args.refresh}: expected seconds between 0.2 and 60")
    if args.run is not None and not args.run.is_dir():
        raise InputError(f"--run {args.run}: no such run directory")
    policy = AccessPolicy(args.host, args.port, parse_auth(args.auth), tuple(args.allow_host))
    workspace = Workspace(Path.cwd() if args.workspace is None else args.workspace)
    default_output = None
    if args.output_dir is not None:
        default_output = str(workspace.path(str(args.output_dir), "--output-dir"))
    from .process import Launcher
    from .ui import build_app, launch_app

    launcher = None if args.run is not None else Launcher(workspace=workspace)
    demo = build_app(run_dir=args.run, launcher=launcher, default_output=default_output, refresh_s=args.refresh,
                     workspace=workspace)
    if policy.exposed:
        print(f"geko app: WARNING: serving on {args.host}, beyond this machine. Anyone who can reach it and "
              "logs in can start training processes and read the files of the workspace "
              f"{workspace.root}; use HTTPS (a reverse proxy) so the login is not sent in the clear.",
              file=sys.stderr, flush=True)
    print(f"geko app: serving on http://{args.host}:{args.port} (Ctrl-C to quit); workspace {workspace.root}"
          + ("; login required" if policy.auth else ""), flush=True)
    launch_app(demo, policy, quiet=True, block=True)
    return 0


@command("app", HELP, EXAMPLE)
def _app():
    return configure, run


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``app`` to an argparse sub-command set (for a parser not built from the registry)."""
    p = subparsers.add_parser("app", help=HELP.split(". ")[0] + ".", description=HELP)
    configure(p)
    p.set_defaults(_geko_app_run=run)
    return p


def main(argv: list[str] | None = None) -> int:
    """``geko app`` on its own (``python -m geko_torch.app``); returns the exit status."""
    p = argparse.ArgumentParser(prog="geko app", description=HELP)
    configure(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except GekoError as e:
        print(f"geko app: error: {e}", file=sys.stderr)
        return 2
