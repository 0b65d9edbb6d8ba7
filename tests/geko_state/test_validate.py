"""The shared argument checks: one wording, the value back as a plain int / float."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from geko_state.cli import int_at_least, number_in
from geko_state.errors import ConfigError, InputError
from geko_state.validate import check_int, check_number, check_rank


def test_check_int():
    assert check_int(np.int64(3), "n", 1) == 3 and type(check_int(np.int64(3), "n", 1)) is int
    for bad in (0, True, 1.0, "2", None):
        with pytest.raises(InputError, match=r"^n must be an integer >= 1, got "):
            check_int(bad, "n", 1)
    with pytest.raises(ConfigError, match=r"advance: n must be an integer >= 0 \(ids trained\), got -1"):
        check_int(-1, "advance: n", 0, error=ConfigError, note=" (ids trained)")
    with pytest.raises(InputError, match=r"rank must be an integer in \[0, world_size=2\), got 2"):
        check_rank(2, 2)
    with pytest.raises(InputError, match=r"world_size must be an integer >= 1, got 0"):
        check_rank(0, 0)


def test_check_number():
    assert check_number(1, "x", 0, 1) == 1.0
    with pytest.raises(InputError, match=r"x must be a number in \(0, 1\], got 0"):
        check_number(0, "x", 0, 1, low_open=True)
    with pytest.raises(InputError, match=r"x must be a number in \[0, 1\), got 1"):
        check_number(1, "x", 0, 1, high_open=True)
    for bad in (float("nan"), float("inf"), False, "1"):
        with pytest.raises(ConfigError, match=r"lr must be a finite number > 0, got "):
            check_number(bad, "lr", 0, low_open=True, error=ConfigError, what="a finite number")
    with pytest.raises(InputError, match=r"^c must be a finite number, got nan"):
        check_number(float("nan"), "c")


def test_argparse_types():
    assert int_at_least(1)("2") == 2 and number_in(0, low_open=True)("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer >= 1, got 0"):
        int_at_least(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number in \[0, 1\), got '1.5'"):
        number_in(0, 1, high_open=True)("1.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a finite number > 0, got 'inf'"):
        number_in(0, low_open=True)("inf")


def test_every_error_class_lives_in_errors_and_old_imports_still_work():
    import geko_state.plots
    import geko_state.sql
    from geko_state import errors

    assert geko_state.plots.MissingDependencyError is errors.MissingDependencyError
    assert geko_state.sql.QueryError is errors.QueryError
    assert issubclass(errors.SampleIndexError, IndexError) and issubclass(errors.QueryError, InputError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.GekoError)
