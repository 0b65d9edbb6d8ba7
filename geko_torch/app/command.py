"""From the app's form to the training command: a ``geko train`` command line plus the app's own
settings (every GEKOConfig field, a few GEKOTrainingArgs fields), saved next to the run.

The form's training options are read from the ``geko train`` parser itself (its actions give the
option string, default, choices, help and value type), so an option added to ``geko train`` shows
up in the app without editing it here; :data:`NOT_IN_FORM` lists the options the app sets itself.
Pure: no gradio, no process.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from geko_state.config import PRESETS, GEKOConfig
from geko_state.datafiles import supported_formats
from geko_state.errors import ConfigError, InputError
from geko_state.io import atomic_write_json

from .fields import config_from_values, training_fields, training_from_values

__all__ = [
    "LAUNCH_FILE",
    "NOT_IN_FORM",
    "OptionKind",
    "OptionSpec",
    "TrainForm",
    "form_options",
    "read_launch",
    "shell_command",
    "train_argv",
    "train_parser",
    "worker_command",
    "write_launch",
]

# The launch settings the app writes into the run directory (so Resume, even after the app was
# restarted, runs the same command) and the log of the training process it started.
LAUNCH_FILE = "geko_app.json"
_LAUNCH_FORMAT = "geko-app-launch"
_LAUNCH_VERSION = 1

OptionKind = Literal["bool", "choice", "int", "float", "optional_int", "optional_float", "column", "path", "text"]

# geko train options that are not form fields, and why.
NOT_IN_FORM: dict[str, str] = {
    "help": "argparse's own",
    "model_dir": "the form's model directory",
    "data_file": "the form's dataset file",
    "prune_after": "taken from GEKOConfig.prune_frozen_after (a GEKO setting of the form)",
    "resume": "the Resume button passes the run's newest checkpoint",
    "no_progress": "always on: progress bars do not belong in a log file",
    "overwrite": "the app's 'Replace an earlier run' box: the app clears the earlier run itself before it starts",
}


@dataclass(frozen=True)
class OptionSpec:
    """One ``geko train`` option as a form field."""

    dest: str
    flag: str  # e.g. "--batch-size"
    kind: OptionKind
    default: Any
    group: str  # the parser's argument group title
    choices: tuple[str, ...] = ()
    help: str = ""

    @property
    def label(self) -> str:
        return self.flag.lstrip("-").replace("-", " ")


def train_parser() -> argparse.ArgumentParser:
    """``geko train``'s parser, raising InputError instead of printing and exiting."""
    from ..commands.train import configure

    # No -h/--help: inside the app nothing may print usage and exit (a "-h" path once stopped the server).
    parser = _RaisingParser(prog="geko train", add_help=False)
    configure(parser)
    return parser


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises InputError instead of printing and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise InputError(f"geko train: {message}")

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        raise InputError(f"geko train: {(message or '').strip() or 'refused'}")


