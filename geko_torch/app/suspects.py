"""The Suspects panel: the watched run's most suspicious samples (probably mislabeled), with each
one's data row when the app knows the run's dataset file. No gradio.

What it reads, and why that keeps the app's rules (``guard``, ``workspace``): the run's own state
file, and for the text column the dataset file that the run's launch file (``geko_app.json``,
written by the app at Start) names, only when that file lies inside the workspace. A request
chooses the score's name, checked against :data:`geko_state.noise.NOISE_SCORES`, never a path.
"""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from geko_state.errors import GekoError
from geko_state.noise import NOISE_SCORES, SuspectsConfig
from geko_state.run import Run

from .command import form_options, read_launch
from .workspace import Workspace

__all__ = ["PANEL_ROWS", "panel_config", "run_data_file", "suspects_panel"]

PANEL_ROWS = 50  # suspects shown; `geko suspects` writes them all


def panel_config(score: str, rows: int = PANEL_ROWS) -> SuspectsConfig:
    """The suspects above the score's own cut; for a score without one (loss), the ``rows`` highest.
    ConfigError for a name that is not a registered score."""
    known = NOISE_SCORES.get(score)
    return SuspectsConfig(score=score, top=rows if known is not None and known.default_cut is None else None)


def run_data_file(run_dir: str | os.PathLike, workspace: Workspace | None) -> tuple[Path | None, list[str], str]:
    """(the run's dataset file or None, its training columns, why there is none): from the run's
    launch file, inside ``workspace`` only."""
    if workspace is None:
        return None, [], "no workspace to read dataset files from"
    try:
        form = read_launch(run_dir)
    except GekoError as e:
        return None, [], str(e)
    if form is None:
        return None, [], ("the app did not start this run, so its dataset file is unknown "
                          "(`geko suspects RUN_DIR --data FILE` shows the rows)")
    if not workspace.contains(form.data_file):
        return None, [], f"its dataset file is outside the app's workspace {workspace.root}"
    columns = [form.options[o.dest] for o in form_options() if o.kind == "column" and form.options.get(o.dest)]
    return workspace.path(form.data_file, "Dataset file"), columns, ""


def suspects_panel(run_dir: str | os.PathLike | None, score: str, workspace: Workspace | None,
                   rows: int = PANEL_ROWS) -> tuple[pl.DataFrame | None, str]:
    """(the first ``rows`` suspects as text, or None; the note above them, Markdown)."""
    from geko_state.store import StateStore
    from geko_state.suspects import read_suspects

    if not run_dir:
        return None, "Open a run first (Start, Resume, or `geko app --run RUN_DIR`)."
    try:
        config = panel_config(score, rows)
        with StateStore.open(Run(Path(run_dir)).state_path, mode="r") as store:
            found = read_suspects(store, config)
    except (GekoError, OSError) as e:
        return None, f"**No suspects:** {e}"
    note = found.summary() + (f" (first {rows:,} shown)" if found.table.num_rows > rows else "")
    data, columns, why = run_data_file(run_dir, workspace)
    if data is not None:
        try:
            return found.display(rows, dataset=data, columns=columns, what="dataset file"), note
        except (GekoError, OSError) as e:
            why = str(e)
    return found.display(rows), f"{note}\n\nNo data rows: {why}."

