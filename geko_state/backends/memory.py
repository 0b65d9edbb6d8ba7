"""In-memory storage: plain numpy arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..schema import initial_columns

__all__ = ["MemoryStorage"]


class MemoryStorage:
    name = "memory"

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.columns = columns
        self.n_samples = int(columns["sample_id"].shape[0])
        self.path: Path | None = None
        self.writable = True

    @classmethod
    def create(cls, n_samples: int, path: Path | None = None) -> "MemoryStorage":
        return cls(initial_columns(n_samples))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.columns = {}
