"""The layout of a run directory: where the state, the history and the epoch summary live.

```
RUN_DIR/state.arrow                  the live state (StateStore.create(n, RUN_DIR / "state.arrow"))
RUN_DIR/state.arrow.json             its metadata sidecar
RUN_DIR/history/epoch=000001.parquet per-sample snapshot of each recorded epoch
RUN_DIR/epochs.parquet               one summary row per epoch
RUN_DIR/plots/                       PNGs written by ``geko report``
```
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

__all__ = ["Run", "open_run", "state_file"]

_EPOCH_FILE = re.compile(r"^epoch=(\d+)\.parquet$")


@dataclass(frozen=True)
class Run:
    """Paths of one run directory (nothing is read or created by constructing it)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def state_path(self) -> Path:
        return self.root / "state.arrow"

    @property
    def history_dir(self) -> Path:
        return self.root / "history"

    @property
    def epochs_path(self) -> Path:
        return self.root / "epochs.parquet"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def history_glob(self) -> str:
        """Glob of the snapshot files; temporary files (``.epoch=...tmp``) never match it."""
        return str(self.history_dir / "epoch=*.parquet")

    def epoch_path(self, epoch: int) -> Path:
        return self.history_dir / f"epoch={int(epoch):06d}.parquet"

    def history_files(self) -> dict[int, Path]:
        """Recorded snapshots, epoch -> file, in epoch order."""
        if not self.history_dir.is_dir():
            return {}
        found = {}
        for p in self.history_dir.iterdir():
            m = _EPOCH_FILE.match(p.name)
            if m:
                found[int(m.group(1))] = p
        return dict(sorted(found.items()))

    def history_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.history_files().values())


def state_file(source: str | os.PathLike) -> Path:
    """The state file named by ``source``: a run directory's ``state.arrow``, or ``source`` itself."""
    path = Path(source)
    return Run(path).state_path if path.is_dir() else path


def open_run(run_dir: str | os.PathLike) -> Run:
    """A :class:`Run` for an existing directory holding a state file, a history or a summary."""
    run = Run(Path(run_dir))
    if not run.root.is_dir():
        raise InputError(f"{run.root}: no such run directory")
    if not _is_run(run):
        runs = sorted(str(p) for p in run.root.iterdir() if p.is_dir() and _is_run(Run(p)))
        hint = ""
        if runs:
            shown = " or ".join(runs[:3]) + (f" (or one of {len(runs) - 3} more)" if len(runs) > 3 else "")
            hint = f"; did you mean {shown}?"
        raise InputError(
            f"{run.root}: not a GEKO run directory (expected state.arrow, epochs.parquet or "
            f"history/epoch=*.parquet in it){hint}"
        )
    return run


def _is_run(run: Run) -> bool:
    return run.state_path.is_file() or run.epochs_path.is_file() or bool(run.history_files())
