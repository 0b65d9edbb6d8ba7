"""The training process behind Start / Stop / Resume: one subprocess at a time, per app.

Training runs in its own process (``python -m geko_torch.app.worker``), so the page stays
responsive and a crash in training (out of memory, a bad dataset row) cannot take the app down.
Its stdout and stderr go to ``RUN_DIR/geko_app.log``. Stop sends SIGINT: the worker asks the trainer
to stop after the current optimizer step, with a checkpoint (a second Stop sends SIGTERM: at once).

Every path of a launch must lie inside the launcher's :class:`~.workspace.Workspace`, and the whole
command line is checked (parsed, model directory and data files looked at, the output directory
found to be empty or a GEKO run) before anything is written or an earlier run is cleared.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from geko_state.errors import InputError

from ..paths import check_train_paths
from ..rundir import clear_earlier_run, earlier_run_files
from .command import (
    LAUNCH_FILE,
    TrainForm,
    form_options,
    shell_command,
    train_argv,
    worker_command,
    write_launch,
)
from .guard import TOKEN_ENV
from .runs import APP_LOG, checkpoints
from .workspace import Workspace

__all__ = ["Launch", "Launcher", "ProcessState", "earlier_run_files", "resume_checkpoint"]

ProcessState = Literal["running", "stopping", "stopped", "finished", "failed"]


def resume_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint of ``run_dir`` to resume from; InputError when there is none
    or the run already finished."""
    cks = checkpoints(run_dir)
    if not cks:
        raise InputError(f"{run_dir}: no complete checkpoint to resume from (a run writes one every "
                         "--save-steps steps, when stopped, and at its end)")
    if cks[-1].finished:
        raise InputError(f"{run_dir}: this run is complete ({cks[-1].path.name} is its final checkpoint); "
                         "nothing to resume")
    return cks[-1].path


@dataclass
class Launch:
    """One training process the app started."""

    run_dir: Path
    popen: subprocess.Popen
    command: list[str]
    shell: str  # the equivalent geko train command
    resumed_from: Path | None
    started: float = field(default_factory=time.time)
    stop_requests: int = 0

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def state(self) -> ProcessState:
        code = self.returncode
        if code is None:
            return "stopping" if self.stop_requests else "running"
        if code != 0:
            return "stopped" if self.stop_requests and code in (130, -signal.SIGTERM, -signal.SIGINT) else "failed"
        return "stopped" if self.stop_requests else "finished"


class Launcher:
    """Starts, stops and watches the app's training process (at most one at a time)."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None,
                 workspace: Workspace | None = None) -> None:
        self._python = python
        self._env = env
        self.workspace = workspace if workspace is not None else Workspace(Path.cwd())
        self._lock = threading.Lock()
        self.current: Launch | None = None
        atexit.register(self.shutdown)

    @property
    def busy(self) -> bool:
        return self.current is not None and self.current.returncode is None

    def launch_for(self, run_dir: Path | str | None) -> Launch | None:
        """The latest launch when it wrote to ``run_dir``."""
        cur = self.current
        if cur is None or run_dir is None:
            return None
        return cur if _same(cur.run_dir, Path(run_dir)) else None

    def start(self, form: TrainForm, *, resume: Path | None = None, replace: bool = False) -> Launch:
        """Start training ``form`` (from ``resume``, a checkpoint, when given). A new run into a
        directory that holds an earlier one needs ``replace=True`` (the earlier run's files are then
        removed, as ``geko train`` does)."""
        with self._lock:
            if self.current is not None and self.busy:
                raise InputError(f"a training run is in progress in {self.current.run_dir}; stop it first")
            form = self.inside_workspace(form)
            if resume is not None:
                resume = self.workspace.path(resume, "checkpoint")
            run_dir = form.output_dir
            args = form.check(resume)  # geko train's parser
            if resume is None:
                earlier = earlier_run_files(run_dir)
                if earlier and not replace:
                    listed = ", ".join(earlier[:4]) + (", ..." if len(earlier) > 4 else "")
                    raise InputError(
                        f"{run_dir} holds an earlier run ({listed}): "
                        "press Resume to continue it, choose another output directory, or tick "
                        "'Replace an earlier run' to start over there")
                args.overwrite = True  # ticked: the app clears it itself, below
            # geko train's own path checks (which refuse to replace a directory that is not a GEKO
            # run) before anything is written or removed
            check_train_paths(args)
            if resume is None:
                # the dashboard must not show the old run while the training process loads
                clear_earlier_run(run_dir)
                (run_dir / LAUNCH_FILE).unlink(missing_ok=True)
                (run_dir / APP_LOG).unlink(missing_ok=True)
            launch_file = write_launch(run_dir, form)
            argv = train_argv(form, resume)
            cmd = worker_command(launch_file, argv, self._python)
            env = dict(os.environ if self._env is None else self._env)
            env.pop(TOKEN_ENV, None)  # the app's login is no business of the training process
            env["PYTHONUNBUFFERED"] = "1"
            shell = shell_command(form, resume)
            with open(run_dir / APP_LOG, "a") as log:
                log.write(f"\n=== geko app {'resume' if resume else 'start'} {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                          f"{shell}\n")
                log.flush()
                popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)  # the terminal's Ctrl-C is the app's
            self.current = Launch(run_dir, popen, cmd, shell, resume)
            return self.current

    def stop(self) -> str:
        """Ask the training process to stop (SIGINT: after the current step, with a checkpoint);
        asked again, stop at once (SIGTERM). Returns what was done, for the page."""
        with self._lock:
            cur = self.current
            if cur is None or cur.returncode is not None:
                return "No training is running."
            cur.stop_requests += 1
            if cur.stop_requests == 1:
                cur.popen.send_signal(signal.SIGINT)
                return ("Stopping: training halts after the current optimizer step and writes a checkpoint "
                        "(press Stop again to stop at once).")
            cur.popen.send_signal(signal.SIGTERM)
            return "Stopping at once."

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop a running training process safely (called when the app exits)."""
        cur = self.current
        if cur is None or cur.returncode is not None:
            return
        cur.popen.send_signal(signal.SIGINT)
        try:
            cur.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            cur.popen.send_signal(signal.SIGTERM)
            try:
                cur.popen.wait(10)
            except subprocess.TimeoutExpired:
                cur.popen.kill()


    def inside_workspace(self, form: TrainForm) -> TrainForm:
        """``form`` with every path resolved inside the workspace (InputError naming the field
        otherwise): model directory, dataset file, output directory and path options."""
        ws = self.workspace
        options = dict(form.options)
        for spec in form_options():
            if spec.kind == "path" and spec.dest != "output_dir" and options.get(spec.dest) is not None:
                options[spec.dest] = str(ws.path(options[spec.dest], spec.flag))
        options["output_dir"] = str(ws.path(form.output_dir, "Output directory"))
        return replace(form, model_dir=str(ws.path(form.model_dir, "Model directory")),
                       data_file=str(ws.path(form.data_file, "Dataset file")), options=options)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b