def _probe(convert: Any, text: str) -> Any:
    try:
        return convert(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return None


def _kind(a: argparse.Action) -> OptionKind:
    if isinstance(a, argparse._StoreTrueAction):
        return "bool"
    if a.choices:
        return "choice"
    if a.dest.endswith("_field"):
        return "column"
    if isinstance(a.default, bool):
        return "bool"
    if isinstance(a.default, int):
        return "int"
    if isinstance(a.default, float):
        return "float"
    if isinstance(a.default, Path) or a.type is Path:
        return "path"
    if a.type is None or a.type is str:
        return "text"
    # An option without a default: what its converter makes of a probe says which number it takes
    # (the CLI's converters are closures like int>=1 or checks like "a number in [0, 1)").
    as_float = _probe(a.type, "0.5")
    if isinstance(as_float, float):
        return "optional_float"
    if isinstance(_probe(a.type, "1"), int):
        return "optional_int"
    return "text"


@lru_cache(maxsize=1)
def form_options() -> tuple[OptionSpec, ...]:
    """Every ``geko train`` option but :data:`NOT_IN_FORM`, in the parser's order."""
    parser = train_parser()
    group_of = {a.dest: g.title or "" for g in parser._action_groups for a in g._group_actions}
    out = []
    for a in parser._actions:
        if a.dest in NOT_IN_FORM:
            continue
        default = str(a.default) if isinstance(a.default, Path) else a.default
        out.append(OptionSpec(a.dest, a.option_strings[0], _kind(a), default, group_of.get(a.dest, ""),
                              tuple(str(c) for c in a.choices or ()), (a.help or "").replace("%%", "%")))
    return tuple(out)


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _option_value(spec: OptionSpec, value: Any) -> Any:
    """A form value as the option's type; None for an empty optional field."""
    if spec.kind == "bool":
        return bool(value)
    if _blank(value):
        if spec.kind in ("int", "float"):
            raise InputError(f"{spec.flag}: a value is needed (default {spec.default})")
        return None
    if spec.kind in ("int", "optional_int", "float", "optional_float"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{spec.flag}: expected a number, got {value!r}") from None
        if spec.kind in ("int", "optional_int"):
            if not number.is_integer():
                raise InputError(f"{spec.flag}: expected a whole number, got {value!r}")
            return int(number)
        return number
    text = str(value).strip()
    if spec.kind == "choice" and text not in spec.choices:
        raise InputError(f"{spec.flag}: expected one of {list(spec.choices)}, got {text!r}")
    return text


@dataclass(frozen=True)
class TrainForm:
    """What the app launches: the ``geko train`` arguments and the app's own settings."""

    model_dir: str
    data_file: str
    options: dict[str, Any]  # dest -> value (None: not given) for every form option
    config: GEKOConfig
    training: dict[str, Any] = field(default_factory=dict)  # GEKOTrainingArgs fields (fields.APP_TRAINING_FIELDS)

    @classmethod
    def from_values(cls, model_dir: Any, data_file: Any, options: dict[str, Any], config: dict[str, Any],
                    training: dict[str, Any]) -> TrainForm:
        """Parse the page's values (InputError / ConfigError naming the field); the command line is
        then checked by the ``geko train`` parser itself."""
        if _blank(model_dir):
            raise InputError("Model directory: give a local Hugging Face model directory (config.json, "
                             "weights, tokenizer files)")
        if _blank(data_file):
            raise InputError(f"Dataset file: give a local dataset file ({supported_formats()}), one sample per row")
        specs = {s.dest: s for s in form_options()}
        unknown = set(options) - set(specs)
        if unknown:
            raise InputError(f"unknown geko train options {sorted(unknown)}")
        parsed = {dest: _option_value(s, options.get(dest, s.default)) for dest, s in specs.items()}
        form = cls(str(model_dir).strip(), str(data_file).strip(), parsed, config_from_values(config),
                   training_from_values(training))
        form.check()
        return form

    @property
    def output_dir(self) -> Path:
        return Path(self.options.get("output_dir") or next(s.default for s in form_options() if s.dest == "output_dir"))

    def check(self, resume: str | os.PathLike | None = None) -> argparse.Namespace:
        """Parse :func:`train_argv` with the ``geko train`` parser; InputError with its message."""
        return train_parser().parse_args(train_argv(self, resume))

    def to_dict(self) -> dict[str, Any]:
        return {"format": _LAUNCH_FORMAT, "version": _LAUNCH_VERSION, "model_dir": self.model_dir,
                "data_file": self.data_file, "options": self.options, "config": self.config.to_dict(),
                "training": self.training, "argv": train_argv(self)}

    @classmethod
    def from_dict(cls, data: Any) -> TrainForm:
        if not isinstance(data, dict) or data.get("format") != _LAUNCH_FORMAT:
            raise InputError(f"not a {LAUNCH_FILE} of geko app (expected format {_LAUNCH_FORMAT!r})")
        if data.get("version") != _LAUNCH_VERSION:
            raise InputError(f"{LAUNCH_FILE} version {data.get('version')!r}; this app reads version {_LAUNCH_VERSION}")
        try:
            known = {s.dest for s in form_options()}
            options = {k: v for k, v in data["options"].items() if k in known}
            form = cls(str(data["model_dir"]), str(data["data_file"]), options,
                       GEKOConfig.from_dict(data["config"]), dict(data.get("training") or {}))
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{LAUNCH_FILE}: missing or malformed entry ({e})") from None
        return form


def _format(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def train_argv(form: TrainForm, resume: str | os.PathLike | None = None) -> list[str]:
    """The ``geko train`` arguments (after ``train``) for ``form``: options that differ from the
    command's defaults, ``--prune-after`` from the config, ``--no-progress``, and ``--resume``."""
    argv = [form.model_dir, form.data_file]
    for spec in form_options():
        value = form.options.get(spec.dest)
        if value is None or value == spec.default:
            continue
        if spec.kind == "bool":
            argv.append(spec.flag)  # only True differs from a store_true default
        else:
            argv += [spec.flag, _format(value)]
    if form.config.prune_frozen_after:
        argv += ["--prune-after", str(form.config.prune_frozen_after)]
    argv.append("--no-progress")
    if resume is not None:
        argv += ["--resume", str(resume)]
    return argv


def app_settings(form: TrainForm) -> dict[str, Any]:
    """Settings the training process applies beyond its command line: the whole GEKOConfig (the
    command line carries only the preset) and the app's GEKOTrainingArgs fields."""
    return {"config": form.config.to_dict(), "training": form.training}


def differs_from_command(form: TrainForm) -> list[str]:
    """Settings of ``form`` that ``geko train`` with the same command line would not apply."""
    preset = PRESETS[form.options.get("preset") or "default"]
    # geko train builds PRESET.replace(prune_frozen_after=--prune-after, log_bucket_stats=False)
    cli_config = preset.replace(prune_frozen_after=form.config.prune_frozen_after, log_bucket_stats=False)
    ours, theirs = form.config.to_dict(), cli_config.to_dict()
    out = [f"{k}={ours[k]!r}" for k in ours if ours[k] != theirs[k] and k != "log_bucket_stats"]
    defaults = {s.name: s.default for s in training_fields()}
    from ..training_args import GEKOTrainingArgs

    plain = {k: getattr(GEKOTrainingArgs(), k) for k in defaults}
    out += [f"{k}={v!r}" for k, v in form.training.items() if v != plain[k]]
    return out


def shell_command(form: TrainForm, resume: str | os.PathLike | None = None) -> str:
    """``geko train ...`` for ``form``, as one shell line."""
    return "geko train " + shlex.join(train_argv(form, resume))


def worker_command(launch_file: str | os.PathLike, argv: list[str], python: str | None = None) -> list[str]:
    """The training process's command: the app's worker module with the launch file and ``argv``."""
    return [python or sys.executable, "-m", "geko_torch.app.worker", "--settings", str(launch_file), "--", *argv]


def write_launch(run_dir: str | os.PathLike, form: TrainForm) -> Path:
    """Write ``RUN_DIR/geko_app.json`` (atomically) and return its path."""
    path = Path(run_dir) / LAUNCH_FILE
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, form.to_dict())
    return path


def read_launch(run_dir: str | os.PathLike) -> TrainForm | None:
    """The form a run directory was launched with by the app, or None when it was not."""
    path = Path(run_dir) / LAUNCH_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable ({e})") from None
    try:
        return TrainForm.from_dict(data)
    except (InputError, ConfigError) as e:
        raise InputError(f"{path}: {e}") from None
