"""Memory-mapped Arrow IPC storage: the columns live in the state file and are updated in place."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..schema import COLUMNS, LOSS_WINDOW, initial_columns
from ..statefile import map_columns, read_layout, write_state_file

__all__ = ["ArrowFileStorage"]

# Samples per block when a new file is initialised, bounding memory used by create().
_INIT_BLOCK = 1 << 24


class ArrowFileStorage:
    name = "arrow"

    def __init__(self, path: Path, writable: bool = True, expected_n: int | None = None) -> None:
        self.path = Path(path)
        self.layout = read_layout(self.path, expected_n)
        self.n_samples = self.layout.n_samples
        self.writable = writable
        self.columns: dict[str, np.ndarray] = map_columns(self.path, self.layout, writable)

    @classmethod
    def create(cls, n_samples: int, path: Path | None = None, meta: dict | None = None) -> "ArrowFileStorage":
        assert path is not None
        # Write the file with zero-filled columns (calloc'd pages cost no memory until touched),
        # then fill the initial values block by block through the memory map.
        cols = {}
        for c in COLUMNS:
            shape = (n_samples, LOSS_WINDOW) if c.width > 1 else (n_samples,)
            cols[c.name] = np.zeros(shape, dtype=c.dtype)
        write_state_file(Path(path), cols, meta or {})
        del cols
        store = cls(Path(path), writable=True, expected_n=n_samples)
        for lo in range(0, n_samples, _INIT_BLOCK):
            hi = min(n_samples, lo + _INIT_BLOCK)
            init = initial_columns(hi - lo, start=lo)
            for name, arr in init.items():
                store.columns[name][lo:hi] = arr
        store.flush()
        return store

    def flush(self) -> None:
        mm = self._mmap()
        if mm is not None and self.writable:
            mm.flush()

    def _mmap(self):
        col = self.columns.get("sample_id")
        base = col
        while base is not None and not isinstance(base, np.memmap):
            base = base.base
        return base

    def close(self) -> None:
        self.flush()
        self.columns = {}
