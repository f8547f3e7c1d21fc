"""Schemes: how a raw metric value becomes a 0..100 score, column-wise.

Each function takes the raw values of the accounts being scored and returns
their scores (NaN where the scheme cannot score the value) and, where it has
one, the reason a value could not be scored.
"""

from __future__ import annotations

import numpy as np

from ..config.models import BandsScheme, BooleanScheme, LinearScheme, MapScheme, PercentileScheme


def apply(
    scheme: object, raw: np.ndarray, population: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores (float64, NaN = N/A) and per-row reasons (object or None) for raw values."""
    if isinstance(scheme, BandsScheme):
        return bands(scheme, raw), None
    if isinstance(scheme, LinearScheme):
        return linear(scheme, raw), None
    if isinstance(scheme, BooleanScheme):
        return boolean(scheme, raw), None
    if isinstance(scheme, MapScheme):
        return value_map(scheme, raw)
    if isinstance(scheme, PercentileScheme):
        return percentile(scheme, raw, raw if population is None else population), None
    raise TypeError(f"unknown scheme {scheme!r}")


def bands(scheme: BandsScheme, raw: np.ndarray) -> np.ndarray:
    """Upper bounds are inclusive: with upto 10, a value of exactly 10 is in that band."""
    bounds = np.array([b.upto for b in scheme.bands[:-1]], dtype=float)
    scores = np.array([b.score for b in scheme.bands], dtype=float)
    index = np.searchsorted(bounds, raw, side="left")
    out = scores[np.minimum(index, len(scores) - 1)]
    return np.where(np.isnan(raw), np.nan, out)


def linear(scheme: LinearScheme, raw: np.ndarray) -> np.ndarray:
    """0 at `worst`, 100 at `best`, straight in between, clamped outside."""
    with np.errstate(invalid="ignore"):
        out = (raw - scheme.worst) / (scheme.best - scheme.worst) * 100.0
    return np.clip(out, 0.0, 100.0)


def boolean(scheme: BooleanScheme, raw: np.ndarray) -> np.ndarray:
    out = np.where(raw != 0, scheme.if_true, scheme.if_false).astype(float)
    return np.where(np.isnan(raw), np.nan, out)


def value_map(scheme: MapScheme, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Picklists and ratings: each listed value has its score; others are N/A with a reason."""
    keys = [_key(v) for v in raw]
    out = np.fromiter((scheme.values.get(k, np.nan) if k is not None else np.nan for k in keys), float, len(keys))
    reasons = np.array(
        [None if k is None or k in scheme.values else f"value {k!r} is not in the scheme's values" for k in keys],
        dtype=object,
    )
    return out, reasons


def _key(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if np.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def percentile(scheme: PercentileScheme, raw: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Percentile rank within the population (ties share the mid rank), 0..100."""
    known = np.sort(population[~np.isnan(population)])
    if len(known) == 0:
        return np.full(len(raw), np.nan)
    below = np.searchsorted(known, raw, side="left")
    upto = np.searchsorted(known, raw, side="right")
    if len(known) == 1:
        rank = np.full(len(raw), 50.0)
    else:
        rank = ((below + upto - 1) / 2.0) / (len(known) - 1) * 100.0
    if scheme.direction == "lower_is_better":
        rank = 100.0 - rank
    return np.where(np.isnan(raw), np.nan, np.clip(rank, 0.0, 100.0))
