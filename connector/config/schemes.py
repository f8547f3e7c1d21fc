"""Schemes: how a metric's value becomes a 0..100 score, one object per scheme type.

Each scheme knows four things, and every room asks it rather than testing its
type: ``check()`` (what is wrong with it, for validation), ``score(values)``
(column-wise scores, NaN = N/A, for the engine), ``describe()`` (one line for
explain and the report) and ``thresholds()`` (the values where its score changes,
for the report's charts). A new scheme is one class here and one entry in
``Scheme``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .source import KeyPath

# a problem in a scheme: (key path below the scheme, message, hint)
SchemeProblem = tuple[KeyPath, str, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def written(value: float) -> str:
    """A threshold or score as an admin would write it: 40, 0.05, -12.5, 12,000."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) >= 1 else f"{value:.4g}"


class BaseScheme(Strict):
    """What every scheme answers; the defaults are those of a scheme without fixed thresholds."""

    # scores a value against the other accounts' values (needs `population`)
    relative: ClassVar[bool] = False
    # its values are categories (one bar per value), not a number line
    categorical: ClassVar[bool] = False
    # can score text values (a text metric takes no other scheme)
    takes_text: ClassVar[bool] = False
    # a threshold holds its own value (`upto` is inclusive): drawn after its last whole value
    inclusive_thresholds: ClassVar[bool] = False

    def check(self) -> list[SchemeProblem]:
        """What is wrong with this scheme as configured; empty when nothing is."""
        return []

    def score(self, values: np.ndarray, population: np.ndarray | None = None) -> np.ndarray:
        """Scores 0..100 (float64, NaN = N/A) of the values, column-wise."""
        raise NotImplementedError

    def why_not(self, values: np.ndarray) -> np.ndarray | None:
        """Per value, why the scheme cannot score it (object array), or None if it scores every value."""
        return None

    def describe(self) -> str:
        """The scheme in one short line: 'bands: ≤10 → 10, ≤30 → 50, else 100'."""
        raise NotImplementedError

    def thresholds(self) -> list[tuple[float, str]]:
        """(value, label) where the score changes, lowest first as configured."""
        return []

    def regions(self, values: np.ndarray) -> list[tuple[str, str, int, float]]:
        """(label, points shown, accounts, points) for each stretch of the number line the scheme scores alike."""
        return []

    def categories(self, values: np.ndarray) -> list[tuple[str, int, float | None]]:
        """(value shown, accounts, points or None when N/A) for each distinct value; best first."""
        distinct, counts = _distinct(values)
        points = self._points_of(distinct)
        found = [
            (_shown(v), int(n), None if np.isnan(p) else float(p))
            for v, n, p in zip(distinct.tolist(), counts.tolist(), points.tolist(), strict=True)
        ]
        return sorted(found, key=lambda c: (c[2] is None, -(c[2] or 0), -c[1]))

    def _points_of(self, distinct: np.ndarray) -> np.ndarray:
        return np.full(len(distinct), np.nan)


def _outside(score: float, path: KeyPath) -> list[SchemeProblem]:
    return [] if 0 <= score <= 100 else [(path, f"score {score:g} is outside 0..100", "")]


class Band(Strict):
    upto: float | None = None  # inclusive upper bound of the raw value; none on the last band
    score: float


