"""Crash tests for GEKOHFTrainer: a run SIGKILLed at a few moments (between steps, inside the GEKO
part of a checkpoint, between the GEKO part and HF's files, at an epoch end) resumes with
``train(resume_from_checkpoint=True)`` from the newest complete checkpoint and ends with the state,
history and weights of an uninterrupted run, bit for bit (CPU). ``test_crash.py`` does the same,
at many more moments, for GEKOTrainer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from geko_state import COLUMN_NAMES, StateStore, read_summary
from geko_state.run import Run

ROOT = Path(__file__).resolve().parents[2]
# POINT:N -> the complete checkpoints the killed run must have left (saves every 2 steps, 5 steps
# in the first epoch)
SCENARIOS = {
    "step:5": [2, 4],  # killed before step 5's epoch end
    "geko_part:2": [2],  # checkpoint-4 half written: only geko_state.arrow
    "hf_files:3": [2, 4],  # checkpoint-6's GEKO part complete, HF's trainer_state.json missing
    # the second epoch repartitioned, its history not recorded; checkpoint-10 was saved after the
    # epoch's last step, before its end: the resumed run ends that epoch first
    "epoch_end:2": [2, 4, 6, 8, 10],
}


def _run(out: Path, kill: str | None) -> tuple[int, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path)
    cmd = [sys.executable, "-m", "tests.geko_torch.hf_crash_worker", str(out)] + (["--kill", kill] if kill else [])
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf_crash")
    names = [None, *SCENARIOS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(names, pool.map(lambda k: _run(base / (k or "reference").replace(":", "-"), k), names)))
    return base, done


def _state(run_dir: Path) -> dict[str, np.ndarray]:
    with StateStore.open(run_dir / "state.arrow", mode="r") as store:
        return {c: np.array(store.column(c)) for c in COLUMN_NAMES} | {"epoch": np.array(store.epoch)}


@pytest.mark.parametrize("kill", list(SCENARIOS))
def test_killed_hf_run_resumes_to_the_same_end(runs, kill):
    base, done = runs
    rc, log = done[None]
    assert rc == 0, log
    rc, log = done[kill]
    assert rc == 0, log
    ref, out = base / "reference", base / kill.replace(":", "-")
    result = json.loads((out / "result.json").read_text())
    assert result["killed"], f"{kill}: the child was not killed by SIGKILL"
    assert result["complete_checkpoints"] == SCENARIOS[kill]
    assert result["global_step"] == json.loads((ref / "result.json").read_text())["global_step"]
    a, b = load_file(out / "final.safetensors"), load_file(ref / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = _state(out / "run" / "geko"), _state(ref / "run" / "geko")
    assert [c for c in sa if not np.array_equal(sa[c], sb[c])] == []
    assert read_summary(out / "run" / "geko").equals(read_summary(ref / "run" / "geko"))
    files, ref_files = Run(out / "run" / "geko").history_files(), Run(ref / "run" / "geko").history_files()
    assert files.keys() == ref_files.keys()
    assert not list((out / "run" / "geko").glob(".*.tmp"))  # what the killed writes left is gone
