"""The report's colours: one per status band of a score, and the few neutral ones.

Band names the admins chose (Red / Yellow / Green, Low / Medium / High, ...)
get a colour by name when it is a colour word, otherwise by position on a
red-to-green ramp, reversed for scores where higher is worse (risk indexes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config.models import ScoreDef, StatusBand

RED = "#d64545"
YELLOW = "#e0a800"
GREEN = "#2f9e44"
NA = "#adb5bd"  # accounts or values with no score
NO_VERDICT = "#868e96"  # accounts below the score's min_coverage: too little data for a verdict
NEUTRAL = "#5c7cfa"  # values a scheme does not colour (percentile ranks)
INK = "#212529"
MUTED = "#6c757d"
GRID = "#e9ecef"

_NAMED = {"red": RED, "yellow": YELLOW, "amber": YELLOW, "green": GREEN}


def status_colours(definition: ScoreDef) -> dict[str, str]:
    """Status band name -> colour, worst band red and best band green."""
    names = [band.name for band in definition.status]
    ramp = _ramp(len(names))
    if not definition.higher_is_better:
        ramp = ramp[::-1]
    return {name: _NAMED.get(name.lower(), ramp[i]) for i, name in enumerate(names)}


def band_of(points: float, bands: Sequence[StatusBand]) -> str:
    """The status band a 0..100 value falls in ('below' bounds are exclusive)."""
    for band in bands[:-1]:
        if band.below is not None and points < band.below:
            return band.name
    return bands[-1].name


def points_colour(points: float | None, definition: ScoreDef) -> str:
    """The colour of the status band a 0..100 value would land in; grey for no value."""
    if points is None or np.isnan(points):
        return NA
    return status_colours(definition)[band_of(points, definition.status)]


def _ramp(n: int) -> list[str]:
    if n == 1:
        return [GREEN]
    if n == 2:
        return [RED, GREEN]
    stops = [_rgb(RED), _rgb(YELLOW), _rgb(GREEN)]
    out = []
    for i in range(n):
        t = i / (n - 1) * 2  # 0..2 along red -> yellow -> green
        left = min(int(t), 1)
        a, b, f = stops[left], stops[left + 1], t - left
        out.append("#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True)))
    return out


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
