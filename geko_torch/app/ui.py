"""The page: a configuration panel (left) and a live dashboard of one run directory (right).

Controls are generated from their sources (``command.form_options()``: the ``geko train`` options;
``fields.config_fields()``: every GEKOConfig field; ``fields.training_fields()``), never listed by
hand. The dashboard reads only the run directory (``runs.read_run``), on a timer; the Suspects
panel reads the run's state and, inside the workspace only, its dataset file (``suspects``).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from geko_state.config import PRESETS
from geko_state.errors import GekoError, InputError
from geko_state.noise import DEFAULT_NOISE_SCORE, NOISE_SCORES
from geko_state.plots import BUCKET_COLORS
from geko_state.schema import BUCKET_NAMES

from . import runs
from .command import TrainForm, differs_from_command, form_options, read_launch
from .dashboard import (
    bucket_caption,
    hardware_line,
    run_status,
    stat_boxes,
    stats_html,
    summary_card,
)
from .datafile import data_columns, guess_fields
from .fields import FieldSpec, config_fields, config_values, training_fields
from .guard import AccessPolicy, HostGuard
from .process import Launcher, resume_checkpoint
from .reattach import control_values, current_launch
from .suspects import suspects_panel
from .workspace import Workspace

__all__ = ["CSS", "DEFAULT_SQL", "build_app", "gradio"]

DEFAULT_SQL = "SELECT bucket, count(*) AS samples FROM samples GROUP BY bucket ORDER BY samples DESC"
_SQL_ROWS = 1_000
_SQL_TIMEOUT_S = 30.0  # a query from the page may not keep the app busy for longer

# Where a geko train option appears, when not in the panel named after its parser group.
_PANEL_OF: dict[str, str] = {
    "precision": "Precision and efficiency", "gradient_checkpointing": "Precision and efficiency",
    "compile": "Precision and efficiency", "workers": "Precision and efficiency",
}
_PANEL_TITLES: dict[str, str] = {
    "training": "Training", "GEKO": "GEKO selection", "LoRA (peft)": "LoRA",
}

CSS = """
.geko-status { padding: 10px 14px; border-radius: 8px; font-weight: 600; margin-bottom: 8px;
               background: #eef2f7; color: #1f2937; border-left: 6px solid #9ca3af; }
.geko-status-starting, .geko-status-training, .geko-status-live { background: #e8f1fd; border-left-color: #2563eb; }
.geko-status-stopping { background: #fff7e6; border-left-color: #d97706; }
.geko-status-stopped, .geko-status-idle { background: #fff4e5; border-left-color: #ea580c; }
.geko-status-complete { background: #e9f8ee; border-left-color: #16a34a; }
.geko-status-error { background: #fdecec; border-left-color: #dc2626; }
.geko-stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(110px, 1fr)); gap: 8px; }
.geko-stat { border: 1px solid #e5e7eb; border-radius: 8px; padding: 6px 10px; background: white; }
.geko-stat-label { font-size: 12px; color: #6b7280; }
.geko-stat-value { font-size: 18px; font-weight: 600; color: #111827; font-variant-numeric: tabular-nums; }
#geko-hardware { font-size: 13px; color: #4b5563; }
.geko-card { border-radius: 8px; padding: 10px 14px; border: 1px solid #e5e7eb; }
.geko-card h3 { margin: 0 0 8px 0; font-size: 16px; }
.geko-card table { border-collapse: collapse; width: 100%; font-size: 14px; border: none !important; margin: 0; }
.geko-card tr, .geko-card th, .geko-card td { border: none !important; background: transparent !important; }
.geko-card th { text-align: left; font-weight: 500; color: #4b5563; padding: 3px 12px 3px 0 !important;
                white-space: nowrap; vertical-align: top; }
.geko-card td { padding: 3px 0 !important; overflow-wrap: anywhere; }
.geko-card code { overflow-wrap: anywhere; }
.geko-card-complete { background: #f0fbf4; border-color: #86efac; }
.geko-card-stopped { background: #fff8ef; border-color: #fdba74; }
.geko-card-error { background: #fef2f2; border-color: #fca5a5; }
/* Shared equally with the summary card, the moves table was cut off (scrolled) at 1400 px: it
   takes the larger share and at least the width of its five columns, and the card wraps below
   it when both do not fit side by side. */
#geko-moves-row { flex-wrap: wrap !important; }
#geko-transitions { flex: 3 1 460px !important; min-width: min(460px, 100%) !important; }
#geko-summary { flex: 2 1 300px !important; min-width: min(300px, 100%) !important; }
#geko-log textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
"""


def gradio() -> Any:
    """The gradio module, or MissingDependencyError with the install hint."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as e:
        from geko_state.plots import MissingDependencyError

        raise MissingDependencyError(f"geko app needs gradio: pip install 'geko-engine[app]' ({e})") from None
    return gr


def _no_exit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A page handler that cannot stop the server: a SystemExit from below (argparse, a library)
    becomes an error message on the page instead of escaping gradio's worker."""

    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SystemExit as e:
            raise gradio().Error(f"refused ({type(e).__name__} {e.code})") from None

    return handler


# ---------------------------------------------------------------------- controls from specs
def _control(gr: Any, kind: str, name: str, label: str, default: Any, help: str, elem_id: str,
             choices: tuple[str, ...] = (), min_width: int = 220) -> Any:
    kw = {"label": label, "info": help or None, "elem_id": elem_id, "min_width": min_width}
    if kind == "bool":
        return gr.Checkbox(value=bool(default), **kw)
    if kind == "choice":
        return gr.Dropdown(choices=list(choices), value=default, **kw)
    if kind == "column":
        return gr.Dropdown(choices=[], value=None, allow_custom_value=True, **kw)
    if kind == "int":
        return gr.Number(value=default, precision=0, **kw)
    if kind == "float":
        return gr.Number(value=default, step=0.01, **kw)
    # Optional numbers are text boxes: an empty gr.Number shows (and may send) 0, not "none".
    value = "" if default is None else str(default)
    return gr.Textbox(value=value, placeholder=_placeholder(help), **kw)


def _placeholder(help: str) -> str | None:
    """"(default 8)" at the end of a help text -> "default 8"."""
    if "default" in help:
        return help[help.rindex("default"):].split(")")[0].rstrip(":")
    return "empty: none"


def _config_control(gr: Any, spec: FieldSpec) -> Any:
    default = config_values(PRESETS["default"])[spec.name]
    return _control(gr, "text" if spec.kind == "weights" else spec.kind, spec.name, spec.label, default,
                    spec.help, f"geko-cfg-{spec.name}", spec.choices)


def _training_control(gr: Any, spec: FieldSpec) -> Any:
    return _control(gr, spec.kind, spec.name, spec.label, spec.default, spec.help, f"geko-train-{spec.name}",
                    spec.choices)


# ---------------------------------------------------------------------- the page
def build_app(*, run_dir: str | os.PathLike | None = None, launcher: Launcher | None = None,
              default_output: str | None = None, refresh_s: float = 1.5, workspace: Workspace | None = None) -> Any:
    """The gradio Blocks of ``geko app``. ``run_dir``: a read-only dashboard of that run (no form,
    no Start/Stop); otherwise the full app, training through ``launcher``. ``workspace``: where data
    files may be read (default the launcher's; a read-only app without one shows no data rows)."""
    gr = gradio()
    read_only = run_dir is not None
    if not read_only and launcher is None:
        launcher = Launcher()
    if workspace is None and launcher is not None:
        workspace = launcher.workspace
    hardware = hardware_line()
    options = form_options()
    cfg_specs = config_fields()
    tr_specs = training_fields()

    with gr.Blocks(title="GEKO", analytics_enabled=False, fill_width=True) as demo:
        gr.Markdown("## GEKO fine-tuning" + (f" · read-only view of `{run_dir}`" if read_only else ""),
                    elem_id="geko-title")
        gr.Markdown(hardware, elem_id="geko-hardware")
        watch = gr.State(str(run_dir) if read_only else _initial_watch(launcher, default_output, options))
        last_sig = gr.State(None)
        form_controls: list[tuple[str, str, Any]] = []  # (section, name, component)

        with gr.Row(equal_height=False):
            if not read_only:
                with gr.Column(scale=2, min_width=380):
                    gr.Markdown(f"Workspace: `{launcher.workspace.root}` (model, data and output paths are "  # type: ignore[union-attr]
                                "taken inside it)", elem_id="geko-workspace")
                    model_dir = gr.Textbox(label="Model directory", elem_id="geko-model-dir",
                                           placeholder="./my-model (a local Hugging Face model: config.json, "
                                                       "weights, tokenizer)")
                    data_file = gr.Textbox(label="Dataset file", elem_id="geko-data-file",
                                           placeholder="data.jsonl / .parquet / .csv / .arrow, one sample per row; "
                                                       "press Enter to read its columns")
                    data_note = gr.Markdown("", elem_id="geko-data-note")
                    by_panel: dict[str, list[Any]] = {}
                    for o in options:
                        by_panel.setdefault(_PANEL_OF.get(o.dest, o.group), []).append(o)
                    out_opt = next(o for o in by_panel.pop("output") if o.dest == "output_dir")
                    output_ctl = _control(gr, out_opt.kind, out_opt.dest, "Output directory (run directory)",
                                          default_output or out_opt.default, out_opt.help, "geko-opt-output_dir")
                    form_controls.append(("option", out_opt.dest, output_ctl))
                    replace_ctl = gr.Checkbox(value=False, label="Replace an earlier run in the output directory",
                                              elem_id="geko-replace")
                    with gr.Row():
                        start_btn = gr.Button("Start", variant="primary", elem_id="geko-start", min_width=80)
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="geko-stop", min_width=80)
                        resume_btn = gr.Button("Resume", elem_id="geko-resume", min_width=80)
                        clear_btn = gr.Button("Clear", elem_id="geko-clear", min_width=80)
                    message = gr.Markdown("", elem_id="geko-message")

                    def add(section: str, name: str, make: Callable[[], Any]) -> Any:
                        c = make()
                        form_controls.append((section, name, c))
                        return c

                    def option_maker(o: Any) -> Callable[[], Any]:
                        return lambda: _control(gr, o.kind, o.dest, o.label, o.default, o.help, f"geko-opt-{o.dest}",
                                                o.choices)

                    def panel(title: str, items: list[tuple[str, str, str, Callable[[], Any]]], *,
                              open_: bool) -> dict[str, Any]:
                        """Controls of one accordion: fields flow in a wrapping row, check boxes
                        below them (in a row they would be squeezed to a sliver)."""
                        made: dict[str, Any] = {}
                        with gr.Accordion(title, open=open_):
                            with gr.Row():
                                for section, name, kind, make in items:
                                    if kind != "bool":
                                        made[name] = add(section, name, make)
                            with gr.Row():
                                for section, name, kind, make in items:
                                    if kind == "bool":
                                        made[name] = add(section, name, make)
                        return made

                    data_group = next(g for g in by_panel if g.startswith("data"))
                    made = panel("Data fields (choose prompt + response, messages, text, or text + label)",
                                 [("option", o.dest, o.kind, option_maker(o)) for o in by_panel.pop(data_group)],
                                 open_=True)
                    column_controls = {o.dest: made[o.dest] for o in options if o.kind == "column"}
                    preset_ctl = None
                    for group, opts in by_panel.items():
                        items = [("option", o.dest, o.kind, option_maker(o)) for o in opts]
                        if group == "Precision and efficiency":
                            items += [("training", s.name, s.kind, (lambda s=s: _training_control(gr, s)))
                                      for s in tr_specs if s.name == "use_8bit_optimizer"]
                        made = panel(_PANEL_TITLES.get(group, group), items, open_=group == "training")
                        preset_ctl = made.get("preset", preset_ctl)
                        if group == "GEKO":
                            gkinds = {"weights": "text"}
                            panel("GEKOConfig: every setting (the preset above fills them in)",
                                  [("config", s.name, gkinds.get(s.kind, s.kind), (lambda s=s: _config_control(gr, s)))
                                   for s in cfg_specs], open_=False)
                    panel("Advanced", [("training", s.name, s.kind, (lambda s=s: _training_control(gr, s)))
                                       for s in tr_specs if s.name != "use_8bit_optimizer"], open_=False)

            with gr.Column(scale=3, min_width=480):
                stats = gr.HTML("", elem_id="geko-dashboard")
                with gr.Row():
                    loss_plot = gr.LinePlot(None, x="step", y="loss", color="series", title="Loss",
                                            elem_id="geko-loss-plot", height=260,
                                            color_map=_LOSS_COLORS)
                    bucket_plot = gr.BarPlot(None, x="epoch", y="share", color="bucket", title="Bucket shares (%)",
                                             elem_id="geko-bucket-plot", height=260, color_map=BUCKET_COLORS,
                                             y_lim=[0, 100])
                caption = gr.Markdown("", elem_id="geko-bucket-caption")
                # widths in CSS (#geko-moves-row): the table keeps its five columns whole
                with gr.Row(equal_height=False, elem_id="geko-moves-row"):
                    transitions = gr.Dataframe(_empty_moves(),
                                               label="Bucket moves over all epochs (rows: from, columns: to)",
                                               elem_id="geko-transitions", interactive=False)
                    card = gr.HTML("", elem_id="geko-summary")
                with gr.Accordion("SQL over the run (views: samples, history, epochs, transitions, transition_counts)",
                                  open=True):
                    with gr.Row(equal_height=True):
                        sql_box = gr.Textbox(DEFAULT_SQL, label="Query", lines=2, elem_id="geko-sql", scale=5)
                        sql_btn = gr.Button("Run query", elem_id="geko-sql-run", scale=1)
                    sql_note = gr.Markdown("", elem_id="geko-sql-note")
                    sql_result = gr.Dataframe(None, elem_id="geko-sql-result", interactive=False, max_height=300,
                                              visible=False)
                with gr.Accordion("Suspects: samples whose label is probably wrong (docs/noise.md)", open=False):
                    with gr.Row(equal_height=True):
                        suspects_score = gr.Dropdown(sorted(NOISE_SCORES), value=DEFAULT_NOISE_SCORE,
                                                     label="Noise score", elem_id="geko-suspects-score", scale=2)
                        suspects_btn = gr.Button("Find suspects", elem_id="geko-suspects-run", scale=1)
                    suspects_note = gr.Markdown("", elem_id="geko-suspects-note")
                    suspects_result = gr.Dataframe(None, elem_id="geko-suspects-result", interactive=False,
                                                   max_height=300, visible=False)
                with gr.Accordion("Training log", open=False):
                    log_box = gr.Textbox("", lines=14, max_lines=14, label=None, show_label=False,
                                         elem_id="geko-log", interactive=False, autoscroll=True)

        dash_outputs = [stats, loss_plot, bucket_plot, caption, transitions, card, log_box, last_sig]

        @_no_exit
        def refresh(watched: str | None, memo: Any) -> list[Any]:
            return _refresh(gr, watched, memo, launcher)

        timer = gr.Timer(refresh_s)
        timer.tick(refresh, inputs=[watch, last_sig], outputs=dash_outputs, show_progress="hidden")

        @_no_exit
        def run_sql(watched: str | None, sql: str) -> tuple[Any, str]:
            return _run_sql(watched, sql)

        sql_btn.click(run_sql, inputs=[watch, sql_box], outputs=[sql_result, sql_note])
        sql_box.submit(run_sql, inputs=[watch, sql_box], outputs=[sql_result, sql_note])

        @_no_exit
        def show_suspects(watched: str | None, score: str) -> tuple[Any, str]:
            return _show_suspects(watched, score, workspace)

        suspects_btn.click(show_suspects, inputs=[watch, suspects_score], outputs=[suspects_result, suspects_note])

        if read_only:
            demo.load(refresh, inputs=[watch, last_sig], outputs=dash_outputs, show_progress="hidden")
            return demo

        components = [c for _, _, c in form_controls]
        keys = [(section, name) for section, name, _ in form_controls]

        def form_of(model: str, data: str, values: tuple[Any, ...]) -> TrainForm:
            """The page's values as a form, its paths taken inside the workspace (the launcher
            checks them again; resolving first also keeps a "-h" away from the parser)."""
            ws = launcher.workspace  # type: ignore[union-attr]
            groups: dict[str, dict[str, Any]] = {"option": {}, "config": {}, "training": {}}
            for (section, name), v in zip(keys, values):
                groups[section][name] = v
            if not _blank(groups["option"].get("output_dir")):
                groups["option"]["output_dir"] = str(ws.path(groups["option"]["output_dir"], "Output directory"))
            return TrainForm.from_values(str(ws.path(model, "Model directory")), str(ws.path(data, "Dataset file")),
                                         groups["option"], groups["config"], groups["training"])

        @_no_exit
        def on_start(model: str, data: str, replace_earlier: bool, *values: Any) -> tuple[Any, ...]:
            try:
                form = form_of(model, data, values)
                launch = launcher.start(form, replace=replace_earlier)  # type: ignore[union-attr]
            except GekoError as e:
                return f"**Not started:** {e}", gr.skip(), gr.skip()
            return _started_message("Started", launch.shell, form), str(launch.run_dir), None

        @_no_exit
        def on_resume(model: str, data: str, replace_earlier: bool, *values: Any) -> tuple[Any, ...]:
            try:
                out = dict(zip(keys, values)).get(("option", "output_dir"))
                if not out or not str(out).strip():
                    raise InputError("Output directory: give the run directory to resume")
                run_dir_ = launcher.workspace.path(out, "Output directory")  # type: ignore[union-attr]
                ckpt = resume_checkpoint(run_dir_)
                saved = read_launch(run_dir_)
                if saved is not None:
                    form = replace(saved, options={**saved.options, "output_dir": str(run_dir_)})
                    how = f"with the settings it was started with ({run_dir_ / 'geko_app.json'})"
                else:
                    form = form_of(model, data, values)
                    how = "with the settings in the form (this run was not started by the app)"
                launch = launcher.start(form, resume=ckpt)  # type: ignore[union-attr]
            except GekoError as e:
                return f"**Not resumed:** {e}", gr.skip(), gr.skip()
            return _started_message(f"Resumed from {ckpt.name} {how}", launch.shell, form), str(launch.run_dir), None

        @_no_exit
        def on_stop() -> str:
            return launcher.stop()  # type: ignore[union-attr]

        @_no_exit
        def on_clear() -> list[Any]:
            if launcher.busy:  # type: ignore[union-attr]
                return ["Training is running: stop it before clearing.", *[gr.skip()] * 13]
            return ["Cleared the dashboard (the run directory's files are kept).", None, None,
                    *_blank_dashboard(gr), gr.update(value=None, visible=False), "",
                    gr.update(value=None, visible=False), ""]

        @_no_exit
        def on_data_file(path: str) -> list[Any]:
            if not path or not path.strip():
                return ["", *[gr.skip()] * len(column_controls)]
            try:
                cols = data_columns(str(launcher.workspace.path(path, "Dataset file")))  # type: ignore[union-attr]
            except GekoError as e:
                return [f"**Dataset file:** {e}", *[gr.skip()] * len(column_controls)]
            guess = guess_fields(cols)
            updates = [gr.update(choices=cols, value=guess.get(dest)) for dest in column_controls]
            return [f"Columns: {', '.join(f'`{c}`' for c in cols)}", *updates]

        @_no_exit
        def on_preset(name: str) -> list[Any]:
            if name not in PRESETS:
                raise gr.Error(f"unknown preset {name!r}")
            values = config_values(PRESETS[name])
            return [values[s.name] for s in cfg_specs]

        @_no_exit
        def on_output_dir(path: str, watched: str | None) -> tuple[Any, Any]:
            if launcher.busy or not launcher.workspace.contains(path):  # type: ignore[union-attr]
                return gr.skip(), gr.skip()  # the dashboard never watches a directory outside the workspace
            return str(launcher.workspace.path(path, "Output directory")), None  # type: ignore[union-attr]

        @_no_exit
        def on_load() -> list[Any]:
            """A page opened or reloaded while the app has a launch follows that run, its form filled in."""
            found = current_launch(launcher)  # type: ignore[arg-type]
            if found is None:
                return [gr.skip()] * (5 + len(components))
            if found.form is None:
                return [found.message, str(found.run_dir), None, *[gr.skip()] * (2 + len(components))]
            values = control_values(found.form, keys)
            columns = _columns_of(launcher, found.form.data_file)  # type: ignore[arg-type]
            for i, c in enumerate(components):
                if any(c is cc for cc in column_controls.values()):
                    values[i] = gr.update(choices=columns or ([values[i]] if values[i] else []), value=values[i])
            return [found.message, str(found.run_dir), None, found.form.model_dir, found.form.data_file, *values]

        form_inputs = [model_dir, data_file, replace_ctl, *components]
        demo.load(on_load, outputs=[message, watch, last_sig, model_dir, data_file, *components]).then(
            refresh, inputs=[watch, last_sig], outputs=dash_outputs, show_progress="hidden")
        start_btn.click(on_start, inputs=form_inputs, outputs=[message, watch, last_sig])
        resume_btn.click(on_resume, inputs=form_inputs, outputs=[message, watch, last_sig])
        stop_btn.click(on_stop, outputs=[message])
        clear_btn.click(on_clear, outputs=[message, watch, last_sig, stats, loss_plot, bucket_plot, caption,
                                           transitions, card, log_box, sql_result, sql_note, suspects_result,
                                           suspects_note])
        for event in (data_file.submit, data_file.blur):
            event(on_data_file, inputs=[data_file], outputs=[data_note, *column_controls.values()])
        if preset_ctl is not None:
            by_name = {name: c for section, name, c in form_controls if section == "config"}
            cfg_components = [by_name[s.name] for s in cfg_specs]  # the order on_preset returns
            # input, not change: a form filled in on load keeps its own settings
            preset_ctl.input(on_preset, inputs=[preset_ctl], outputs=cfg_components)
        for event in (output_ctl.submit, output_ctl.blur):
            event(on_output_dir, inputs=[output_ctl, watch], outputs=[watch, last_sig])
    return demo


def _blank(value: Any) -> bool:
    return value is None or not str(value).strip()


def _columns_of(launcher: Launcher, data_file: str) -> list[str]:
    """The columns of a data file inside the workspace ([] when it cannot be read)."""
    try:
        return data_columns(str(launcher.workspace.path(data_file, "Dataset file")))
    except GekoError:
        return []


def _initial_watch(launcher: Launcher, default_output: str | None, options: tuple) -> str | None:
    """The dashboard starts on the default output directory when it already holds a run."""
    out = default_output or next((str(o.default) for o in options if o.dest == "output_dir"), None)
    if not out or not launcher.workspace.contains(out):
        return None
    path = launcher.workspace.path(out, "Output directory")
    if any((path / name).is_file() for name in (runs.TRAINER_LOG, "epochs.parquet")):
        return str(path)
    return None


def _started_message(what: str, shell: str, form: TrainForm) -> str:
    extra = differs_from_command(form)
    text = f"**{what}.** The same run from a terminal:\n\n`{shell}`"
    if extra:
        text += "\n\nplus the app's settings (saved in `geko_app.json`): " + ", ".join(f"`{e}`" for e in extra)
    return text


def _empty_moves() -> Any:
    import pandas as pd

    return pd.DataFrame(columns=["from", *(f"to {b}" for b in BUCKET_NAMES)])


def _blank_dashboard(gr: Any) -> list[Any]:
    """Values that empty stats, loss plot, bucket plot, caption, transitions, card, log."""
    return ["", None, None, "", _empty_moves(), "", ""]


_LOSS_COLORS = {runs.LOSS_SERIES: "#2563eb", runs.MEAN_SERIES: "#2563eb", runs.EVAL_SERIES: "#dc2626"}


def _loss_frame(curve: Any) -> Any:
    """The loss chart's data: ``curve`` plus a row without a loss for each series it lacks yet.
    The chart takes its color scale from the series in the data it is first drawn (or redrawn)
    with and keeps it through later data updates; gradio may apply a redraw before the data that
    came with it. A series that appeared later (eval, after the first epoch) then had no color:
    drawn invisibly, a legend entry without a mark. The empty rows keep every series in the
    scale from the first drawing on; a row without a loss draws nothing."""
    import pandas as pd

    frame = curve.to_pandas()
    train = runs.MEAN_SERIES if runs.MEAN_SERIES in set(frame["series"]) else runs.LOSS_SERIES
    missing = [name for name in (train, runs.EVAL_SERIES) if name not in set(frame["series"])]
    if not missing or frame.empty:
        return frame
    step = int(frame["step"].min())
    pad = pd.DataFrame({"step": [step] * len(missing), "loss": [float("nan")] * len(missing), "series": missing})
    return pd.concat([frame, pad], ignore_index=True).astype({"step": "int64", "loss": "float64"})


# After a change, the plots are sent this many more ticks: gradio redraws a chart asynchronously and
# an update arriving meanwhile can be lost, so the same data is sent again until it has landed.
_RESEND_TICKS = 3


def _refresh(gr: Any, watched: str | None, memo: Any, launcher: Launcher | None) -> list[Any]:
    """One dashboard tick. ``memo`` (a gr.State) remembers what the plots were last sent."""
    if not watched:
        empty = ('<div id="geko-status" class="geko-status geko-status-empty" data-kind="empty">No run yet: fill '
                 "in the form and press Start (or give the output directory of an earlier run and press Resume).</div>")
        return [empty, *[gr.skip()] * 6, None]
    view = runs.read_run(watched)
    launch = launcher.launch_for(watched) if launcher is not None else None
    status = run_status(view, launch)
    head = stats_html(stat_boxes(view, status), status)
    log = runs.tail(Path(watched) / runs.APP_LOG, 60)
    card = summary_card(view, status)
    memo = dict(memo or {})
    sig = repr((watched, runs.signature(watched)))
    repeat = _RESEND_TICKS if memo.get("sig") != sig else memo.get("repeat", 0) - 1
    if repeat < 0:
        return [head, *[gr.skip()] * 4, card, log, memo]
    curve = runs.loss_curve(view.records)
    series = sorted(set(curve["series"]))
    if not curve.height:
        loss = None
    elif series != memo.get("series"):
        # the legend lists the series drawn so far (not the empty rows of _loss_frame); naming
        # them redraws the chart
        loss = gr.LinePlot(_loss_frame(curve), colors_in_legend=series)
    else:
        loss = _loss_frame(curve)
    if view.report is not None:
        shares = runs.bucket_shares(view.report)
        buckets = runs.epoch_labels(shares, view.plan.num_epochs if view.plan else None).to_pandas()
        moves = runs.transition_table(view.report).to_pandas()
    else:
        buckets, moves = None, _empty_moves()
    caption = bucket_caption(view) if view.report_error is None else f"**Summary unreadable:** {view.report_error}"
    memo.update(sig=sig, repeat=repeat, series=series if curve.height else None)
    return [head, loss, buckets, caption, moves, card, log, memo]


def _run_sql(watched: str | None, sql: str) -> tuple[Any, str]:
    import gradio as gr

    if not watched:
        return gr.update(value=None, visible=False), "Open a run first (Start, Resume, or `geko app --run RUN_DIR`)."
    from geko_state.sql import query

    try:
        # one more row than shown says whether there are more, without computing them all
        df = query(watched, sql, limit=_SQL_ROWS + 1, timeout_s=_SQL_TIMEOUT_S)
    except (GekoError, OSError) as e:
        return gr.update(value=None, visible=False), f"**Query error:** {e}"
    if df.height > _SQL_ROWS:
        note = f"more than {_SQL_ROWS:,} rows (first {_SQL_ROWS:,} shown)"
    else:
        note = f"{df.height:,} row{'s' if df.height != 1 else ''}"
    return gr.update(value=df.head(_SQL_ROWS).to_pandas(), visible=True), note


def _show_suspects(watched: str | None, score: str, workspace: Workspace | None) -> tuple[Any, str]:
    import gradio as gr

    frame, note = suspects_panel(watched, score, workspace)
    if frame is None:
        return gr.update(value=None, visible=False), note
    return gr.update(value=frame.to_pandas(), visible=True), note


def launch_app(demo: Any, policy: AccessPolicy, *, quiet: bool = False, block: bool = True) -> Any:
    """Serve ``demo`` as ``policy`` says (address, login, Host/Origin checks), with no CDN fetches
    (local fonts, no analytics) and no run history."""
    from starlette.middleware import Middleware

    gr = gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    return demo.launch(server_name=policy.host, server_port=policy.port, share=False, inbrowser=False, quiet=quiet,
                       prevent_thread_lock=not block, theme=theme, css=CSS, footer_links=[],
                       show_error=policy.show_error, auth=policy.gradio_auth(), run_history=False,
                       app_kwargs={"middleware": [Middleware(HostGuard, policy=policy)]})

