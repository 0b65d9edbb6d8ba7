"""The training process the app starts: ``geko train`` with the app's settings and a safe stop.

    python -m geko_torch.app.worker --settings RUN_DIR/geko_app.json -- MODEL DATA --text-field ... 

Runs exactly the ``geko train`` command (same parser, checks, data loading, trainer and outputs),
with two additions:

* the trainer gets the launch file's GEKOConfig (every field, not only a preset) and its
  GEKOTrainingArgs settings (``logging_steps``, ``weight_decay``, ...);
* SIGINT / SIGTERM ask the trainer to stop (:meth:`GEKOTrainer.request_stop`): it finishes the
  optimizer step it is in, writes ``checkpoint-<step>`` and returns, so the run can be resumed
  exactly. A stop asked for while the model or data are still loading takes effect at the first
  optimizer step (so there is always a checkpoint to resume from). A second signal stops at once.

Both go through :func:`geko_torch.commands.train.run_train`'s arguments (``config``, ``training``,
``on_trainer``): the same command, nothing patched.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from geko_state.config import GEKOConfig
from geko_state.errors import ConfigError, GekoError, InputError

__all__ = ["EXIT_FORCED", "Stopper", "main", "read_settings"]

EXIT_FORCED = 130  # stopped at once by a second signal
PREFIX = "[geko app]"


def _say(text: str) -> None:
    print(f"{PREFIX} {text}", flush=True)


class Stopper:
    """Turns SIGINT / SIGTERM into ``trainer.request_stop()``; a second signal raises
    KeyboardInterrupt (stop now)."""

    def __init__(self) -> None:
        self.requested = False
        self.trainer: Any = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        if self.trainer is None:
            _say(f"{name}: stop requested; the model is still loading, training will stop at its first "
                 "optimizer step with a checkpoint (send it again to stop at once)")
        else:
            _say(f"{name}: stop requested; stopping after the current optimizer step with a checkpoint")
            self.trainer.request_stop()

    def attach(self, trainer: Any) -> None:
        """The trainer geko train built (its ``on_trainer`` callback): a stop asked for while the
        model was loading is passed on, so training stops at its first step, with a checkpoint."""
        self.trainer = trainer
        if self.requested:
            trainer.request_stop()


def read_settings(path: Path) -> tuple[GEKOConfig | None, dict[str, Any]]:
    """The GEKOConfig and GEKOTrainingArgs settings of a launch file (InputError / ConfigError)."""
    from ..training_args import GEKOTrainingArgs

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"--settings {path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"--settings {path}: expected a JSON object")
    config = GEKOConfig.from_dict(data["config"]) if data.get("config") is not None else None
    training = dict(data.get("training") or {})
    try:
        GEKOTrainingArgs().replace(**training)
    except ConfigError as e:
        raise ConfigError(f"--settings {path}: training: {e}") from None
    return config, training


def _parse(argv: list[str]) -> tuple[Path | None, list[str]]:
    if "--" not in argv:
        raise InputError("usage: python -m geko_torch.app.worker [--settings FILE] -- GEKO_TRAIN_ARGS...")
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m geko_torch.app.worker")
    p.add_argument("--settings", type=Path, default=None, help="the app's launch file (geko_app.json)")
    own = p.parse_args(argv[:cut])
    return own.settings, argv[cut + 1:]


def _report_end(stopper: Stopper, train_argv: list[str]) -> None:
    if not stopper.requested or stopper.trainer is None:
        return
    import shlex

    from .runs import checkpoints

    t = stopper.trainer
    cks = checkpoints(t.run.root)
    if not cks or cks[-1].finished:  # the stop came after the last step: the run is complete
        return
    ckpt = cks[-1].path
    argv = list(train_argv)
    if "--resume" in argv:  # this process was itself a resume: the new checkpoint replaces that one
        i = argv.index("--resume")
        del argv[i:i + 2]
    _say(f"stopped on request at step {cks[-1].step}; checkpoint: {ckpt}; resume it with Resume in the app, "
         f"or: geko train {shlex.join(argv)} --resume {shlex.quote(str(ckpt))}")


def main(argv: list[str] | None = None) -> int:
    """Run ``geko train`` with the app's settings; returns its exit status."""
    from ..commands.train import run_train
    from .command import train_parser

    stopper = Stopper()
    stopper.install()
    try:
        settings, train_argv = _parse(sys.argv[1:] if argv is None else argv)
        config, training = read_settings(settings) if settings is not None else (None, {})
        args = train_parser().parse_args(train_argv)
    except GekoError as e:
        print(f"geko train: error: {e}", file=sys.stderr, flush=True)
        return 2
    _say("training process started: geko train " + " ".join(train_argv))
    try:
        status = run_train(args, config=config, training=training, on_trainer=stopper.attach)
    except KeyboardInterrupt:
        _say("stopped at once (second stop request); resume from the newest complete checkpoint")
        return EXIT_FORCED
    except GekoError as e:
        print(f"geko train: error: {e}", file=sys.stderr, flush=True)
        return 2
    if status == 0:
        _report_end(stopper, train_argv)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
