"""Install hints name the distribution ``geko-engine``: ``geko`` on PyPI is an unrelated project
(a GPL physics package), so a hint naming it would install the wrong thing."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg"}
SKIP_DIRS = {"build", "dist", "runs", "geko_runs", "node_modules", "__pycache__"}

# The bare name with extras at the start of a quoted string, or after `pip install` and its options;
# geko-engine with extras, and a variable subscripted as geko[n], pass.
BARE_EXTRA = re.compile(r"""["'`]geko\[""")
BARE_NAME = re.compile(r"""pip\s+install\s+(?:-\S+\s+)*["']?geko(?![\w-])""")

NAME = "geko"  # spelt apart below so this file's own examples do not trip the repository scan


def _hints(text: str) -> list[str]:
    return [m.group(0) for rx in (BARE_EXTRA, BARE_NAME) for m in rx.finditer(text)]


@pytest.mark.parametrize("text", [
    f"pip install '{NAME}[plots]'", f'pip install "{NAME}[app]"', f"pip install {NAME}[app]",
    f"install it: pip install -U '{NAME}[plots,app]' ({{e}})", f"pip install {NAME}", f"pip install -U {NAME}",
    f"(``{NAME}[plots]``)", f"`{NAME}[app]`",
])
def test_the_scan_finds_a_bare_name(text):
    assert _hints(text)


@pytest.mark.parametrize("text", [
    "pip install 'geko-engine[plots]'", 'pip install -c constraints.txt -e ".[hf,plots]" && geko demo',
    "pip install geko-engine", "rows_for(n, geko[n], b)", "geko app --help", "pip install -e .",
])
def test_the_scan_passes_the_right_name(text):
    assert not _hints(text)


def _repository_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in SKIP_DIRS or p.endswith(".egg-info") for p in rel[:-1]):
            continue
        if path.suffix in SUFFIXES and path.is_file():
            files.append(path)
    return files + [ROOT / ".ci" / "run"]


def test_no_file_of_the_repository_names_the_wrong_distribution():
    files = _repository_files()
    assert ROOT / "README.md" in files and ROOT / "geko_state" / "plots.py" in files
    found = {str(f.relative_to(ROOT)): _hints(f.read_text(errors="replace")) for f in files}
    assert not {k: v for k, v in found.items() if v}


def test_pyproject_names_the_distribution_geko_engine():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "geko-engine"', text, re.M)
    assert re.search(r'^geko = "geko_torch\.cli:main"', text, re.M)  # the command keeps its name


def test_no_help_text_names_the_wrong_distribution():
    pytest.importorskip("torch")  # train's and demo's options come from the torch side
    from geko_torch import cli

    parser, sub = cli.build_parser()
    texts = {"geko": parser.format_help(), **{f"geko {k}": p.format_help() for k, p in sub.choices.items()}}
    assert {"geko train", "geko demo", "geko app", "geko sql"} <= set(texts)
    assert "geko-engine[app]" in texts["geko app"]
    assert not {k: _hints(v) for k, v in texts.items() if _hints(v)}
