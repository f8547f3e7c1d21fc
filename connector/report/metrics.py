"""Each metric as each segment's model scores it: values, scheme thresholds, N/A rate.

The values are the engine's: the report scores the store's frame
(``scoring.frame.from_store``) with ``scoring.engine`` and reads each model's
metric results, so a value here is the one the score used (age limits,
carry-forward, per-seat division and derived metrics applied as the engine
applies them) and N/A is what the engine found N/A, including accounts
outside a metric's ``applies_when``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from ..config.mappings import CompiledScore, Mappings, MetricSlot
from ..config.models import ScoreDef
from ..config.schemes import BaseScheme
from ..scoring.engine import SlotResult, score_one
from ..scoring.frame import Frame, from_store
from ..store import Store
from .palette import NEUTRAL, points_colour
from .svg import nice_step

MAX_DISCRETE = 40  # whole-number metrics spanning at most this many values get one bar per value
TARGET_BARS = 24
NO_VALUE = "no value in the store"


@dataclass
class Threshold:
    """A scheme threshold: `value` as configured, drawn at axis position `at`."""

    at: float
    value: float
    label: str


@dataclass
class Band:
    """How many accounts' values land in one band of the scheme, and what it scores."""

    label: str
    points: str
    count: int
    colour: str


@dataclass
class Histogram:
    edges: np.ndarray  # bar i covers (edges[i], edges[i+1]]; one bar per whole value when discrete
    counts: np.ndarray
    colours: list[str]  # each bar's colour: the status band its score falls in
    discrete: bool
    below: int = 0  # values under the first edge, counted in the first bar
    above: int = 0  # values over the last edge, counted in the last bar


@dataclass
class Category:
    label: str
    count: int
    points: float | None  # None: the scheme has no score for this value (N/A)
    colour: str


@dataclass
class MetricView:
    """One metric in one model: its distribution, thresholds and N/A rate."""

    score: str
    model: str
    metric: str
    label: str
    group: str
    scheme: str
    accounts: int
    not_available: int
    top_reason: str | None
    applies_when: str | None = None
    histogram: Histogram | None = None
    categories: list[Category] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)

    @property
    def na_share(self) -> float:
        return self.not_available / self.accounts if self.accounts else 0.0


@dataclass
class SegmentMetrics:
    model: str
    label: str
    accounts: int
    metrics: list[MetricView]


def segment_metrics(
    store: Store, mappings: Mappings, score: CompiledScore, now: datetime, frame: Frame | None = None
) -> list[SegmentMetrics]:
    """Every metric of every model of a weighted score, over the accounts the engine gives that model."""
    if score.definition.kind != "weighted":
        return []
    result = score_one(score, frame or from_store(store, mappings, now))
    return [
        SegmentMetrics(p.model.name, p.model.label, len(p.rows),
                       [metric_view(mappings, score, p.model.name, s) for s in p.slots])
        for p in result.passes
    ]


def metric_view(mappings: Mappings, score: CompiledScore, model: str, scored: SlotResult) -> MetricView:
    """One metric of one model from the engine's result for it: the values it scored and what was N/A."""
    slot, use, definition = scored.slot, scored.slot.use, score.definition
    missing = scored.no_value | ~scored.applicable
    reasons = scored.reason[missing]
    view = MetricView(
        score=score.name, model=model, metric=slot.name, label=_label(mappings, slot),
        group=slot.group, scheme=use.scheme.describe(), accounts=len(missing),
        not_available=int(missing.sum()), top_reason=_top_reason(reasons),
        applies_when=use.applies_when,
    )
    present = scored.value[~missing]
    if use.scheme.categorical or present.dtype == object:
        view.categories = categories(use.scheme, present, definition)
    elif len(present):
        numbers = present.astype(float)
        marks = thresholds(use.scheme)
        view.histogram = histogram(use.scheme, numbers, marks, definition)
        view.thresholds = placed(marks, view.histogram, use.scheme)
        view.bands = band_counts(use.scheme, numbers, definition)
    return view


def _label(mappings: Mappings, slot: MetricSlot) -> str:
    metric = mappings.metrics.get(slot.name)
    label = (metric.label if metric and metric.label else slot.name)
    return f"{label} / {slot.use.per}" if slot.use.per else label


def _top_reason(reasons: np.ndarray) -> str | None:
    if not len(reasons):
        return None
    counted = Counter(NO_VALUE if r is None else str(r) for r in reasons.tolist())
    return counted.most_common(1)[0][0]


