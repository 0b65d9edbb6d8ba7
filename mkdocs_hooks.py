"""MkDocs hook: the site's home page is the README itself, its ``docs/`` links made relative to the site.

One source for the landing page: ``docs/index.md`` is only a placeholder for this hook to fill.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent / "README.md"


def readme_for_site(text: str) -> str:
    """README markdown with ``](docs/page.md)`` links as ``](page.md)`` (the site's root is docs/)."""
    return re.sub(r"\]\(docs/([\w./#-]*)\)", r"](\1)", text.replace("[`docs/`](docs/)", "`docs/`"))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    return readme_for_site(README.read_text())
