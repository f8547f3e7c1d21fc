"""Rounding, status colours, letter grades and the distance to the next band."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def round_score(values: np.ndarray, mode: str = "half_up") -> np.ndarray:
    """Nearest integer. half_up: 55.5 -> 56; half_even: 55.5 -> 56, 54.5 -> 54.

    Values are first rounded to 9 decimals so that float noise (55.49999999997
    from 611.5 / 11) does not decide which way a half goes.
    """
    clean = np.round(values, 9)
    if mode == "half_even":
        return np.round(clean)
    return np.floor(clean + 0.5)


def band_index(values: np.ndarray, bands: Sequence[Any]) -> np.ndarray:
    """Index of the band each value falls in; bands are 'below' bounds, lowest first."""
    bounds = np.array([b.below for b in bands[:-1]], dtype=float)
    return np.searchsorted(bounds, values, side="right")


def band_names(values: np.ndarray, bands: Sequence[Any]) -> np.ndarray:
    names = np.array([b.name for b in bands] + [None], dtype=object)
    index = band_index(values, bands)
    return names[np.where(np.isnan(values), len(bands), index)]


def points_to_next(values: np.ndarray, bands: Sequence[Any]) -> np.ndarray:
    """Points a (rounded) score needs to reach the next band up; NaN in the top band."""
    bounds = np.array([b.below for b in bands[:-1]] + [np.nan], dtype=float)
    index = band_index(values, bands)
    nxt = bounds[np.minimum(index, len(bands) - 1)]
    return np.where(np.isnan(values), np.nan, nxt - values)
