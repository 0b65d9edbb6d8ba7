"""A training run directory: its file names, its checkpoints, what marks it as a GEKO run, clearing an
earlier run before a new one, and cleaning up after killed writers.

The engine's files (state, history, summary) are named by :class:`geko_state.Run`; this module
adds what the trainers write beside them. It never imports torch.

A new (not resumed) run into a directory replaces what an earlier run left there, so that its
history, log and checkpoints do not mix with the new run's. Deleting is only done in a directory
that a GEKO run wrote: one holding a GEKO state file, a GEKO epoch summary or a GEKO checkpoint
(the markers). A directory that merely holds files with the same names (``final_model/``,
``checkpoint-*``, ``history/``) of another tool is refused, never emptied.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geko_state.errors import InputError
from geko_state.io import fsync_dir
from geko_state.run import Run

from .text_data import LABEL_MAP_FILE

__all__ = ["FINAL_MODEL", "LABEL_MAP_FILE", "TRAINER_LOG", "TRAINER_STATE", "check_clearable", "checkpoint_dirs",
           "clear_earlier_run", "latest_checkpoint", "remove_leftovers", "earlier_run_files", "run_markers"]

FINAL_MODEL = "final_model"
TRAINER_LOG = "trainer_log.jsonl"
TRAINER_STATE = "trainer_state.json"  # a GEKOTrainer checkpoint's last file: its presence marks it complete
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
    for name in (TRAINER_STATE, _GEKO_PART_META):
        try:
            state = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and {"epoch", "n_samples"} <= state.keys():
            return True
    return False


_HIDDEN_DIR = re.compile(r"^\.(checkpoint-\d+)\.(tmp|old|trash)-(\d+)$")
# Temporary files of the run directory's atomic writes (geko_state.io.atomic_path: ".<name>.<random>.tmp").
_RUN_TEMP_FILES = (".state.arrow.*.tmp", ".epochs.parquet.*.tmp", ".trainer_log.jsonl*.tmp", "history/.epoch=*.tmp")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return True  # cannot tell: keep its files
    return True


def remove_leftovers(run_dir: str | os.PathLike, *, temp_files: bool = False) -> list[Path]:
    """Clean up after processes that were killed while saving or pruning checkpoints in ``run_dir``:
    hidden ``.checkpoint-<step>.{tmp,old,trash}-<pid>`` directories of processes no longer running
    are removed, except that an ``old`` one (a complete checkpoint moved aside for a new one of the
    same step, where that could not be swapped in atomically) is renamed back when its step has no
    checkpoint. ``temp_files``: also remove the temporary files atomic writes of the run's state,
    summary, snapshots and log left; only the run's one writer may ask for it, when it is not
    writing (on resume). Returns what was removed or put back.
    """
    root = Path(run_dir)
    if not root.is_dir():
        return []
    done: list[Path] = []
    for p in root.iterdir():
        m = _HIDDEN_DIR.match(p.name)
        if m is None or not p.is_dir():
            continue
        pid = int(m.group(3))
        if pid == os.getpid() or _process_alive(pid):
            continue
        target = root / m.group(1)
        if m.group(2) == "old" and not target.exists() and (p / TRAINER_STATE).is_file():
            try:
                os.rename(p, target)
                fsync_dir(root)
                done.append(target)
                continue
            except OSError:
                pass
        shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    if temp_files:
        for pattern in _RUN_TEMP_FILES:
            for f in root.glob(pattern):
                if f.is_file():
                    f.unlink(missing_ok=True)
                    done.append(f)
    return done


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete ``checkpoint-<step>`` directories of a run directory, as (step, path) in step
    order. Complete: ``trainer_state.json`` (written last) is there; a checkpoint being written or
    removed lives under a hidden name meanwhile, so it is never listed."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        name, _, suffix = p.name.partition("-")
        if name == "checkpoint" and suffix.isdigit() and (p / TRAINER_STATE).is_file():
            found.append((int(suffix), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run directory (to resume from), or None."""
    found = checkpoint_dirs(run_dir)
    return found[-1][1] if found else None




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
    found += [p.name for p in [p for _, p in checkpoint_dirs(out)] if _is_checkpoint(p)]
    return found


def _earlier(out: Path) -> list[Path]:
    run = Run(out)
    files = [run.state_path, run.state_path.with_name(run.state_path.name + ".json"), run.epochs_path,
             out / TRAINER_LOG, out / LABEL_MAP_FILE, *run.history_files().values()]
    found = [p for p in files if p.is_file()]
    found += [p for _, p in checkpoint_dirs(out)]
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
