"""Storage backends by name."""
from __future__ import annotations

from ..errors import ConfigError
from .arrow_file import ArrowFileStorage, SharedArrowFileStorage
from .memory import MemoryStorage

__all__ = ["register_storage", "get_storage", "storage_backends"]

_REGISTRY: dict[str, type] = {}


def register_storage(name: str, cls: type) -> None:
    _REGISTRY[name] = cls


def get_storage(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown storage backend {name!r}; expected one of {sorted(_REGISTRY)}") from None


def storage_backends() -> list[str]:
    return sorted(_REGISTRY)


register_storage(MemoryStorage.name, MemoryStorage)
register_storage(ArrowFileStorage.name, ArrowFileStorage)
register_storage(SharedArrowFileStorage.name, SharedArrowFileStorage)
