"""Shared by the torch.distributed tests: launching ``torchrun`` and comparing runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from geko_state import COLUMN_NAMES, StateStore

ROOT = Path(__file__).resolve().parents[2]
FLOAT_COLUMNS = {"confidence", "q_value", "last_loss", "quality", "loss_window", "aum"}


def torchrun(nproc: int, script: Path, *args: str) -> None:
    """Run ``script`` on ``nproc`` gloo ranks (one thread each, the repository importable)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def assert_same_state(a: Path, b: Path, atol: float = 1e-5) -> None:
    """Discrete columns identical; float columns within ``atol`` (the ranks' gradients are averaged
    in another float order than one process sums them)."""
    sa = StateStore.open(a, storage="memory")
    sb = StateStore.open(b, storage="memory")
    assert sa.epoch == sb.epoch
    for c in COLUMN_NAMES:
        x, y = sa.column(c), sb.column(c)
        if c in FLOAT_COLUMNS:
            np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=c)
        else:
            np.testing.assert_array_equal(x, y, err_msg=c)


def assert_same_model(a: Path, b: Path, atol: float = 1e-5, *, skip: dict[str, slice] | None = None) -> None:
    """Weights of two safetensors files within ``atol``; ``skip``: rows of a tensor left out."""
    ma, mb = load_file(str(a)), load_file(str(b))
    assert ma.keys() == mb.keys()
    for k in ma:
        x, y = ma[k], mb[k]
        if skip and k in skip:
            keep = np.ones(x.shape[0], dtype=bool)
            keep[skip[k]] = False
            x, y = x[keep], y[keep]
        np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=k)
