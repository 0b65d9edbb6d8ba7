"""What a page opened (or reloaded) while the app has a launch shows: that run and its form.

A page's state lives in the browser tab, so a reload started from the build-time defaults: "No run
yet" and an empty form while training went on. The server-side :class:`~.process.Launcher` knows
its launch; the form it was started with is read back from that run directory's launch file, which
the launcher wrote itself. Nothing here comes from the request. Pure: no gradio.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geko_state.errors import GekoError

from .command import TrainForm, form_options, read_launch
from .fields import config_fields, config_values, training_fields
from .process import Launch, Launcher

__all__ = ["Reattach", "control_values", "current_launch"]

# Control kinds that show a value as it is; the others are text boxes (None shows as empty).
_AS_IS = ("bool", "choice", "column", "int", "float")


@dataclass(frozen=True)
class Reattach:
    """The launch a fresh page follows, and the form it was started with (None: unreadable)."""

    launch: Launch
    form: TrainForm | None

    @property
    def run_dir(self) -> Path:
        return self.launch.run_dir

    @property
    def message(self) -> str:
        what = {"running": "Training is running", "stopping": "Training is stopping"}.get(
            self.launch.state, f"The app's last run ({self.launch.state})")
        return f"**{what}** in `{self.run_dir}`. The same run from a terminal:\n\n`{self.launch.shell}`"


def current_launch(launcher: Launcher) -> Reattach | None:
    """The launcher's latest launch (running or ended), for a page that opens now."""
    launch = launcher.current
    if launch is None:
        return None
    try:
        form = read_launch(launch.run_dir)
    except GekoError:
        form = None  # the dashboard still follows the run; the form keeps its defaults
    return Reattach(launch, form)


def control_values(form: TrainForm, keys: list[tuple[str, str]]) -> list[Any]:
    """The value of each form control ``(section, name)`` (sections "option", "config",
    "training", as the page lists them) for ``form``."""
    options = {o.dest: o for o in form_options()}
    configs = {s.name: s for s in config_fields()}
    trainings = {s.name: s for s in training_fields()}
    config = config_values(form.config)
    out = []
    for section, name in keys:
        if section == "option":
            kind, value = options[name].kind, form.options.get(name, options[name].default)
        elif section == "config":
            kind, value = configs[name].kind, config[name]
        else:
            kind, value = trainings[name].kind, form.training.get(name, trainings[name].default)
        out.append(value if kind in _AS_IS else "" if value is None else str(value))
    return out
