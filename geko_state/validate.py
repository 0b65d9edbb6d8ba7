"""Shared argument checks: one wording for "integer >= low" and "number in [a, b]" everywhere.

Each check returns the value as a plain ``int`` / ``float`` and raises ``error`` (InputError for a
call argument, ConfigError for a constructor or config argument; see :mod:`geko_state.errors`)
with a message naming the argument, the expected form and the value given.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import GekoError, InputError

__all__ = ["check_int", "check_number", "check_rank", "int_form", "is_int", "is_number", "number_form"]


def is_int(value: Any) -> bool:
    """True for a Python or numpy integer (``bool`` is not one here)."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def is_number(value: Any) -> bool:
    """True for a Python or numpy int or float (``bool`` is not one here); NaN and inf included."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def check_int(
    value: Any,
    name: str,
    low: int | None = None,
    high: int | None = None,
    *,
    error: type[GekoError] = InputError,
    note: str = "",
    form: str | None = None,
) -> int:
    """``value`` as an int when it is an integer in ``[low, high)`` (a missing bound is no bound).

    The message reads "``name`` must be an integer >= low``note``, got value" (or "in [low, high)";
    ``form`` replaces "an integer >= low" when the bound has a name, e.g. ``world_size=2``).
    """
    ok = is_int(value) and (low is None or value >= low) and (high is None or value < high)
    if not ok:
        raise error(f"{name} must be {form or int_form(low, high)}{note}, got {value!r}")
    return int(value)


def int_form(low: int | None = None, high: int | None = None) -> str:
    """The expected form in words: ``"an integer >= 1"``, ``"an integer in [0, 4)"``, ..."""
    if low is not None and high is not None:
        return f"an integer in [{low}, {high})"
    if low is not None:
        return f"an integer >= {low}"
    if high is not None:
        return f"an integer < {high}"
    return "an integer"


def number_form(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                high_open: bool = False) -> str:
    """The bounds in words: ``"in [0, 1)"``, ``"> 0"``, or ``""`` without bounds."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    error: type[GekoError] = InputError,
    what: str | None = None,
) -> float:
    """``value`` as a float when it is a finite number within the bounds (closed unless
    ``low_open`` / ``high_open``; a missing bound is no bound).

    The message reads "``name`` must be ``what`` in [low, high], got value" (or "> low", ">= low", ...).
    """
    if what is None:
        what = "a number" if low is not None or high is not None else "a finite number"
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        form = number_form(low, high, low_open=low_open, high_open=high_open)
        raise error(f"{name} must be {what}{' ' + form if form else ''}, got {value!r}")
    return float(value)


def check_rank(rank: Any, world_size: Any, *, error: type[GekoError] = InputError) -> tuple[int, int]:
    """``(rank, world_size)`` as ints when ``world_size >= 1`` and ``0 <= rank < world_size``."""
    world_size = check_int(world_size, "world_size", 1, error=error)
    rank = check_int(rank, "rank", 0, world_size, error=error, form=f"an integer in [0, world_size={world_size})")
    return rank, world_size
