"""Which segment conditions can match, and which are shadowed by earlier ones.

Conditions compare names with constants, so their truth can only change at those
constants. Evaluating every condition over each name's representative values
(every constant, a point between and beyond each pair, N/A, "some other text")
decides exactly whether a condition can ever match and whether the models
before it already take every account it would match.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from ..expressions import BOOL, NUM, Expression

MAX_COMBINATIONS = 200_000
_OTHER_TEXT = "\x00some other value"


@dataclass
class Reach:
    never: list[int]  # indexes of conditions that can never be true
    shadowed: dict[int, list[int]]  # index -> earlier indexes that together take all it matches
    skipped: str | None = None  # why the analysis was not done


class _Grid:
    """An expression context whose columns are the cartesian product of sample values."""

    def __init__(self, columns: dict[str, np.ndarray], n: int):
        self.columns, self.n, self.today = columns, n, date(2000, 1, 1)

    def column(self, name: str) -> np.ndarray:
        return self.columns[name]

    def as_of(self, name: str, days: int) -> np.ndarray:
        return self.columns[name]


def _samples(kind: str, constants: set[Any], declared: list[Any] | None) -> list[Any]:
    if kind == NUM or (kind != BOOL and constants and all(_is_num(c) for c in constants)):
        points = sorted({float(c) for c in constants if _is_num(c)} | {0.0})
        out: list[Any] = [points[0] - 1]
        for a, b in itertools.pairwise(points):
            out += [a, (a + b) / 2]
        out += [points[-1], points[-1] + 1, None]
        return out
    if kind == BOOL:
        return [1.0, 0.0, None]
    texts = sorted({c for c in constants if isinstance(c, str)})
    if declared is not None:
        return [*(str(v) for v in declared), None]
    return [*texts, _OTHER_TEXT, None]


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def analyse(
    conditions: list[Expression | None],
    types: dict[str, str],
    declared: dict[str, list[Any] | None],
) -> Reach:
    """Find conditions that never match and those fully shadowed by earlier ones."""
    names = sorted(set().union(*(c.names for c in conditions if c is not None)))
    constants: dict[str, set[Any]] = {name: set() for name in names}
    for cond in conditions:
        if cond is not None:
            for name, values in cond.constants().items():
                constants.setdefault(name, set()).update(values)
    samples = [
        _samples(types.get(n, "any"), constants.get(n, set()), declared.get(n)) for n in names
    ]
    total = int(np.prod([len(s) for s in samples])) if samples else 1
    if total > MAX_COMBINATIONS:
        return Reach([], {}, f"{total} combinations of {len(names)} names is too many to check")
    grid = list(itertools.product(*samples)) if samples else [()]
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        values = [row[i] for row in grid]
        if any(isinstance(v, str) for v in values):
            columns[name] = np.array(values, dtype=object)
        else:
            columns[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
    ctx = _Grid(columns, len(grid))
    matches = [
        np.ones(len(grid), dtype=bool) if c is None else (c.evaluate(ctx) == 1.0)
        for c in conditions
    ]
    never = [i for i, m in enumerate(matches) if not m.any()]
    shadowed: dict[int, list[int]] = {}
    taken = np.zeros(len(grid), dtype=bool)
    for i, m in enumerate(matches):
        if m.any() and not (m & ~taken).any():
            shadowed[i] = [j for j in range(i) if (matches[j] & m).any()]
        taken |= m
    return Reach(never, shadowed)
