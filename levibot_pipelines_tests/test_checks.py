"""The shared input checks of core (``core.checks``): values returned as checked, errors that
name the bad value, its index and what was expected."""

import numpy as np
import pytest

from levibot_pipelines.core.checks import (
    check_array,
    check_columns,
    check_int,
    check_int_array,
    check_labels,
    check_min,
    check_probabilities,
    check_range,
    check_same_length,
    require_all,
)


def test_valid_inputs_come_back_typed():
    assert check_array([1, 2], "x").dtype == np.float64
    assert check_array([], "x", allow_empty=True).shape == (0,)
    assert check_int_array(np.array([3, 4], dtype=np.int32), "ts").dtype == np.int64
    assert check_int("n", np.int64(5), 1) == 5 and isinstance(check_int("n", 5, 1), int)
    assert check_labels([0, 1, 1]).tolist() == [0.0, 1.0, 1.0]
    assert check_probabilities([0.0, 0.5, 1.0]).tolist() == [0.0, 0.5, 1.0]
    assert check_range([np.nan, 0.5], "q", 0.0, 1.0, nan_ok=True)[1] == 0.5
    check_min("epochs", 1, 1)
    check_columns("pred", ["a", "b"], ["a"])
    check_same_length(y=[1, 2], p=[3, 4])
    require_all(np.array([True, True]), "ok", np.array([1, 2]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: check_array([[1.0]], "x"), r"x must be a non-empty 1-D array, got shape \(1, 1\)"),
        (lambda: check_array([], "x"), r"x must be a non-empty 1-D array, got shape \(0,\)"),
        (lambda: check_array([1.0, np.inf], "x"), r"x must be finite, got inf at index 1"),
        (lambda: check_int_array([1.5], "ts"), r"ts must be a non-empty 1-D integer array"),
        (lambda: check_int("n", True, 1), r"n must be an integer >= 1, got True"),
        (lambda: check_int("n", 0, 1), r"n must be an integer >= 1, got 0"),
        (lambda: check_min("epochs", 0, 1), r"epochs must be >= 1, got 0"),
        (lambda: check_labels([0, 2]), r"y must contain only 0 and 1, got 2.0 at index 1"),
        (lambda: check_probabilities([0.2, 1.5]), r"p must be probabilities in \[0, 1\], got 1.5"),
        (
            lambda: check_range([0.5, 2.0], "q", 0.0, 1.0),
            r"q must be finite in \[0.0, 1.0\], got 2",
        ),
        (
            lambda: check_range([0.0], "w", 0.0, 1.0, open_lo=True),
            r"w must be finite in \(0.0, 1.0\], got 0.0 at index 0",
        ),
        (
            lambda: check_columns("pred", ["a"], ["a", "p_deep"]),
            r"pred lacks columns \['p_deep'\]; it has \['a'\]",
        ),
        (
            lambda: check_same_length(y=[1, 2, 3], p=[1, 2]),
            r"length mismatch: y has 3, p has 2",
        ),
        (
            lambda: require_all(np.array([True, False]), "prices must be > 0", np.array([1, -2])),
            r"prices must be > 0, got -2 at index 1",
        ),
    ],
)
def test_errors_name_the_value_and_the_expectation(call, match):
    with pytest.raises(ValueError, match=match):
        call()
