import struct
import sys

import pytest

from geko_state import InputError, MissingDependencyError, build_report, render_plots
from geko_state.cli import main
from geko_state.plots import PLOT_FILES
from geko_state.report import sample_distributions
from tests.geko_state.runs import make_run

EPOCHS = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("reportrun"), epochs=EPOCHS)


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_report_figures(run):
    rep = build_report(run.root)
    assert rep.n_samples == 2000 and rep.n_epochs == EPOCHS
    assert rep.samples_trained == sum(run.trained)
    assert rep.full_data_passes == 2000 * EPOCHS
    assert rep.compute_saved == pytest.approx(1 - sum(run.trained) / (2000 * EPOCHS))
    m = rep.transition_matrix()
    assert m.sum() == sum(s.changed for s in run.stats) and m.trace() == 0
    assert rep.history_bytes == sum(p.stat().st_size for p in (run.root / "history").iterdir())
    text = rep.format()
    last = run.stats[-1]
    assert f"{100 * last.accuracy:.1f}%" in text and "compute:" in text
    assert f"pruned {last.pruned:,}" in text and "bytes per sample per epoch" in text
    assert len([l for l in text.splitlines() if l.startswith("    ") and l.strip()[:1].isdigit()]) == EPOCHS


def test_distributions_sample_each_bucket(run):
    d = sample_distributions(run.root, per_bucket=100)
    last = run.stats[-1]
    assert d.totals == {b.name: c for b, c in last.counts.items()}
    assert d.frame.group_by("bucket").len()["len"].max() <= 100


def test_distributions_fall_back_to_the_last_full_snapshot(run, tmp_path):
    import shutil

    copy = tmp_path / "nostate"
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("state.arrow*"))
    d = sample_distributions(copy, per_bucket=100_000)
    assert d.source == f"history snapshot of epoch {EPOCHS}"
    assert d.totals == {b.name: c for b, c in run.stats[-1].counts.items()}
    live = run.snapshots[-1]["pruned"] == 0
    assert sorted(d.frame["q_value"].to_list()) == sorted(run.snapshots[-1]["q_value"][live].tolist())


def test_render_plots(run, tmp_path):
    paths = render_plots(run.root, tmp_path / "plots")
    assert [p.name for p in paths] == list(PLOT_FILES)
    for p in paths:
        w, h = _png_size(p)
        assert w >= 600 and h >= 400 and p.stat().st_size > 20_000
    assert not [p for p in (tmp_path / "plots").iterdir() if p.suffix != ".png"]  # no temp files left


def test_report_command_without_matplotlib_prints_the_report_and_a_note(run, tmp_path, monkeypatch, capsys):
    # The plain geko-engine install has no matplotlib: the report still works; asked-for plots do not.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(run.root)]) == 0
    out, err = capsys.readouterr()
    assert "compute" in out.lower() and "no plots" in err and "pip install 'geko-engine[plots]'" in err
    assert main(["report", str(run.root), "--plots-dir", str(tmp_path / "p")]) == 2
    assert "pip install 'geko-engine[plots]'" in capsys.readouterr().err


def test_plots_without_matplotlib_give_the_install_hint(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'geko-engine\[plots\]'"):
        render_plots(run.root, tmp_path)


def test_report_needs_a_summary(tmp_path):
    (tmp_path / "history").mkdir()
    with pytest.raises(InputError, match="not a GEKO run directory"):
        build_report(tmp_path)


def test_simulate_report_sql_end_to_end(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--n", "3000", "--epochs", "4", "--out", str(out), "--history-every", "2"]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "compute:" in text and "WARMUP" in text and "2 snapshot(s)" in text
    for name in PLOT_FILES:
        _png_size(out / "plots" / name)
    assert main(["sql", str(out), "SELECT DISTINCT epoch FROM history ORDER BY epoch", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["epoch", "2", "4"]
    assert main(["report", str(tmp_path)]) == 2
    assert "not a GEKO run directory" in capsys.readouterr().err
