"""Training checkpoints: one directory holding everything needed to continue exactly.

Layout of ``checkpoint-<step>/``::

    model.safetensors            every model tensor (tied weights stored once)
    config.json                  Hugging Face models: from_pretrained(checkpoint) loads the model
    adapter/                     peft models: the adapter alone (save_pretrained)
    optimizer.{json,safetensors} scheduler.json  scaler.json  rng.{json,safetensors}
    sampler.{json,safetensors}   the epoch plan and the global position inside it
    history.{json,safetensors}   bucket codes the history writer compares the next epoch with
    state.arrow                  the state store (StateStore.checkpoint)
    epochs.parquet               the run's per-epoch summary so far (history of the run)
    trainer_state.json           step counters, tracker counters, settings; written last

The directory is written under a temporary name (``.checkpoint-<step>.tmp-<pid>``) and renamed, so
a checkpoint is either complete or absent; one saved again at the same step is swapped in atomically
(Linux) and a pruned one is renamed to a hidden name before it is deleted. A visible
``checkpoint-<step>`` directory is therefore always complete, whenever the writing process is
killed. What a killed process leaves under hidden names is removed by the next save or resume
(:func:`remove_leftovers`). Nothing is pickled.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from geko_state import StateStore
from geko_state.errors import InputError, StateFileError
from geko_state.io import atomic_path, atomic_write_json, fsync_dir
from geko_state.run import Run

from .distributed import barrier, is_main_process
from .sampler import GEKOSampler
from .serialization import load_tree, save_tree
from .tracker import GEKOTracker

__all__ = [
    "checkpoint_dirs", "latest_checkpoint", "load_checkpoint", "remove_checkpoint", "remove_leftovers",
    "restore_run_history", "restore_state", "rng_state", "save_checkpoint", "set_rng_state", "unwrap_model",
]

STATE_FILE = "state.arrow"
TRAINER_STATE = "trainer_state.json"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile / DistributedDataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Hidden directories of a save or prune in progress: .checkpoint-<step>.<tmp|old|trash>-<pid>.
_HIDDEN_DIR = re.compile(r"^\.(checkpoint-\d+)\.(tmp|old|trash)-(\d+)$")
# Temporary files of the run directory's atomic writes (geko_state.io.atomic_path: ".<name>.<random>.tmp").
_RUN_TEMP_FILES = (".state.arrow.*.tmp", ".epochs.parquet.*.tmp", ".trainer_log.jsonl*.tmp", "history/.epoch=*.tmp")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    platform, the C library or the filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path``. An older ``path`` is swapped out atomically where the system
    can (readers see the old or the new checkpoint, never neither), else moved aside first (a
    process killed in between leaves it under ``.<name>.old-<pid>``, which
    :func:`remove_leftovers` puts back); then it is removed."""
    if path.exists() and _exchange(tmp, path):
        fsync_dir(path.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # the old checkpoint, now under the temporary name
        return
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint directory without ever showing it half deleted: it is renamed to a
    hidden name first (atomically), then removed."""
    path = Path(path)
    trash = path.with_name(f".{path.name}.trash-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    except OSError:  # e.g. an undeletable earlier trash in the way: delete in place, as best we can
        shutil.rmtree(path, ignore_errors=True)
        return
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


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


def restore_run_history(checkpoint: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Put the run directory's history back as it was when ``checkpoint`` was saved, before a run
    resumes from it: the epoch summary is replaced by the checkpoint's copy (atomically; removed
    when the checkpoint was saved before the first epoch ended), then the snapshot files of later
    epochs, which a run that went on past the checkpoint (and was stopped or killed) recorded, are
    deleted. In that order, as the history writer publishes: a reader never sees an epoch listed
    without its snapshot. A checkpoint saved without a summary after its first epoch leaves the
    history alone (the writer replaces later epochs as it records them).
    """
    ckpt, run = Path(checkpoint), Run(Path(run_dir))
    if ckpt.resolve() == run.root.resolve():
        return
    epoch = int(_read_trainer_state(ckpt)["epoch"])
    src = ckpt / "epochs.parquet"
    if src.is_file():
        with atomic_path(run.epochs_path) as tmp:
            shutil.copyfile(src, tmp)
    elif epoch == 0:
        run.epochs_path.unlink(missing_ok=True)
        fsync_dir(run.root)
    else:
        return
    for e, f in run.history_files().items():
        if e > epoch:
            f.unlink(missing_ok=True)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    store: StateStore,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    sampler: GEKOSampler | None = None,
    tracker: GEKOTracker | None = None,
    run_dir: str | os.PathLike | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically. Queued tracker observations are applied first so
    the saved state holds every trained batch. ``extra``: JSON-ready values for ``trainer_state.json``.

    Under torch.distributed call it on every rank: all ranks exchange what is queued, rank 0
    alone writes (every replica is identical), and every rank returns once the checkpoint exists.
    """
    path = Path(path)
    if tracker is not None:
        tracker.flush()
    if not is_main_process():
        barrier()  # rank 0 is writing; return when the checkpoint is complete
        return path
    try:
        _write_checkpoint(path, store=store, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                          sampler=sampler, tracker=tracker, run_dir=run_dir, extra=extra)
    finally:
        barrier()
    return path


def _write_checkpoint(
    path: Path, *, store: StateStore, model: torch.nn.Module | None, optimizer: torch.optim.Optimizer | None,
    scheduler: Any, scaler: Any, sampler: GEKOSampler | None, tracker: GEKOTracker | None,
    run_dir: str | os.PathLike | None, extra: dict[str, Any] | None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)  # what killed saves left: a hidden copy of a model each
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if model is not None:
            base = unwrap_model(model)
            with atomic_path(tmp / "model.safetensors") as t:
                save_model(base, str(t))
            if hasattr(base, "peft_config") and hasattr(base, "save_pretrained"):
                base.save_pretrained(str(tmp / "adapter"))
            elif getattr(base, "config", None) is not None and hasattr(base.config, "save_pretrained"):
                base.config.save_pretrained(str(tmp))
        if optimizer is not None:
            save_tree(optimizer.state_dict(), tmp, "optimizer")
        if scheduler is not None:
            save_tree(scheduler.state_dict(), tmp, "scheduler")
        if scaler is not None:
            save_tree(scaler.state_dict(), tmp, "scaler")
        save_tree(rng_state(), tmp, "rng")
        if sampler is not None:
            save_tree(sampler.state_dict(), tmp, "sampler")
        if tracker is not None and tracker.history is not None:
            save_tree(tracker.history_state(), tmp, "history")
        store.checkpoint(tmp / STATE_FILE)
        if run_dir is not None and Run(run_dir).epochs_path.is_file():
            # the summary is replaced by rename, never rewritten in place: a plain copy is consistent
            shutil.copyfile(Run(run_dir).epochs_path, tmp / "epochs.parquet")
        trainer_state = {
            "epoch": store.epoch,
            "n_samples": store.n_samples,
            "tracker": None if tracker is None else tracker.state_dict(),
            "extra": extra or {},
        }
        atomic_write_json(tmp / TRAINER_STATE, trainer_state)
        fsync_dir(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_trainer_state(path: Path) -> dict[str, Any]:
    f = path / TRAINER_STATE
    if not path.is_dir():
        raise InputError(f"checkpoint path {path} is not a directory; expected a checkpoint-<step> directory")
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        raise StateFileError(f"{f}: missing; {path} is not a complete GEKO checkpoint") from None
    except (OSError, ValueError) as e:
        raise StateFileError(f"{f}: unreadable ({e})") from None


def restore_state(
    checkpoint: str | os.PathLike, live_path: str | os.PathLike | None = None, *, name: str = STATE_FILE,
    kernels: str = "numba",
) -> StateStore:
    """The checkpoint's state store: copied to ``live_path`` (atomically) and opened there for
    training, or loaded in memory when ``live_path`` is None. The checkpoint itself is not touched.
    ``name``: the state file's name inside the checkpoint directory.
    """
    src = Path(checkpoint) / name
    if not src.is_file():
        raise StateFileError(f"{src}: missing; {checkpoint} is not a complete GEKO checkpoint")
    if live_path is None:
        return StateStore.open(src, storage="memory", kernels=kernels)
    live_path = Path(live_path)
    with atomic_path(live_path) as tmp:
        shutil.copyfile(src, tmp)
    (live_path.parent / f"{live_path.name}.json").unlink(missing_ok=True)  # stale sidecar of the old live state
    return StateStore.open(live_path, mode="r+", kernels=kernels)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    sampler: GEKOSampler | None = None,
    tracker: GEKOTracker | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote into the given objects; returns ``trainer_state``
    (its ``extra`` holds the caller's values). Restore the store first (:func:`restore_state`) and
    build ``sampler`` / ``tracker`` on it.
    """
    path = Path(path)
    state = _read_trainer_state(path)
    if sampler is not None and sampler.store.epoch != state["epoch"]:
        raise InputError(
            f"the sampler's store is at epoch {sampler.store.epoch} but the checkpoint at epoch "
            f"{state['epoch']}; restore the store with restore_state({str(path)!r}) first"
        )
    if model is not None:
        base = unwrap_model(model)
        missing, unexpected = load_model(base, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise StateFileError(
                f"{path / 'model.safetensors'}: does not match the model (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
    if optimizer is not None:
        optimizer.load_state_dict(load_tree(path, "optimizer"))
    if scheduler is not None:
        scheduler.load_state_dict(load_tree(path, "scheduler"))
    if scaler is not None and (path / "scaler.json").exists():
        scaler.load_state_dict(load_tree(path, "scaler"))
    if sampler is not None:
        sampler.load_state_dict(load_tree(path, "sampler"))
    if tracker is not None and state.get("tracker") is not None:
        tracker.load_state_dict(state["tracker"])
        if (path / "history.json").is_file():
            tracker.load_history_state(load_tree(path, "history"))
    if restore_rng:
        set_rng_state(load_tree(path, "rng"))
    return state
