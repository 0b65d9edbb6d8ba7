"""Storage backends: where the state columns live."""
from .arrow_file import ArrowFileStorage, SharedArrowFileStorage
from .base import Storage
from .memory import MemoryStorage
from .registry import get_storage, register_storage, storage_backends

__all__ = [
    "ArrowFileStorage", "MemoryStorage", "SharedArrowFileStorage", "Storage", "get_storage", "register_storage", "storage_backends",
]
