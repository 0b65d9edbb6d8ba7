"""Keep torch's CPU thread count across calls into the engine's numba kernels.

numba's OpenMP threading layer and torch share one OpenMP runtime: every parallel numba launch
sets the runtime's thread count to numba's, silently undoing a user's ``torch.set_num_threads``
(and oversubscribing the cores when several workers share a machine). Engine calls from
geko_torch therefore run inside :func:`torch_threads_kept`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["torch_threads_kept"]


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
