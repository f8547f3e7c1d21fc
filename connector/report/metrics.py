"""Each metric as each segment's model scores it: raw values, scheme thresholds, N/A rate.

Values are the stored metric values (`metric_values`), loaded once per name
for the accounts a score covers with the store's own column loader; derived
metrics are evaluated with the engine's expressions over those columns, and
per-seat metrics are divided as the engine divides them. This is the data as
the store holds it: age limits, carry-forward and `applies_when` are not
applied here (`healthsync explain` shows them for one account).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from ..config.mappings import CompiledModel, CompiledScore, Mappings, MetricSlot
from ..config.models import (
    BandsScheme,
    BooleanScheme,
    LinearScheme,
    MapScheme,
    PercentileScheme,
    ScoreDef,
)
from ..expressions import DATE, TEXT
from ..scoring import schemes
from ..scoring.frame import Frame, iso
from ..store import Column, Store
from .palette import NEUTRAL, points_colour
from .svg import nice_step, number

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


class MetricColumns:
    """Metric and input values for a fixed set of accounts, each name loaded once."""

    def __init__(self, store: Store, mappings: Mappings, ids: np.ndarray, now: datetime):
        self.store, self.mappings = store, mappings
        text_names = {n for n, t in mappings.types.items() if t in (TEXT, DATE)}
        self.frame = Frame(ids, now, history=self._history, text_names=text_names)

    def get(self, name: str) -> Column:
        if name not in self.frame.columns:
            self.frame.columns[name] = self._load(name)
        return self.frame.columns[name]

    def _load(self, name: str) -> Column:
        expr = self.mappings.derived.get(name)
        if expr is None:
            text = name in self.frame.text_names
            return self.store.load_column(self.mappings.source_of(name), self.frame.ids, text, with_since=False)
        for dependency in sorted(expr.names):
            self.get(dependency)
        values = expr.evaluate(self.frame)
        reasons = np.full(self.frame.n, None, dtype=object)
        reasons[_missing(values)] = f"derived: {expr.source} is N/A"
        return Column(values, np.full(self.frame.n, None, dtype=object), reasons)

    def _history(self, name: str, days: int, text: bool) -> Column:
        before = iso(self.frame.now - timedelta(days=days))
        return self.store.history_column(name, self.frame.ids, text, before)


def segment_metrics(store: Store, mappings: Mappings, score: CompiledScore, now: datetime) -> list[SegmentMetrics]:
    """Every metric of every model of a weighted score, over that model's accounts."""
    if score.definition.kind != "weighted":
        return []
    ids, models = _accounts_by_model(store, score.name)
    columns = MetricColumns(store, mappings, ids, now)
    out = []
    for model in score.models:
        rows = np.flatnonzero(models == model.name)
        if len(rows):
            views = [metric_view(columns, score, model, slot, rows) for slot in model.slots()]
            out.append(SegmentMetrics(model.name, model.label, len(rows), views))
    return out


def _accounts_by_model(store: Store, score: str) -> tuple[np.ndarray, np.ndarray]:
    rows = store.conn.execute(
        "SELECT account_id, model FROM scores WHERE score = ? AND model IS NOT NULL ORDER BY account_id", (score,)
    ).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, np.array([r[1] for r in rows], dtype=object)


def metric_view(columns: MetricColumns, score: CompiledScore, model: CompiledModel, slot: MetricSlot,
                rows: np.ndarray) -> MetricView:
    use, definition = slot.use, score.definition
    column = columns.get(slot.name)
    values, reasons = column.values[rows], column.na_reason[rows]
    if use.per is not None:
        values, reasons = _per(values, reasons, columns.get(use.per).values[rows], use.per)
    missing = _missing(values)
    view = MetricView(
        score=score.name, model=model.name, metric=slot.name, label=_label(columns.mappings, slot),
        group=slot.group, scheme=describe_scheme(use.scheme), accounts=len(rows),
        not_available=int(missing.sum()), top_reason=_top_reason(reasons[missing]),
        applies_when=use.applies_when,
    )
    present = values[~missing]
    if isinstance(use.scheme, MapScheme | BooleanScheme) or present.dtype == object:
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


def _per(values: np.ndarray, reasons: np.ndarray, divisor: np.ndarray, per: str) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(values, dtype=float) / np.asarray(divisor, dtype=float)
    bad = ~_missing(values) & ~np.isfinite(ratio)
    reasons = reasons.copy()
    reasons[bad] = f"per {per}: {per} is N/A or 0"
    return np.where(np.isfinite(ratio), ratio, np.nan), reasons


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in values], dtype=bool)
    return np.asarray(np.isnan(values), dtype=bool)


def _top_reason(reasons: np.ndarray) -> str | None:
    if not len(reasons):
        return None
    counted = Counter(NO_VALUE if r is None else str(r) for r in reasons.tolist())
    return counted.most_common(1)[0][0]


# ---------------------------------------------------------------- schemes


