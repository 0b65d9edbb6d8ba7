"""The examples shown in the documentation run."""
import subprocess
import sys
from pathlib import Path

from geko_state import read_summary

ROOT = Path(__file__).resolve().parents[1]


def test_custom_loop_example_runs_and_records_a_run(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_loop.py"), "--epochs", "2", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[GEKO] Epoch 2 Partition" in proc.stdout and f"geko report {out}" in proc.stdout
    assert read_summary(out)["epoch"].to_list() == [1, 2]
    assert (out / "checkpoint" / "geko_state.arrow").is_file()
