"""One error hierarchy: every failure GEKO raises derives from :class:`GekoError`.

Which class for a bad value (one rule for both packages):

* :class:`ConfigError`: a constructor or configuration argument, checked when the object is
  built: the fields of ``GEKOConfig``, ``SelectionConfig``, ``HistoryConfig``, ``GEKOSettings``,
  ``GEKOTrainingArgs``, LoRA settings, and the ``__init__`` arguments of the long-lived objects
  (``GEKOSampler``, ``GEKOTracker``, ``GEKOSession``, the trainers, ``PadCollator``).
* :class:`InputError`: an argument of a call that does work (``StateStore.create/open``,
  ``observe``, ``plan_epoch``, ``shard``, ``export_rows``, ``query``, ``signals``, ...), and a
  bad value read from a file or a command line.

A setting that is both (e.g. ``seed``) raises by where it is given, not by its name. Both classes
derive from ``ValueError``, so ``except ValueError`` catches either.
"""
from __future__ import annotations

__all__ = [
    "GekoError",
    "ConfigError",
    "InputError",
    "StateFileError",
    "SchemaVersionError",
    "HistoryFileError",
    "StoreClosedError",
    "QueryError",
    "SampleIndexError",
    "MissingDependencyError",
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


class QueryError(InputError):
    """DuckDB refused a query (the message is DuckDB's own), or the query is not one read-only
    statement, or it ran past its time limit."""


class SampleIndexError(InputError, IndexError):
    """A dataset index outside ``[0, len)``."""


class MissingDependencyError(GekoError, ImportError):
    """An optional dependency is not installed (the message says what to install)."""
