"""Training checkpoints: one directory holding everything needed to continue exactly.

Layout of ``checkpoint-<step>/``::

    model.safetensors            every model tensor (tied weights stored once)
    config.json                  Hugging Face models: from_pretrained(checkpoint) loads the model
    adapter/                     peft models: the adapter alone (save_pretrained)
    optimizer.{json,safetensors} scheduler.json  scaler.json  rng.{json,safetensors}
    trainer_state.json           step counters and settings; written last
  the GEKO part, the same files in GEKOHFTrainer's checkpoints:
    geko_state.arrow             the state store (StateStore.checkpoint)
    geko_sampler.{json,safetensors}  the epoch plan and the global position inside it
    geko_history.{json,safetensors}  bucket codes the history writer compares the next epoch with
    geko_epochs.parquet          the run's per-epoch summary so far
    geko_state.json              tracker counters, epoch, seed, selection, config; the part's last file

The GEKO part (:func:`write_geko_part`, :func:`load_geko_part`) is shared by every trainer:
``GEKOHFTrainer`` writes it into Hugging Face's ``checkpoint-<step>/``. Checkpoints of the older
``GEKOTrainer`` layout (``state.arrow``, ``sampler.*``, ``history.*``, ``epochs.parquet``) are refused
with a message saying so (:func:`read_geko_meta`).

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
from .rundir import TRAINER_STATE, checkpoint_dirs, latest_checkpoint, remove_leftovers
from .sampler import GEKOSampler
from .serialization import load_tree, save_tree
from .tracker import GEKOTracker

__all__ = [
    "GEKO_EPOCHS_FILE", "GEKO_HISTORY", "GEKO_META_FILE", "GEKO_SAMPLER", "GEKO_STATE_FILE",
    "checkpoint_dirs", "latest_checkpoint", "load_checkpoint", "load_geko_part", "read_geko_meta",
    "remove_checkpoint", "remove_leftovers", "restore_run_history", "restore_state", "rng_state",
    "save_checkpoint", "set_rng_state", "unwrap_model", "write_geko_part",
]

# The GEKO part of a checkpoint directory, the same for every trainer.
GEKO_STATE_FILE = "geko_state.arrow"
GEKO_SAMPLER = "geko_sampler"  # save_tree name: geko_sampler.json (+ .safetensors)
GEKO_HISTORY = "geko_history"  # the history writer's bucket codes (exact transitions after a resume)
GEKO_EPOCHS_FILE = "geko_epochs.parquet"
GEKO_META_FILE = "geko_state.json"  # written last: its presence marks the GEKO part complete
GEKO_META_FORMAT = 1  # GEKOHFTrainer's checkpoints had this layout already: they are read as they are
# What GEKOTrainer and save_checkpoint wrote before the layout was shared (refused on resume).
_OLD_LAYOUT_FILES = ("state.arrow", "sampler.json")


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


def restore_run_history(checkpoint: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Put the run directory's history back as it was when ``checkpoint`` was saved, before a run
    resumes from it (every trainer, one rule): the epoch summary is replaced by the checkpoint's
    copy (atomically), or removed when the checkpoint was saved before the first epoch ended;
    then the snapshot files of later epochs, which a run that went on past the checkpoint (and was
    stopped or killed) recorded, are deleted. In that order, as the history writer publishes: a
    reader never sees an epoch listed without its snapshot. A checkpoint without a summary after
    its first epoch (saved without a run directory) says nothing about the history, so it is left
    alone (the writer replaces later epochs as it records them).
    """
    ckpt, run = Path(checkpoint), Run(Path(run_dir))
    if ckpt.resolve() == run.root.resolve():
        return
    epoch = int(read_geko_meta(ckpt)["epoch"])
    src = ckpt / GEKO_EPOCHS_FILE
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


