"""The safe expression language: whitelisted syntax, N/A semantics, clear errors."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from connector.errors import ExpressionError
from connector.expressions import parse


class Columns:
    def __init__(self, **columns):
        self.cols = {k: (np.array(v, dtype=object) if any(isinstance(x, str) for x in v) else np.array([np.nan if x is None else x for x in v], dtype=float)) for k, v in columns.items()}
        self.n = len(next(iter(columns.values())))
        self.today = date(2026, 11, 22)

    def column(self, name):
        return self.cols[name]

    def as_of(self, name, days):
        return self.cols[name + "_old"]


def values(text, **columns):
    return parse(text).evaluate(Columns(**columns)).tolist()


def test_three_valued_logic():
    a = [1, 1, 0, None, None]
    b = [1, None, None, 0, 1]
    out = values("x > 0 and y > 0", x=a, y=b)
    assert out[0] == 1 and np.isnan(out[1]) and out[2] == 0 and out[3] == 0 and np.isnan(out[4])
    out = values("x > 0 or y > 0", x=a, y=b)
    assert out[0] == 1 and out[1] == 1 and np.isnan(out[2]) and np.isnan(out[3]) and out[4] == 1


def test_arithmetic_na_and_division_by_zero():
    out = values("x / y + 1", x=[4, None, 1], y=[2, 1, 0])
    assert out[0] == 3 and np.isnan(out[1]) and np.isnan(out[2])


def test_text_membership_and_comparison():
    out = values('segment in ["SMB", "Mid-Market"]', segment=["SMB", "Enterprise", None])
    assert out[:2] == [1, 0] and np.isnan(out[2])
    assert values('segment != "SMB"', segment=["SMB", "X"]) == [0, 1]


def test_functions():
    assert values("coalesce(x, y, 0)", x=[None, None, 5], y=[None, 2, 9]) == [0, 2, 5]
    assert values("min(x, 10)", x=[3, 30]) == [3, 10]
    assert values("pct_change(x, 90)", x=[120, 50], x_old=[100, 100]) == [20, -50]
    assert values("days_until(d)", d=["2026-12-02", "garbage"])[0] == 10
    assert np.isnan(values("days_until(d)", d=["2026-12-02", "garbage"])[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x.__class__", "not allowed"),
        ("open('f')", "unknown function 'open'"),
        ("(lambda: 1)()", "unknown function"),
        ("x[0]", "not allowed"),
        ("x ** 2", r"only \+ - \* /"),
        ("x >", "syntax error at column"),
        ("", "empty"),
        ("min(x)", "takes at least 2"),
        ("change(x + 1, 30)", "needs a stored metric"),
        ("change(x, 0)", "whole number of days"),
    ],
)
def test_rejected_expressions(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse(text)
