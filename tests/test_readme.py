"""The README's commands are the ones CI runs."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [l.strip() for l in lines if l.strip().startswith("pip install -c constraints.txt")]


def test_ci_runs_the_readme_test_command():
    cmds = _readme_commands()
    test_cmd = [c for c in cmds if "pytest" in c]
    assert len(test_cmd) == 1, cmds
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd[0] in [l.strip() for l in ci]


def test_readme_main_command_uses_the_constraints_file():
    main_cmd = [c for c in _readme_commands() if "pytest" not in c]
    assert main_cmd and all("-c constraints.txt" in c for c in main_cmd)
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
