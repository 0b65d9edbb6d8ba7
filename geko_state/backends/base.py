"""What a storage backend provides: writable numpy columns, plus flush/close."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["Storage"]


class Storage(Protocol):
    """Holds the state columns. ``columns[name]`` are writable numpy arrays of length ``n_samples``."""

    name: str
    n_samples: int
    path: Path | None
    columns: dict[str, np.ndarray]
    writable: bool

    def flush(self) -> None:
        """Make in-place updates durable (no-op in memory)."""

    def close(self) -> None:
        """Release the columns."""