# ---------------------------------------------------------------- schemes


def thresholds(scheme: BaseScheme) -> list[Threshold]:
    """The raw values where the scheme's score changes (before placing them on an axis)."""
    return [Threshold(value, value, label) for value, label in scheme.thresholds()]


def band_counts(scheme: BaseScheme, values: np.ndarray, definition: ScoreDef) -> list[Band]:
    """Accounts per band of a bands scheme, or below worst / between / past best for a linear one."""
    return [Band(label, shown, count, points_colour(points, definition))
            for label, shown, count, points in scheme.regions(values)]


def categories(scheme: BaseScheme, values: np.ndarray, definition: ScoreDef) -> list[Category]:
    """Accounts per distinct value, with the points the scheme gives it, in the scheme's order."""
    return [Category(label, count, points, points_colour(points, definition))
            for label, count, points in scheme.categories(values)]


# ---------------------------------------------------------------- histogram


def histogram(scheme: BaseScheme, values: np.ndarray, marks: list[Threshold], definition: ScoreDef) -> Histogram:
    """Bars over the values' range (1st..99th percentile, widened to show every threshold).

    Whole-number metrics with a small range get one bar per value, and a band
    threshold `upto: 2` is drawn between the bars of 2 and 3; otherwise bars
    are right-closed, (a, b], as `upto` is inclusive.
    """
    discrete = _discrete_range(values, marks)
    if discrete is not None:
        lo, hi = discrete
        edges = np.arange(lo - 0.5, hi + 1.0, 1.0)
        index = np.rint(values).astype(np.int64) - lo
        centres = np.arange(lo, hi + 1, dtype=float)
    else:
        edges = _continuous_edges(values, [m.value for m in marks])
        step = edges[1] - edges[0]
        index = np.ceil(np.round((values - edges[0]) / step, 9)).astype(np.int64) - 1
        centres = (edges[:-1] + edges[1:]) / 2
    bars = len(edges) - 1
    below, above = int((values < edges[0]).sum()), int((values > edges[-1]).sum())
    counts = np.bincount(np.clip(index, 0, bars - 1), minlength=bars)
    return Histogram(edges, counts, _bar_colours(scheme, centres, definition), discrete is not None, below, above)


def placed(marks: list[Threshold], drawn: Histogram, scheme: BaseScheme) -> list[Threshold]:
    """Thresholds on the histogram's axis: a band's `upto` goes after its last whole value."""
    if not drawn.discrete or not scheme.inclusive_thresholds:
        return marks
    return [Threshold(math.floor(m.value) + 0.5, m.value, m.label) for m in marks]


def _discrete_range(values: np.ndarray, marks: list[Threshold]) -> tuple[int, int] | None:
    if not np.all(values == np.rint(values)):
        return None
    lo = math.floor(min(values.min(), *(m.value for m in marks)))
    hi = math.ceil(max(values.max(), *(math.floor(m.value) + 1 for m in marks)))
    return (lo, hi) if hi - lo <= MAX_DISCRETE else None


def _continuous_edges(values: np.ndarray, marks: list[float]) -> np.ndarray:
    lo, hi = _core_range(values)
    lo, hi = min(lo, *marks), max(hi, *marks)
    if 0 < lo <= (hi - lo) / 4:  # a positive range that nearly reaches 0 reads better from 0
        lo = 0.0
    if hi <= lo:
        hi = lo + 1.0
    step = nice_step(hi - lo, TARGET_BARS)
    start, stop = math.floor(lo / step), math.ceil(hi / step)
    return np.arange(start, stop + 1) * step


def _core_range(values: np.ndarray) -> tuple[float, float]:
    """Where the values are, without a long tail: 1st..99th percentile, cut at 3 IQR past the quartiles."""
    if len(values) < 20:
        return float(values.min()), float(values.max())
    q01, q25, q75, q99 = np.quantile(values, [0.01, 0.25, 0.75, 0.99]).tolist()
    spread = q75 - q25
    if spread > 0:
        q01, q99 = max(q01, q25 - 3 * spread), min(q99, q75 + 3 * spread)
    return q01, q99


def _bar_colours(scheme: BaseScheme, centres: np.ndarray, definition: ScoreDef) -> list[str]:
    if scheme.relative:  # a rank has no points of its own
        return [NEUTRAL] * len(centres)
    points = scheme.score(centres)
    return [points_colour(p, definition) for p in points.tolist()]