def describe_scheme(scheme: object) -> str:
    """The scheme in one short line: 'bands: ≤10 → 10, ≤30 → 50, else 100'."""
    if isinstance(scheme, BandsScheme):
        steps = [f"≤{number(b.upto)} → {number(b.score)}" for b in scheme.bands[:-1] if b.upto is not None]
        return f"bands: {', '.join(steps)}, else {number(scheme.bands[-1].score)}"
    if isinstance(scheme, LinearScheme):
        return f"linear: 0 at {number(scheme.worst)}, 100 at {number(scheme.best)}"
    if isinstance(scheme, BooleanScheme):
        return f"yes → {number(scheme.if_true)}, no → {number(scheme.if_false)}"
    if isinstance(scheme, MapScheme):
        return "map: " + ", ".join(f"{k} → {number(v)}" for k, v in scheme.values.items())
    if isinstance(scheme, PercentileScheme):
        return f"percentile within {scheme.within}, {scheme.direction.replace('_', ' ')}"
    return type(scheme).__name__


def thresholds(scheme: object) -> list[Threshold]:
    """The raw values where the scheme's score changes (before placing them on an axis)."""
    if isinstance(scheme, BandsScheme):
        return [Threshold(b.upto, b.upto, f"≤{number(b.upto)}") for b in scheme.bands[:-1] if b.upto is not None]
    if isinstance(scheme, LinearScheme):
        return [Threshold(scheme.worst, scheme.worst, f"{number(scheme.worst)} → 0"),
                Threshold(scheme.best, scheme.best, f"{number(scheme.best)} → 100")]
    return []


def band_counts(scheme: object, values: np.ndarray, definition: ScoreDef) -> list[Band]:
    """Accounts per band of a bands scheme, or below worst / between / past best for a linear one."""
    if isinstance(scheme, BandsScheme):
        bounds = np.array([b.upto for b in scheme.bands[:-1]], dtype=float)
        index = np.searchsorted(bounds, values, side="left")
        counts = np.bincount(index, minlength=len(scheme.bands))
        labels = _band_labels(bounds)
        return [Band(labels[i], number(b.score), int(counts[i]), points_colour(b.score, definition))
                for i, b in enumerate(scheme.bands)]
    if isinstance(scheme, LinearScheme):
        points = schemes.linear(scheme, values)
        parts = [("at or past worst", "0", points <= 0, 0.0), ("between", "1–99", (points > 0) & (points < 100), 50.0),
                 ("at or past best", "100", points >= 100, 100.0)]
        return [Band(label, shown, int(mask.sum()), points_colour(p, definition)) for label, shown, mask, p in parts]
    return []


def _band_labels(bounds: np.ndarray) -> list[str]:
    edges = [number(b) for b in bounds]
    middle = [f"{a} – {b}" for a, b in itertools.pairwise(edges)]
    return [f"≤ {edges[0]}", *middle, f"> {edges[-1]}"]


def categories(scheme: object, values: np.ndarray, definition: ScoreDef) -> list[Category]:
    """Accounts per distinct value, with the points the scheme gives it; best first."""
    if isinstance(scheme, BooleanScheme):
        yes = int(np.count_nonzero(values.astype(float) != 0))
        return [Category("yes", yes, scheme.if_true, points_colour(scheme.if_true, definition)),
                Category("no", len(values) - yes, scheme.if_false, points_colour(scheme.if_false, definition))]
    distinct, counts = _distinct(values)
    points, _ = schemes.value_map(scheme, distinct) if isinstance(scheme, MapScheme) else (
        np.full(len(distinct), np.nan), None)
    found = [
        Category(_shown(v), int(n), None if np.isnan(p) else float(p), points_colour(None if np.isnan(p) else p, definition))
        for v, n, p in zip(distinct.tolist(), counts.tolist(), points.tolist(), strict=True)
    ]
    return sorted(found, key=lambda c: (c.points is None, -(c.points or 0), -c.count))


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype == object:
        counted = Counter(str(v) for v in values.tolist())
        keys = list(counted)
        return np.array(keys, dtype=object), np.array([counted[k] for k in keys])
    return np.unique(values.astype(float), return_counts=True)


def _shown(value: object) -> str:
    return number(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- histogram


def histogram(scheme: object, values: np.ndarray, marks: list[Threshold], definition: ScoreDef) -> Histogram:
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


def placed(marks: list[Threshold], drawn: Histogram, scheme: object) -> list[Threshold]:
    """Thresholds on the histogram's axis: a band's `upto` goes after its last whole value."""
    if not drawn.discrete or not isinstance(scheme, BandsScheme):
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


def _bar_colours(scheme: object, centres: np.ndarray, definition: ScoreDef) -> list[str]:
    if isinstance(scheme, PercentileScheme):
        return [NEUTRAL] * len(centres)
    points, _ = schemes.apply(scheme, centres)
    return [points_colour(p, definition) for p in points.tolist()]
