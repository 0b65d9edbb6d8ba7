"""The full ``geko`` command: the engine's subcommands (``geko_state.cli``) plus ``train``, ``demo``, ``app``.

Commands that need torch live in :mod:`geko_torch.commands` (and :mod:`geko_torch.app`) and register
in the engine's ``COMMANDS`` registry through its ``@command`` decorator when imported, so
``geko_state`` never imports torch while the console script (which points at :func:`main`) gets
every command. Nothing imports this module but the console script. Registering imports no torch:
only the command being run sets up its options and imports what it needs, so ``geko --help`` and the
engine's commands work on the plain, torch-free install.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Collection

from geko_state import cli as engine_cli
from geko_state.cli import COMMANDS

from . import app as _app  # noqa: F401  registers `geko app` (gradio is imported only when it runs)
from .commands import demo as _demo  # noqa: F401  registers `geko demo`
from .commands import train as _train  # registers `geko train`

__all__ = ["COMMANDS", "build_parser", "main"]


# ---------------------------------------------------------------------- the full command
def build_parser(prog: str = "geko", *, configure: Collection[str] | None = None,
                 ) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The engine's parser with every command registered so far (this module's included);
    ``configure`` as in :func:`geko_state.cli.build_parser`."""
    parser, sub = engine_cli.build_parser(prog, configure=configure)
    parser.epilog = (parser.epilog or "example:") + "\n" + _train.EPILOG_EXAMPLE
    return parser, sub


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``geko`` console script; returns the exit status (2 on a GekoError)."""
    return engine_cli.main(argv, build=build_parser)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
