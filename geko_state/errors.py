"""One error hierarchy: every failure the engine raises derives from :class:`GekoError`."""
from __future__ import annotations

__all__ = [
    "GekoError",
    "ConfigError",
    "InputError",
    "StateFileError",
    "SchemaVersionError",
    "HistoryFileError",
    "StoreClosedError",
]


class GekoError(Exception):
    """Root of all GEKO errors."""


class ConfigError(GekoError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class InputError(GekoError, ValueError):
    """An argument passed to an engine call is malformed (lengths, ranges, dtypes)."""


class StateFileError(GekoError, OSError):
    """A state file is missing, truncated, corrupt or does not match what was expected."""


class SchemaVersionError(StateFileError):
    """A state or history file was written with another schema version."""


class HistoryFileError(StateFileError):
    """A history file (per-epoch snapshot or epoch summary) is missing, truncated or corrupt, or
    does not match the rest of its run."""


class StoreClosedError(GekoError, RuntimeError):
    """The store was closed and can no longer be used."""
