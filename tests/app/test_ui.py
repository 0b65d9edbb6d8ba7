"""The page without a browser: controls generated from their sources, refresh and SQL handlers, the command."""
from __future__ import annotations

import sys

import pytest

from geko_state.errors import GekoError
from geko_torch.app.fields import config_fields, training_fields

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'geko-engine[app]')")

from geko_torch.app import ui
from geko_torch.app.command import form_options


def _elem_ids(demo) -> set[str]:
    return {getattr(b, "elem_id", None) for b in demo.blocks.values()} - {None}


def test_the_full_app_has_a_control_for_every_setting(tmp_path):
    demo = ui.build_app(default_output=str(tmp_path / "out"))
    ids = _elem_ids(demo)
    assert {f"geko-opt-{o.dest}" for o in form_options()} <= ids
    assert {f"geko-cfg-{s.name}" for s in config_fields()} <= ids
    assert {f"geko-train-{s.name}" for s in training_fields()} <= ids
    assert {"geko-start", "geko-stop", "geko-resume", "geko-clear", "geko-sql", "geko-loss-plot",
            "geko-bucket-plot", "geko-transitions", "geko-summary", "geko-model-dir", "geko-data-file"} <= ids


def test_the_read_only_app_has_no_form(finished_run):
    ids = _elem_ids(ui.build_app(run_dir=finished_run))
    assert "geko-loss-plot" in ids and "geko-sql" in ids
    assert not {i for i in ids if i.startswith(("geko-opt-", "geko-cfg-"))}
    assert not {"geko-start", "geko-stop", "geko-resume"} & ids


def test_refresh_reads_the_run_and_skips_unchanged_plots(finished_run):
    out = ui._refresh(gr, str(finished_run), None, None)
    head, loss, buckets, caption, moves, card, _log, memo = out
    assert 'data-kind="complete"' in head and "Training complete" in card
    assert isinstance(loss, gr.LinePlot)  # first drawing names its series
    assert list(buckets["epoch"]) == [e for e in ["1", "2", "3"] for _ in range(4)]
    assert caption.startswith("After epoch 3") and list(moves["from"]) == ["FREEZE", "LIGHT", "FOCUS", "HARD"]
    again = ui._refresh(gr, str(finished_run), memo, None)
    assert not isinstance(again[1], gr.LinePlot) and len(again[1]) == len(loss.value["data"])  # data only
    for _ in range(ui._RESEND_TICKS):
        again = ui._refresh(gr, str(finished_run), again[-1], None)
    assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in again[1:5])  # gr.skip()
    empty = ui._refresh(gr, None, None, None)
    assert 'data-kind="empty"' in empty[0]


def test_the_loss_chart_data_names_every_series_from_the_first_drawing():
    import polars as pl

    from geko_torch.app import runs

    curve = pl.DataFrame({"step": [2, 4], "loss": [1.5, 1.2], "series": [runs.LOSS_SERIES] * 2})
    frame = ui._loss_frame(curve)
    assert list(frame["series"]) == [runs.LOSS_SERIES, runs.LOSS_SERIES, runs.EVAL_SERIES]
    assert frame["loss"].isna().tolist() == [False, False, True] and frame["step"].tolist() == [2, 4, 2]
    both = pl.concat([curve, pl.DataFrame({"step": [4], "loss": [1.4], "series": [runs.EVAL_SERIES]})])
    assert len(ui._loss_frame(both)) == 3  # nothing added once every series has points


def test_sql_box_results_and_errors(finished_run, tmp_path):
    update, note = ui._run_sql(str(finished_run), "SELECT count(*) AS n FROM samples")
    assert note == "1 row" and update["visible"] and update["value"]["n"].tolist() == [48]
    update, note = ui._run_sql(str(finished_run), "SELECT nope FROM samples")
    assert note.startswith("**Query error:**") and "nope" in note and not update["visible"]
    update, note = ui._run_sql(str(tmp_path), "SELECT 1")
    assert "not a GEKO run directory" in note
    assert "Open a run first" in ui._run_sql(None, "SELECT 1")[1]


def test_missing_gradio_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(GekoError, match=r"pip install 'geko-engine\[app\]'"):
        ui.gradio()


def test_geko_app_command(capsys, tmp_path):
    from geko_torch import cli as torch_cli
    from geko_torch.app import cli as app_cli

    parser, _ = torch_cli.build_parser()
    args = parser.parse_args(["app", "--run", str(tmp_path), "--port", "9999"])
    assert args.command == "app" and args.host == "127.0.0.1" and args.port == 9999
    assert app_cli.main(["--run", str(tmp_path / "missing")]) == 2
    assert "--run" in capsys.readouterr().err
    assert torch_cli.main(["app", "--refresh", "0"]) == 2
    with pytest.raises(SystemExit):
        app_cli.main(["--help"])
    assert "127.0.0.1" in capsys.readouterr().out


def test_the_suspects_panel_of_a_trained_run(finished_run):
    assert {"geko-suspects-score", "geko-suspects-run", "geko-suspects-note", "geko-suspects-result"} <= \
        _elem_ids(ui.build_app(run_dir=finished_run))
    update, note = ui._show_suspects(str(finished_run), "loss", None)
    assert update["visible"] and len(update["value"]) == 48 and "among 48 ranked of 48 samples" in note
    assert list(update["value"].columns) == ["rank", "sample_id", "score", "aum", "wrong_streak", "times_seen",
                                             "bucket"]
    update, note = ui._show_suspects(str(finished_run), "geko", None)  # the trainer recorded margins
    assert update["visible"] and note.startswith(f"{len(update['value'])} suspects (geko: wrong at the last observation, loss not going down)")
    assert "No data rows: no workspace" in note
    update, note = ui._show_suspects(str(finished_run), "nope", None)
    assert not update["visible"] and "noise score must be one of" in note
