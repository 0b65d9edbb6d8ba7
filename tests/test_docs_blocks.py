"""Every Python block of the documentation runs as written, or is a marked fragment whose runnable
version in examples/ runs.

A block preceded by the line ``<!-- fragment: examples/NAME.py -->`` names its example; every
other block runs with ``python -c`` in an empty working directory prepared with
``geko simulate --n 2000 --epochs 3 --out runs/sim`` (the same run is also at ``runs/demo``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAGMENT = re.compile(r"^<!-- fragment: (examples/[\w./-]+\.py) -->$")
TIMEOUT_S = 600
# Small sizes for the examples whose defaults are larger.
EXAMPLE_ARGS = {"examples/custom_loop.py": ["--epochs", "2", "--out", "runs/custom_loop"]}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line of the fence, code, fragment's example or None) for each ```python block."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            prev = lines[start - 1].strip() if start else ""
            m = FRAGMENT.match(prev)
            blocks.append((start + 1, "\n".join(lines[start + 1:j]) + "\n", m.group(1) if m else None))
            i = j + 1
        else:
            i += 1
    return blocks


ALL = [(p, line, code, frag) for p in doc_files() for line, code, frag in python_blocks(p)]
IDS = [f"{p.relative_to(ROOT)}:{line}" for p, line, _, _ in ALL]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MPLBACKEND", "Agg")
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def prepared_runs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("docs_runs")
    proc = subprocess.run([sys.executable, "-m", "geko_torch.cli", "simulate", "--n", "2000", "--epochs", "3",
                           "--out", "runs/sim"], cwd=base, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.copytree(base / "runs" / "sim", base / "runs" / "demo")
    return base / "runs"


def test_the_docs_have_python_blocks():
    assert len(ALL) >= 10


@pytest.mark.parametrize("path,line,code,fragment", ALL, ids=IDS)
def test_python_block_runs_or_is_a_fragment_whose_example_runs(path, line, code, fragment, prepared_runs, tmp_path):
    if fragment is None:
        shutil.copytree(prepared_runs, tmp_path / "runs")
        cmd = [sys.executable, "-c", code]
    else:
        example = ROOT / fragment
        assert example.is_file(), f"{path.name}:{line} names {fragment}, which does not exist"
        cmd = [sys.executable, str(example), *EXAMPLE_ARGS.get(fragment, [])]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{path.name}:{line} ({fragment or 'as written'}) failed:\n{proc.stderr[-3000:]}"