class BandsScheme(BaseScheme):
    type: Literal["bands"]
    direction: Literal["higher_is_better", "lower_is_better"] = "higher_is_better"
    bands: list[Band] = Field(min_length=1)

    inclusive_thresholds: ClassVar[bool] = True

    def check(self) -> list[SchemeProblem]:
        out: list[SchemeProblem] = []
        for index, band in enumerate(self.bands):
            out += _outside(band.score, ("bands", index, "score"))
            last = index == len(self.bands) - 1
            if last and band.upto is not None:
                out.append((("bands", index), "the last band takes no 'upto': it holds every value above", ""))
            if not last and band.upto is None:
                out.append((("bands", index), "every band but the last needs 'upto'", ""))
        numbers = [b.upto for b in self.bands if b.upto is not None]
        for index in range(1, len(numbers)):
            if numbers[index] <= numbers[index - 1]:
                out.append((
                    ("bands", index, "upto"),
                    f"thresholds must increase: {numbers[index]:g} after {numbers[index - 1]:g}",
                    "list bands from the lowest raw value to the highest",
                ))
        scores = [b.score for b in self.bands]
        rising = self.direction == "higher_is_better"
        for index in range(1, len(scores)):
            if (scores[index] < scores[index - 1]) if rising else (scores[index] > scores[index - 1]):
                out.append((
                    ("bands", index, "score"),
                    f"with direction {self.direction}, band scores must "
                    f"{'rise' if rising else 'fall'}: {scores[index]:g} after {scores[index - 1]:g}",
                    "flip 'direction' or reorder the scores",
                ))
        return out

    def _bounds(self) -> np.ndarray:
        return np.array([b.upto for b in self.bands[:-1]], dtype=float)

    def score(self, values: np.ndarray, population: np.ndarray | None = None) -> np.ndarray:
        """Upper bounds are inclusive: with upto 10, a value of exactly 10 is in that band."""
        scores = np.array([b.score for b in self.bands], dtype=float)
        index = np.searchsorted(self._bounds(), values, side="left")
        out = scores[np.minimum(index, len(scores) - 1)]
        return np.where(np.isnan(values), np.nan, out)

    def describe(self) -> str:
        steps = [f"≤{written(b.upto)} → {written(b.score)}" for b in self.bands[:-1] if b.upto is not None]
        return f"bands: {', '.join(steps)}, else {written(self.bands[-1].score)}"

    def thresholds(self) -> list[tuple[float, str]]:
        return [(b.upto, f"≤{written(b.upto)}") for b in self.bands[:-1] if b.upto is not None]

    def regions(self, values: np.ndarray) -> list[tuple[str, str, int, float]]:
        bounds = self._bounds()
        counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(self.bands))
        edges = [written(b) for b in bounds]
        labels = [f"≤ {edges[0]}", *(f"{a} – {b}" for a, b in itertools.pairwise(edges)), f"> {edges[-1]}"]
        return [(labels[i], written(b.score), int(counts[i]), b.score) for i, b in enumerate(self.bands)]


class LinearScheme(BaseScheme):
    type: Literal["linear"]
    worst: float  # raw value scoring 0
    best: float  # raw value scoring 100; below worst when lower is better

    def check(self) -> list[SchemeProblem]:
        if self.worst == self.best:
            return [((), "worst and best are equal: every value would score the same", "")]
        return []

    def score(self, values: np.ndarray, population: np.ndarray | None = None) -> np.ndarray:
        """0 at `worst`, 100 at `best`, straight in between, clamped outside."""
        with np.errstate(invalid="ignore"):
            out = (values - self.worst) / (self.best - self.worst) * 100.0
        return np.clip(out, 0.0, 100.0)

    def describe(self) -> str:
        return f"linear: 0 at {written(self.worst)}, 100 at {written(self.best)}"

    def thresholds(self) -> list[tuple[float, str]]:
        return [(self.worst, f"{written(self.worst)} → 0"), (self.best, f"{written(self.best)} → 100")]

    def regions(self, values: np.ndarray) -> list[tuple[str, str, int, float]]:
        points = self.score(values)
        parts = [("at or past worst", "0", points <= 0, 0.0), ("between", "1–99", (points > 0) & (points < 100), 50.0),
                 ("at or past best", "100", points >= 100, 100.0)]
        return [(label, shown, int(mask.sum()), p) for label, shown, mask, p in parts]


class BooleanScheme(BaseScheme):
    type: Literal["boolean"]
    if_true: float = 100
    if_false: float = 0

    categorical: ClassVar[bool] = True

    def check(self) -> list[SchemeProblem]:
        return [*_outside(self.if_true, ("if_true",)), *_outside(self.if_false, ("if_false",))]

    def score(self, values: np.ndarray, population: np.ndarray | None = None) -> np.ndarray:
        out = np.where(values != 0, self.if_true, self.if_false).astype(float)
        return np.where(np.isnan(values), np.nan, out)

    def describe(self) -> str:
        return f"yes → {written(self.if_true)}, no → {written(self.if_false)}"

    def categories(self, values: np.ndarray) -> list[tuple[str, int, float | None]]:
        yes = int(np.count_nonzero(values.astype(float) != 0))
        return [("yes", yes, self.if_true), ("no", len(values) - yes, self.if_false)]


