import json
import subprocess
import sys

from geko_state import StateStore
from geko_state.cli import COMMANDS, build_parser, main


def test_simulate_then_inspect(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--n", "5000", "--epochs", "4", "--out", str(out), "--preset", "balanced"]) == 0
    text = capsys.readouterr().out
    assert "compute saved" in text and "FREEZE" in text
    store = StateStore.open(out / "state.arrow", mode="r")
    assert store.epoch == 4
    # the figures printed are the ones in the state: last epoch's LIGHT share
    light = store.last_stats.ratios
    assert f"{100 * list(light.values())[1]:6.1f}%" in text.splitlines()[4]
    assert main(["inspect", str(out / "state.arrow"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_samples"] == 5000 and info["epoch"] == 4
    assert sum(info["buckets"].values()) + info["pruned"] == 5000
    ck = StateStore.open(out / "checkpoint.arrow", mode="r")
    assert ck.epoch == 4


def test_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.arrow")]) == 2
    assert "no such state file" in capsys.readouterr().err
    assert main(["simulate", "--n", "10", "--budget", "lots"]) == 2
    assert "budget" in capsys.readouterr().err


def test_every_subcommand_help_has_an_example():
    parser, sub = build_parser()
    for name in COMMANDS:
        help_text = sub.choices[name].format_help()
        assert "example:" in help_text and f"geko {name}" in help_text
    assert "example:" in parser.format_help()


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "geko_state.cli", "--help"], capture_output=True, text=True, check=True)
    assert "simulate" in r.stdout