def write_geko_part(
    directory: str | os.PathLike,
    *,
    store: StateStore,
    sampler: GEKOSampler | None = None,
    tracker: GEKOTracker | None = None,
    run_dir: str | os.PathLike | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write the GEKO part of a checkpoint into ``directory``: ``geko_state.arrow``,
    ``geko_sampler.*``, ``geko_history.*``, ``geko_epochs.parquet`` (the run's summary, when
    ``run_dir`` has one) and, last, ``geko_state.json`` (``meta``: JSON-ready extras). Flush the
    tracker first (on every rank under torch.distributed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GEKO_META_FILE).unlink(missing_ok=True)  # incomplete until rewritten last
    store.checkpoint(directory / GEKO_STATE_FILE)
    if sampler is not None:
        save_tree(sampler.state_dict(), directory, GEKO_SAMPLER)
    if tracker is not None and tracker.history is not None:
        save_tree(tracker.history_state(), directory, GEKO_HISTORY)
    summary = Run(Path(run_dir)).epochs_path if run_dir is not None else None
    if summary is not None and summary.is_file():
        # the summary is replaced by rename, never rewritten in place: a plain copy is consistent
        with atomic_path(directory / GEKO_EPOCHS_FILE) as tmp:
            shutil.copyfile(summary, tmp)
    else:
        (directory / GEKO_EPOCHS_FILE).unlink(missing_ok=True)
    info: dict[str, Any] = {
        "format": GEKO_META_FORMAT,
        "n_samples": store.n_samples,
        "epoch": store.epoch,
        "config": store.config.to_dict(),
        "tracker": None if tracker is None else tracker.state_dict(),
    }
    if sampler is not None:
        info.update(total_epochs=sampler.total_epochs, seed=sampler.seed, selection=sampler.selection.to_dict())
    atomic_write_json(directory / GEKO_META_FILE, {**info, **(meta or {})})


def read_geko_meta(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """``geko_state.json`` of a checkpoint directory, checked: ``InputError`` when the path is not
    a checkpoint with a GEKO part, ``StateFileError`` for an unreadable or incomplete one or one of
    the older GEKOTrainer layout."""
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise InputError(f"checkpoint path {ckpt} is not a directory; expected a checkpoint-<step> directory")
    path = ckpt / GEKO_META_FILE
    if not path.is_file():
        if any((ckpt / f).is_file() for f in _OLD_LAYOUT_FILES):
            raise StateFileError(
                f"{ckpt}: a checkpoint of the older GEKOTrainer layout (state.arrow, sampler.*, epochs.parquet), "
                f"which this version does not read; it expects the shared GEKO part ({GEKO_STATE_FILE}, "
                f"{GEKO_SAMPLER}.*, {GEKO_META_FILE}). Finish that run with the version that wrote it, or "
                "start a fresh run"
            )
        raise InputError(
            f"{ckpt}: no GEKO state in this checkpoint ({GEKO_META_FILE} missing); resume from a checkpoint "
            "written by a GEKO trainer (or save_checkpoint), or train without resuming"
        )
    try:
        meta = json.loads(path.read_text())
        int(meta["n_samples"]), int(meta["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StateFileError(f"{path}: unreadable GEKO checkpoint metadata ({e})") from None
    if meta.get("format") != GEKO_META_FORMAT:
        raise StateFileError(f"{path}: GEKO checkpoint format {meta.get('format')}, expected {GEKO_META_FORMAT}")
    if not (ckpt / GEKO_STATE_FILE).is_file():
        raise StateFileError(f"{ckpt / GEKO_STATE_FILE}: missing; {ckpt} is not a complete GEKO checkpoint")
    return meta


def load_geko_part(
    checkpoint: str | os.PathLike,
    *,
    sampler: GEKOSampler | None = None,
    tracker: GEKOTracker | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Load the GEKO part's sampler position, tracker counters and history-writer codes into
    ``sampler`` / ``tracker``, built on the store :func:`restore_state` restored; returns the metadata."""
    ckpt = Path(checkpoint)
    meta = read_geko_meta(ckpt) if meta is None else meta
    if sampler is not None and sampler.store.epoch != meta["epoch"]:
        raise InputError(
            f"the sampler's store is at epoch {sampler.store.epoch} but the checkpoint at epoch "
            f"{meta['epoch']}; restore the store with restore_state({str(ckpt)!r}) first"
        )
    if sampler is not None:
        sampler.load_state_dict(load_tree(ckpt, GEKO_SAMPLER))
    if tracker is not None and meta.get("tracker") is not None:
        tracker.load_state_dict(meta["tracker"])
        if (ckpt / f"{GEKO_HISTORY}.json").is_file():
            tracker.load_history_state(load_tree(ckpt, GEKO_HISTORY))
    return meta


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
    geko_part: Any = None,
) -> Path:
    """Write a checkpoint directory atomically. Queued tracker observations are applied first so
    the saved state holds every trained batch. ``extra``: JSON-ready values for ``trainer_state.json``.
    ``geko_part``: ``fn(directory)`` writing the GEKO part (a trainer's session), instead of
    :func:`write_geko_part` on ``store`` / ``sampler`` / ``tracker`` / ``run_dir``.

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
                          sampler=sampler, tracker=tracker, run_dir=run_dir, extra=extra, geko_part=geko_part)
    finally:
        barrier()
    return path


def _write_checkpoint(
    path: Path, *, store: StateStore, model: torch.nn.Module | None, optimizer: torch.optim.Optimizer | None,
    scheduler: Any, scaler: Any, sampler: GEKOSampler | None, tracker: GEKOTracker | None,
    run_dir: str | os.PathLike | None, extra: dict[str, Any] | None, geko_part: Any = None,
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
        if geko_part is not None:
            geko_part(tmp)
        else:
            write_geko_part(tmp, store=store, sampler=sampler, tracker=tracker, run_dir=run_dir)
        trainer_state = {"epoch": store.epoch, "n_samples": store.n_samples, "extra": extra or {}}
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
    checkpoint: str | os.PathLike, live_path: str | os.PathLike | None = None, *, name: str = GEKO_STATE_FILE,
    kernels: str = "numba",
) -> StateStore:
    """The checkpoint's state store: copied to ``live_path`` (atomically) and opened there for
    training, or loaded in memory when ``live_path`` is None. The checkpoint itself is not touched.
    ``name``: the state file's name inside the checkpoint directory.
    """
    if name == GEKO_STATE_FILE:
        read_geko_meta(checkpoint)  # an older layout or an incomplete part: say so
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
    if sampler is not None or tracker is not None:
        load_geko_part(path, sampler=sampler, tracker=tracker)
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
    if restore_rng:
        set_rng_state(load_tree(path, "rng"))
    return state
