"""The package layout docs/development.md draws is the code's: every module says its concern and is listed."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geko_state", "geko_torch")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_docstring_saying_its_concern():
    missing = [str(p.relative_to(ROOT)) for p in _modules() if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()]
    assert missing == []


def test_the_development_page_lists_every_module():
    text = (ROOT / "docs" / "development.md").read_text()
    section = text[text.index("# Development"):]
    tree = section[section.index("```"):section.index("```", section.index("```") + 3)]
    listed = set(re.findall(r"[\w]+\.py", tree))
    names = {p.name for p in _modules() if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(names - listed) == []
