"""One error hierarchy: every failure GEKO raises derives from :class:`GekoError`.

Which class a bad value raises (one rule for both packages):

* :class:`ConfigError`: a setting, checked when the object that holds it is built: the fields of
  ``GEKOConfig``, ``SelectionConfig``, ``HistoryConfig``, ``GEKOSettings``, ``GEKOTrainingArgs``,
  the LoRA settings, and the settings given to a constructor (``GEKOSampler``'s seed, budget,
  selection, rank and world size; ``GEKOTracker``'s task, thresholds, callables and sizes;
  ``GEKOSession``'s seed, rank and world size; ``PadCollator``'s token ids).
* :class:`InputError`: an argument of a call (``StateStore.create/open``, ``observe``,
  ``plan_epoch``, ``shard``, ``export_rows``, ``query``, the signal functions, ...), the data or
  object a constructor works on (a store, a model, a dataset), and a value read from a file or a
  command line.

So the same value can raise either, by where it is given: ``GEKOSampler(store, seed=-1)`` raises
ConfigError, ``store.plan_epoch(seed=-1)`` InputError. Both derive from ``ValueError``.
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
