"""A small deterministic GEKOTrainer run on the CPU, killed with SIGKILL at a chosen moment.

    python -m tests.geko_torch.crash_worker RUN_DIR [--kill POINT:N] [--resume] [--counts FILE]

``--kill POINT:N`` SIGKILLs this process the N-th time execution reaches ``POINT`` (see
:data:`POINTS`). Points are installed by wrapping library functions here, in the worker only: the
product code has no test hooks. ``--resume`` continues from the newest complete checkpoint in
RUN_DIR (or starts afresh when there is none), as a user would after a crash. ``--counts FILE``
writes how many times each point was reached (a run without ``--kill``), so the test can aim.

    python -m tests.geko_torch.crash_worker --serve

reads such command lines as JSON from stdin and runs each in a child forked from this warm process
(torch imported and the task built once); see :func:`serve`. Used by ``test_crash.py``, which
imports this module for its constants only (numpy and torch are imported when a run starts).
"""
from __future__ import annotations

import argparse
import builtins
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

# Every moment the test kills the worker at: name -> where exactly.
POINTS: dict[str, str] = {
    "observe": "StateStore.observe: the numba kernel has updated the columns, the store's counters not yet",
    "repartition": "StateStore.repartition: the kernel has reassigned buckets, the epoch counter not yet advanced",
    "epoch_end": "end of an epoch: observations flushed into the store, repartition not yet called",
    "step": "between optimizer steps: optimizer.step() and scheduler.step() done, next batch not yet drawn",
    "flush_before_data": "StateStore.flush: the sidecar (new checksum + previous as fallback) written, data not yet",
    "flush_mid_data": "StateStore.flush: the first half of the columns (schema order) written back into state.arrow, "
                      "the rest not",
    "flush_after_data": "StateStore.flush: all data written and fsynced, the final sidecar not yet",
    "history_snapshot_tmp": "HistoryWriter: history/epoch=E.parquet's temporary file complete, not yet renamed",
    "history_between": "HistoryWriter: the epoch's snapshot renamed into place, the summary epochs.parquet not yet written",
    "history_summary_tmp": "HistoryWriter: epochs.parquet's temporary file complete, not yet renamed",
    "history_after_summary": "HistoryWriter: summary published, stale later epochs not yet removed, state not yet flushed",
    "ckpt_model": "checkpoint: model.safetensors written into the temporary .checkpoint-S.tmp-PID directory",
    "ckpt_state": "checkpoint: geko_state.arrow written into the temporary directory (optimizer, rng before it)",
    "ckpt_trainer_state": "checkpoint: everything but trainer_state.json written into the temporary directory",
    "ckpt_replace": "checkpoint of a step saved twice: the new one swapped with the older checkpoint-S (or, where the "
                    "system cannot swap, the older one renamed aside), the older one not yet deleted",
    "ckpt_published": "checkpoint: renamed into place, the live state not yet flushed, old checkpoints not yet pruned",
    "prune": "pruning (save_total_limit): half the files of the removed checkpoint deleted",
    "log_torn": "trainer log: half of a JSON line appended to trainer_log.jsonl",
    "finished": "after training and the final checkpoint, while the final metrics are computed",
    "resumed": "a resumed run, right after load_checkpoint() returned, before training continues",
}

N_TRAIN, N_EVAL, EPOCHS = 192, 32, 3


