"""Kernel backends by name. The numpy backend is the readable reference; numba is the fast one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from . import observe, repartition, sampling, weights

__all__ = ["KernelBackend", "register_kernels", "get_kernels", "kernel_backends"]


@dataclass(frozen=True)
class KernelBackend:
    name: str
    observe: Callable
    repartition: Callable
    weights: Callable
    members: Callable
    draw_with_replacement: Callable
    merge_keys: Callable


_REGISTRY: dict[str, KernelBackend] = {}


def register_kernels(backend: KernelBackend) -> None:
    _REGISTRY[backend.name] = backend


def get_kernels(name: str) -> KernelBackend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown kernel backend {name!r}; expected one of {sorted(_REGISTRY)}"
        ) from None


def kernel_backends() -> list[str]:
    return sorted(_REGISTRY)


register_kernels(KernelBackend(
    "numpy",
    observe.observe_numpy,
    repartition.repartition_numpy,
    weights.weights_numpy,
    weights.members_numpy,
    sampling.draw_with_replacement_numpy,
    sampling.merge_keys_numpy,
))
register_kernels(KernelBackend(
    "numba",
    observe.observe_numba,
    repartition.repartition_numba,
    weights.weights_numba,
    weights.members_numba,
    sampling.draw_with_replacement_numba,
    sampling.merge_keys_numba,
))
