"""The app's workspace: the one directory tree whose files the app may read, write or delete.

Every path that reaches the app from a request (model directory, dataset files, output directory,
the run directory a dashboard watches) goes through :meth:`Workspace.path`: it is resolved with
symlinks followed and refused when it leaves the workspace, so a request cannot make the app read
``/etc/passwd`` as a dataset or clear a run in another user's directory. Relative paths are taken
from the workspace root, not from the app's working directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from geko_state.errors import ConfigError, InputError

__all__ = ["Workspace"]


@dataclass(frozen=True)
class Workspace:
    """``root``: an existing directory; stored resolved (symlinks followed)."""

    root: Path

    def __post_init__(self) -> None:
        raw = Path(self.root).expanduser()
        if not raw.is_dir():
            raise ConfigError(f"--workspace {self.root}: no such directory")
        object.__setattr__(self, "root", raw.resolve())

    def path(self, value: object, what: str) -> Path:
        """``value`` (a form's text) as an absolute path inside the workspace; InputError naming
        ``what`` when it is empty, looks like an option, or resolves outside the workspace."""
        text = "" if value is None else str(value).strip()
        if not text:
            raise InputError(f"{what}: give a path inside the workspace {self.root}")
        if text.startswith("-"):
            # a path is never an option: "-h" would reach geko train's parser as one
            raise InputError(f"{what} {text!r}: a path may not start with '-' (write ./{text} for a file named so)")
        if "\x00" in text:
            raise InputError(f"{what}: the path contains a NUL character")
        candidate = Path(os.path.expanduser(text))
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()  # symlinks too: a link inside pointing outside is outside
        if not resolved.is_relative_to(self.root):
            raise InputError(f"{what} {text}: outside the app's workspace {self.root}; the app only uses "
                             "files inside it (start it with --workspace DIR to choose another)")
        return resolved

    def contains(self, value: object) -> bool:
        """Whether :meth:`path` accepts ``value``."""
        try:
            self.path(value, "path")
        except InputError:
            return False
        return True