class Killer:
    """Counts each point reached; SIGKILLs the process at the chosen occurrence."""

    def __init__(self, point: str | None, n: int) -> None:
        if point is not None and point not in POINTS:
            raise SystemExit(f"unknown kill point {point!r}; expected one of {sorted(POINTS)}")
        self.point, self.n = point, n
        self.counts: Counter[str] = Counter()

    def due(self, name: str) -> bool:
        """Count one arrival at ``name``; True when this is the one to die at."""
        self.counts[name] += 1
        return name == self.point and self.counts[name] == self.n

    def die(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def hit(self, name: str) -> None:
        if self.due(name):
            self.die()


def install(k: Killer) -> None:
    """Wrap library functions so that each point calls ``k``."""
    import numpy as np

    import geko_state.history as history_mod
    import geko_state.store as store_mod
    import geko_torch.checkpoint as ckpt_mod
    import geko_torch.trainer as trainer_mod
    from geko_state.backends.arrow_file import ArrowFileStorage
    from geko_state.kernels.registry import get_kernels, register_kernels
    from geko_state.schema import COLUMNS

    # -- the state engine: kernels run, the store's bookkeeping not yet done
    numba = get_kernels("numba")

    def observe_kernel(*a, **kw):
        out = numba.observe(*a, **kw)
        k.hit("observe")
        return out

    def repartition_kernel(*a, **kw):
        out = numba.repartition(*a, **kw)
        k.hit("repartition")
        return out

    register_kernels(dataclasses.replace(numba, observe=observe_kernel, repartition=repartition_kernel))

    repartition = store_mod.StateStore.repartition

    def store_repartition(self):
        k.hit("epoch_end")
        return repartition(self)

    store_mod.StateStore.repartition = store_repartition

    # -- StateStore.flush: sidecar, data, sidecar
    write_sidecar = store_mod.write_sidecar

    def sidecar(path, current, previous=None):
        write_sidecar(path, current, previous)
        if previous is not None:
            k.hit("flush_before_data")

    store_mod.write_sidecar = sidecar
    storage_flush = ArrowFileStorage.flush

    def flush(self, include_immutable=False):
        if self.writable and self.columns and not self.shared and k.due("flush_mid_data"):
            # the columns are written back in schema order: the first half of them, then death
            with open(self.path, "r+b") as f:
                for c in COLUMNS[: len(COLUMNS) // 2]:
                    f.seek(self.layout.offsets[c.name])
                    f.write(memoryview(np.ascontiguousarray(self.columns[c.name]).reshape(-1)).cast("B"))
            k.die()
        storage_flush(self, include_immutable)
        k.hit("flush_after_data")

    ArrowFileStorage.flush = flush

    # -- history: snapshot, then summary, then stale files
    atomic_path = history_mod.atomic_path

    @contextmanager
    def history_atomic_path(path):
        with atomic_path(path) as tmp:
            yield tmp
            k.hit("history_summary_tmp" if Path(path).name == "epochs.parquet" else "history_snapshot_tmp")

    history_mod.atomic_path = history_atomic_path
    write_summary = history_mod.HistoryWriter._write_summary

    def summary(self, rows, n):
        k.hit("history_between")
        write_summary(self, rows, n)
        k.hit("history_after_summary")

    history_mod.HistoryWriter._write_summary = summary

    # -- checkpoints
    save_model = ckpt_mod.save_model

    def ckpt_save_model(model, filename, *a, **kw):
        save_model(model, filename, *a, **kw)
        k.hit("ckpt_model")

    ckpt_mod.save_model = ckpt_save_model
    store_checkpoint = store_mod.StateStore.checkpoint

    def checkpoint(self, path):
        out = store_checkpoint(self, path)
        k.hit("ckpt_state")
        return out

    store_mod.StateStore.checkpoint = checkpoint
    write_json = ckpt_mod.atomic_write_json

    def ckpt_write_json(path, data):
        if Path(path).name == "trainer_state.json":
            k.hit("ckpt_trainer_state")
        write_json(path, data)

    ckpt_mod.atomic_write_json = ckpt_write_json
    exchange = ckpt_mod._exchange

    def ckpt_exchange(a, b):
        swapped = exchange(a, b)
        if swapped:
            k.hit("ckpt_replace")
        return swapped

    ckpt_mod._exchange = ckpt_exchange
    replace = os.replace

    def os_replace(src, dst, *a, **kw):
        replace(src, dst, *a, **kw)
        if Path(src).name.startswith("checkpoint-") and ".old-" in Path(dst).name:
            k.hit("ckpt_replace")

    os.replace = os_replace
    replace_dir = ckpt_mod._replace_dir

    def ckpt_replace_dir(tmp, path):
        replace_dir(tmp, path)
        k.hit("ckpt_published")

    ckpt_mod._replace_dir = ckpt_replace_dir

    # -- pruning: die half-way through deleting a checkpoint directory
    pruning = [False]
    prune = trainer_mod.GEKOTrainer._prune_checkpoints

    def prune_checkpoints(self):
        pruning[0] = True
        try:
            prune(self)
        finally:
            pruning[0] = False

    trainer_mod.GEKOTrainer._prune_checkpoints = prune_checkpoints
    rmtree = shutil.rmtree

    def shutil_rmtree(path, *a, **kw):
        p = Path(path)
        if pruning[0] and "checkpoint-" in p.name and p.is_dir() and k.due("prune"):
            files = sorted(f for f in p.iterdir() if f.is_file())
            for f in files[: len(files) // 2]:
                f.unlink()
            k.die()
        return rmtree(path, *a, **kw)

    shutil.rmtree = shutil_rmtree

    # -- the trainer log: a torn line
    class TornFile:
        def __init__(self, f):
            self._f = f

        def write(self, text):
            if k.due("log_torn"):
                self._f.write(text[: len(text) // 2])
                self._f.flush()
                k.die()
            return self._f.write(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, name):
            return getattr(self._f, name)

    def trainer_open(file, mode="r", *a, **kw):
        f = builtins.open(file, mode, *a, **kw)  # noqa: SIM115 - returned, closed by the caller
        if Path(file).name == "trainer_log.jsonl" and "a" in mode:
            return TornFile(f)
        return f

    trainer_mod.open = trainer_open

    # -- the training loop
    optimizer_step = trainer_mod.GEKOTrainer._optimizer_step

    def step(self):
        optimizer_step(self)
        k.hit("step")

    trainer_mod.GEKOTrainer._optimizer_step = step
    final_metrics = trainer_mod.GEKOTrainer._final_metrics

    def metrics(self, elapsed):
        k.hit("finished")
        return final_metrics(self, elapsed)

    trainer_mod.GEKOTrainer._final_metrics = metrics


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="a small GEKOTrainer run, killed at a chosen moment")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--kill", default=None, help="POINT:N: SIGKILL at the N-th arrival at POINT")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--counts", type=Path, default=None, help="write the arrivals at each point (JSON)")
    return p.parse_args(argv)


def build():
    """The fine-tuning task (its base model pretrained), the same in every process."""
    from geko_torch.tasks import build_task

    return build_task("clusters", seed=0, n=N_TRAIN, n_eval=N_EVAL, base_steps=20)


def run(argv: list[str], task=None) -> int:
    """One training process: ``argv`` as on the command line."""
    import torch

    a = _parse(argv)
    torch.set_num_threads(1)
    point, n = None, 0
    if a.kill:
        point, _, num = a.kill.partition(":")
        n = int(num or 1)
    killer = Killer(point, n)

    from geko_state import GEKO_DEFAULT
    from geko_torch.checkpoint import latest_checkpoint
    from geko_torch.trainer import GEKOTrainer

    if task is None:
        task = build()
    args = task.training_args(
        a.run_dir, seed=0, num_epochs=EPOCHS, batch_size=16, warmup_steps=2, logging_steps=1, eval_steps=10**9,
        save_steps=4, save_total_limit=2, save_at_end=True, plots=False, disable_progress_bar=True,
    )
    install(killer)
    trainer = GEKOTrainer(task.model, task.train, eval_dataset=task.eval,
                          config=GEKO_DEFAULT.replace(log_bucket_stats=False), args=args)
    finished = False
    if a.resume:
        ckpt = latest_checkpoint(a.run_dir)
        if ckpt is not None:
            trainer.load_checkpoint(ckpt)
            killer.hit("resumed")
            # killed after its final checkpoint: nothing is left to train
            finished = json.loads((ckpt / "trainer_state.json").read_text())["extra"]["finished"]
    if not finished:
        trainer.train()
    trainer.close()
    if a.counts is not None:
        a.counts.write_text(json.dumps(dict(killer.counts), sort_keys=True))
    return 0


def serve(timeout_s: float = 300.0) -> int:
    """Run jobs read from stdin, each in a forked child of this (already warm) process.

    Each line is ``{"argv": [...], "log": PATH}``; the answer, one line on stdout, is
    ``{"returncode": R, "timed_out": T}`` with R as subprocess gives it (``-9`` for SIGKILL); a
    child still running after ``timeout_s`` is killed and reported with ``timed_out`` true. Imports
    and the task's base training happen once here instead of once per process (single-threaded,
    so forking is safe); nothing here trains the fine-tuning run or touches a run directory, so
    every child starts from the same clean state.
    """
    import torch

    torch.set_num_threads(1)
    task = build()
    import geko_torch.trainer  # noqa: F401  (imports, once)
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # its first use imports torch._dynamo
    out = sys.stdout
    for line in sys.stdin:
        job = json.loads(line)
        out.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the training process
            code = 1
            try:
                fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = run(job["argv"], task)
            except BaseException:  # noqa: BLE001 - reported through the log and the exit status
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline, timed_out = time.monotonic() + timeout_s, False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if not timed_out and time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.005)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        out.write(json.dumps({"returncode": rc, "timed_out": timed_out}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    # one thread each: deterministic and quick, and two workers share two cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    sys.exit(run(sys.argv[1:]))
