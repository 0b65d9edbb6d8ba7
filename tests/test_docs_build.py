"""The MkDocs site (docs/, mkdocs.yml) builds with --strict: every page, link and API reference resolves."""
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "StateStore" in api and "GEKOTrainer" in api
    home = (tmp_path / "site" / "index.html").read_text()  # the README, through mkdocs_hooks.py
    assert "Quick start" in home and 'href="install/"' in home and "docs/install.md" not in home


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages and [p for p in pages if p not in nav] == []


def test_the_site_home_page_is_the_readme(tmp_path):
    """One source: the hook puts README.md on the home page, its docs/ links made site-relative."""
    sys.path.insert(0, str(ROOT))
    try:
        from mkdocs_hooks import readme_for_site
    finally:
        sys.path.remove(str(ROOT))
    readme = (ROOT / "README.md").read_text()
    site = readme_for_site(readme)
    assert "](docs/" not in site and "](install.md)" in site
    assert (ROOT / "docs" / "index.md").read_text().startswith("<!-- The home page is README.md")
