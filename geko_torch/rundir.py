"""A training run directory: what marks it as a GEKO run, and clearing an earlier run before a new one.

A new (not resumed) run into a directory replaces what an earlier run left there, so that its
history, log and checkpoints do not mix with the new run's. Deleting is only done in a directory
that a GEKO run wrote: one holding a GEKO state file, a GEKO epoch summary or a GEKO checkpoint
(the markers). A directory that merely holds files with the same names (``final_model/``,
``checkpoint-*``, ``history/``) of another tool is refused, never emptied.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geko_state.errors import InputError
from geko_state.run import Run

from .text_data import LABEL_MAP_FILE

__all__ = ["FINAL_MODEL", "LABEL_MAP_FILE", "TRAINER_LOG", "check_clearable", "clear_earlier_run", "earlier_run_files", "run_markers"]

FINAL_MODEL = "final_model"
TRAINER_LOG = "trainer_log.jsonl"
_CHECKPOINT_STATE = "trainer_state.json"
_GEKO_PART_META = "geko_state.json"  # geko_torch.checkpoint.GEKO_META_FILE (that module imports torch)


def _is_state_file(path: Path) -> bool:
    try:
        with pa.memory_map(str(path), "r") as mm:
            md = pa.ipc.open_file(mm).schema.metadata or {}
    except (pa.ArrowException, OSError, ValueError):
        return False
    return b"geko.schema_version" in md


def _is_summary_file(path: Path) -> bool:
    try:
        md = pq.read_metadata(str(path)).metadata or {}
    except (pa.ArrowException, OSError, ValueError):
        return False
    return md.get(b"geko.kind") == b"summary"


def _is_checkpoint(path: Path) -> bool:
    """GEKOTrainer's trainer_state.json, or the GEKO part every trainer writes, names its samples."""
    for name in (_CHECKPOINT_STATE, _GEKO_PART_META):
        try:
            state = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and {"epoch", "n_samples"} <= state.keys():
            return True
    return False


def _checkpoint_dirs(out: Path) -> list[Path]:
    return [p for p in sorted(out.glob("checkpoint-*")) if p.is_dir() and (p / _CHECKPOINT_STATE).is_file()]


def run_markers(out: str | Path) -> list[str]:
    """The files in ``out`` that show a GEKO run wrote it (empty: not a GEKO run directory)."""
    out, run = Path(out), Run(Path(out))
    if not out.is_dir():
        return []
    found = []
    if run.state_path.is_file() and _is_state_file(run.state_path):
        found.append(run.state_path.name)
    if run.epochs_path.is_file() and _is_summary_file(run.epochs_path):
        found.append(run.epochs_path.name)
    found += [p.name for p in _checkpoint_dirs(out) if _is_checkpoint(p)]
    return found


def _earlier(out: Path) -> list[Path]:
    run = Run(out)
    files = [run.state_path, run.state_path.with_name(run.state_path.name + ".json"), run.epochs_path,
             out / TRAINER_LOG, out / LABEL_MAP_FILE, *run.history_files().values()]
    found = [p for p in files if p.is_file()]
    found += _checkpoint_dirs(out)
    if (out / FINAL_MODEL).is_dir():
        found.append(out / FINAL_MODEL)
    return found


def earlier_run_files(out: str | Path) -> list[str]:
    """What in ``out`` belongs to an earlier run (a new run there removes it)."""
    out = Path(out)
    return [p.name for p in _earlier(out)] if out.is_dir() else []


def check_clearable(out: str | Path) -> None:
    """InputError when ``out`` holds files a new run would remove but no GEKO marker
    (:func:`run_markers`): it is some other tool's directory, and nothing may be deleted there."""
    out = Path(out)
    found = _earlier(out) if out.is_dir() else []
    if found and not run_markers(out):
        listed = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise InputError(f"{out}: holds {listed} but is not a GEKO run directory (no GEKO state file, epoch "
                         "summary or checkpoint in it); nothing was removed: choose another output directory")


def clear_earlier_run(out: str | Path) -> list[str]:
    """Remove what an earlier (non-resumed) run left in ``out``; returns the names removed.
    Refuses (:func:`check_clearable`), removing nothing, when ``out`` is not a GEKO run directory."""
    out = Path(out)
    check_clearable(out)
    found = _earlier(out) if out.is_dir() else []
    for p in found:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return [p.name for p in found]