class MapScheme(BaseScheme):
    """Picklists and ratings: each listed value has its score; others are N/A with a reason."""

    type: Literal["map"]
    values: dict[str, float] = Field(min_length=1)

    categorical: ClassVar[bool] = True
    takes_text: ClassVar[bool] = True

    def check(self) -> list[SchemeProblem]:
        return [p for key, value in self.values.items() for p in _outside(value, ("values", key))]

    def score(self, values: np.ndarray, population: np.ndarray | None = None) -> np.ndarray:
        return _per_distinct(values, lambda k: self.values.get(k, np.nan) if k is not None else np.nan, float)

    def why_not(self, values: np.ndarray) -> np.ndarray:
        return _per_distinct(
            values, lambda k: None if k is None or k in self.values else f"value {k!r} is not in the scheme's values",
            object)

    def describe(self) -> str:
        return "map: " + ", ".join(f"{k} → {written(v)}" for k, v in self.values.items())

    def _points_of(self, distinct: np.ndarray) -> np.ndarray:
        return self.score(distinct)


class PercentileScheme(BaseScheme):
    type: Literal["percentile"]
    direction: Literal["higher_is_better", "lower_is_better"] = "higher_is_better"
    within: Literal["model", "all"] = "model"

    relative: ClassVar[bool] = True

    def score(self, values: np.ndarray, population: np.ndarray | None = None) -> np.ndarray:
        """Percentile rank within the population (ties share the mid rank), 0..100."""
        population = values if population is None else population
        known = np.sort(population[~np.isnan(population)])
        if len(known) == 0:
            return np.full(len(values), np.nan)
        # looked up in ascending order (3x faster than in the accounts' order: each search starts
        # near the last one), then put back in the accounts' order
        order = np.argsort(values, kind="stable")
        ascending = values[order]
        below, upto = np.empty(len(values), np.int64), np.empty(len(values), np.int64)
        below[order] = np.searchsorted(known, ascending, side="left")
        upto[order] = np.searchsorted(known, ascending, side="right")
        if len(known) == 1:
            rank = np.full(len(values), 50.0)
        else:
            rank = ((below + upto - 1) / 2.0) / (len(known) - 1) * 100.0
        if self.direction == "lower_is_better":
            rank = 100.0 - rank
        return np.where(np.isnan(values), np.nan, np.clip(rank, 0.0, 100.0))

    def describe(self) -> str:
        return f"percentile within {self.within}, {self.direction.replace('_', ' ')}"


Scheme = Annotated[
    BandsScheme | LinearScheme | BooleanScheme | MapScheme | PercentileScheme,
    Field(discriminator="type"),
]
SCHEME_TYPES = ("bands", "linear", "boolean", "map", "percentile")


def _key(value: object) -> str | None:
    """A value as a map scheme's key: 3.0 is '3', text as written; None for N/A."""
    if value is None:
        return None
    if isinstance(value, float):
        if np.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _per_distinct(values: np.ndarray, of_key: Any, dtype: type) -> np.ndarray:
    """of_key(_key(v)) for every value, computed once per distinct value (a picklist has a few)."""
    if values.dtype != object:
        distinct, where = np.unique(values.astype(float), return_inverse=True)  # NaNs are one value
        found = [of_key(_key(v)) for v in distinct.tolist()]
        return (np.array(found, dtype=float) if dtype is float else np.array(found + [None], dtype=object)[:-1])[where.reshape(-1)]
    codes: dict[Any, int] = {}
    index = np.fromiter((codes.setdefault(None if isinstance(v, float) and v != v else v, len(codes))
                         for v in values.tolist()), np.int64, len(values))
    found = [of_key(_key(v)) for v in codes]
    table = np.array(found, dtype=float) if dtype is float else np.array(found + [None], dtype=object)[:-1]
    return table[index]


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype == object:
        counted = Counter(str(v) for v in values.tolist())
        keys = list(counted)
        return np.array(keys, dtype=object), np.array([counted[k] for k in keys])
    return np.unique(values.astype(float), return_counts=True)


def _shown(value: object) -> str:
    return written(value) if isinstance(value, float) else str(value)
