"""The engine works where torch cannot be imported (the plain ``geko-engine`` install): ``import
geko_state`` and the ``geko`` command's help, simulate, sql, export, report and inspect, in
subprocesses whose torch (and transformers, peft, accelerate) raise ImportError and leave a mark."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "transformers", "peft", "accelerate")
GEKO = "import sys; sys.argv[0] = 'geko'; from geko_torch.cli import main; sys.exit(main())"  # the console script


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    fake = tmp_path_factory.mktemp("no_torch")
    for name in BLOCKED:
        (fake / name).mkdir()
        # The mark catches an import that something caught and recovered from.
        (fake / name / "__init__.py").write_text(
            "import os\n"
            f"with open(os.environ['GEKO_TEST_IMPORT_MARKS'], 'a') as f:\n    f.write({name!r} + '\\n')\n"
            f"raise ImportError('{name} is blocked by tests/test_torch_free.py')\n")
    return fake


@pytest.fixture
def env(blocker, tmp_path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(blocker), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "GEKO_TEST_IMPORT_MARKS": str(tmp_path / "imported.txt"),
            "MPLBACKEND": "Agg"}


def _marks(env: dict[str, str]) -> list[str]:
    p = Path(env["GEKO_TEST_IMPORT_MARKS"])
    return p.read_text().split() if p.exists() else []


def _run(env: dict[str, str], cwd: Path, *args: str, code: str = GEKO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_blocker_blocks(env, tmp_path):
    r = _run(env, tmp_path, code="import torch")
    assert r.returncode != 0 and "blocked by tests/test_torch_free.py" in r.stderr
    assert _marks(env) == ["torch"]


def test_engine_and_its_commands_run_without_torch(env, tmp_path):
    r = _run(env, tmp_path, code=(
        "import sys, geko_state\n"
        "from geko_state import *\n"  # every public name, loaded
        "assert all(hasattr(geko_state, n) for n in geko_state.__all__)\n"
        "heavy = [m for m in " + repr(BLOCKED) + " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('engine ok')\n"))
    assert r.returncode == 0 and "engine ok" in r.stdout, r.stderr

    r = _run(env, tmp_path, "--help")
    assert r.returncode == 0, r.stderr
    for name in ("simulate", "sql", "export", "report", "inspect", "train", "demo", "app"):
        assert name in r.stdout

    run = tmp_path / "run"
    r = _run(env, tmp_path, "simulate", "--n", "500", "--epochs", "3", "--out", str(run))
    assert r.returncode == 0, r.stderr
    r = _run(env, tmp_path, "sql", str(run), "SELECT count(*) AS n FROM samples", "--format", "csv")
    assert r.returncode == 0 and "500" in r.stdout, r.stderr
    r = _run(env, tmp_path, "sql", str(run), "SELECT epoch, count(*) AS n FROM history GROUP BY ALL ORDER BY ALL")
    assert r.returncode == 0, r.stderr
    r = _run(env, tmp_path, "export", str(run), "--keep", "HARD,FOCUS,LIGHT,FREEZE", "--ids-out",
             str(tmp_path / "kept.txt"))
    assert r.returncode == 0 and len((tmp_path / "kept.txt").read_text().split()) > 0, r.stderr
    r = _run(env, tmp_path, "report", str(run))
    assert r.returncode == 0 and "compute" in r.stdout.lower(), r.stderr
    r = _run(env, tmp_path, "inspect", str(run / "state.arrow"), "--json")
    assert r.returncode == 0 and '"n_samples": 500' in r.stdout, r.stderr
    for name in ("sql", "export", "report", "inspect", "app"):
        r = _run(env, tmp_path, name, "--help")
        assert r.returncode == 0, (name, r.stderr)

    assert _marks(env) == []  # nothing even tried to import torch, transformers, peft or accelerate


def test_torch_commands_without_torch_name_the_extra(env, tmp_path):
    for argv in (["train", "--help"], ["demo"], ["train", "m", "d.jsonl", "--text-field", "t"]):
        r = _run(env, tmp_path, *argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert f"geko {argv[0]}: error:" in r.stderr and "pip install 'geko-engine[hf]'" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
