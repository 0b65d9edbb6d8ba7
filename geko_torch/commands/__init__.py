"""The torch-side commands of ``geko``: each module registers one command when imported."""
from __future__ import annotations

from . import demo, train

__all__ = ["demo", "train"]
