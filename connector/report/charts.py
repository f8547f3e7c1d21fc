"""The report's charts: its data (contents.py) turned into SVG (svg.py), one function per kind.

Kinds, as written in each chart's data-chart attribute: histogram (a score per
segment), status-counts (a score's statuses per segment), groups (sub-scores of
one segment), metric (one metric of one segment), na-rate (its N/A share),
movers, and for the backtest roc, band-rates and calibration.
"""

from __future__ import annotations

import numpy as np

from ..config.models import ScoreDef
from .contents import ScoreView
from .metrics import Histogram, MetricView
from .palette import GREEN, NA, NEUTRAL, NO_VERDICT, RED, points_colour
from .prediction import Prediction
from .scores import SCORE_BIN, Movers, Segment, SegmentSubScores
from .svg import (
    Axis,
    Bar,
    ChartId,
    Mark,
    Panel,
    Part,
    Rate,
    Region,
    Row,
    bar_rows,
    diverging,
    histogram,
    nice_step,
    percent,
    rate_columns,
    rate_rows,
    roc,
    small_multiples,
)
from .svg import number as fmt

NA_INK = "#495057"
NA_TRACK = "#e9ecef"


def status_marks(definition: ScoreDef) -> list[Mark]:
    return [Mark(b.below, b.below, fmt(b.below)) for b in definition.status[:-1] if b.below is not None]


def status_regions(view: ScoreView) -> list[Region]:
    bounds = [0.0, *(b.below for b in view.score.definition.status[:-1] if b.below is not None), 100.0]
    names = [b.name for b in view.score.definition.status]
    return [Region(lo, hi, view.colours[name], name) for lo, hi, name in zip(bounds, bounds[1:], names, strict=False)]


def _score_axis(label: str) -> Axis:
    return Axis(0, 100, [(float(t), str(t)) for t in range(0, 101, 10)], label)


# ---------------------------------------------------------------- scores


def score_histogram(view: ScoreView, segment: Segment) -> str:
    """The segment's accounts per 5-point bar, stacked by stored status, over the status bands."""
    bars = []
    for i in range(len(segment.edges) - 1):
        lo, hi = int(segment.edges[i]), int(segment.edges[i + 1])
        parts = [Part(s, int(c[i]), view.colours.get(s, NA)) for s, c in segment.by_status.items() if c[i]]
        span = f"{lo}–{hi - 1}" if hi < 100 else f"{lo}–100"
        detail = ", ".join(f"{p.name} {p.count:,}" for p in parts)
        bars.append(Bar(lo, hi, parts, f"{span}: {sum(p.count for p in parts):,} accounts ({detail})"))
    ident = ChartId("histogram", f"{view.label}: distribution of {segment.label} accounts in {SCORE_BIN}-point bars",
                    score=view.name, segment=segment.model)
    return histogram(ident, _score_axis(f"{view.label} (0–100)"), bars, status_marks(view.score.definition),
                     status_regions(view))


def status_counts(view: ScoreView) -> str:
    """One 100 % bar per segment, split by status; accounts with no value in grey."""
    rows = []
    for segment in view.segments:
        parts = [Part(s, n, view.colours.get(s, NA)) for s, n in segment.status_counts.items()]
        if segment.no_verdict:  # below the score's min_coverage
            parts.append(Part("No verdict", segment.no_verdict, NO_VERDICT))
        parts.append(Part("N/A", segment.not_scored, NA))
        rows.append(Row(segment.label, parts, f"{segment.total:,}"))
    ident = ChartId("status-counts", f"{view.label}: accounts per status and segment", score=view.name)
    return bar_rows(ident, rows, width=520, label_width=130, note_width=70, row_height=26, normalize=True)


def sub_scores(view: ScoreView, segment: SegmentSubScores) -> str:
    """Each sub-score's distribution for one segment, in 10-point bars, with the status thresholds."""
    definition = view.score.definition
    panels = []
    for group in segment.groups:
        edges = np.arange(0, 101, 100 / len(group.counts))
        bars = [Bar(float(edges[i]), float(edges[i + 1]), [Part(group.label, int(n), points_colour(edges[i] + 5, definition))],
                    f"{group.label} {edges[i]:.0f}–{edges[i + 1]:.0f}: {int(n):,} accounts")
                for i, n in enumerate(group.counts)]
        total = int(group.counts.sum()) + group.not_available
        mean = "–" if group.mean is None else f"{group.mean:.0f}"
        na = f"{group.not_available / total:.0%}" if total else "–"
        axis = Axis(0, 100, [(float(t), str(t)) for t in range(0, 101, 20)], "")
        panels.append(Panel(f"{group.label} · mean {mean} · N/A {na}", axis, bars, status_marks(definition)))
    ident = ChartId("groups", f"{view.label}: sub-scores of {segment.label} accounts", score=view.name,
                    segment=segment.model)
    return small_multiples(ident, panels)


def movers(view: ScoreView, moved: Movers) -> str:
    """The biggest falls and rises as bars left and right of zero."""
    good = 1 if view.score.definition.higher_is_better else -1
    rows = [(m.name or m.key, m.change, GREEN if m.change * good > 0 else RED,
             f"{fmt(m.before)} → {fmt(m.after)}") for m in [*moved.down, *moved.up]]
    ident = ChartId("movers", f"{view.label}: biggest changes since {moved.since[:10]}", score=view.name)
    return diverging(ident, rows)


# ---------------------------------------------------------------- metrics


def metric_chart(view: ScoreView, metric: MetricView) -> str | None:
    """A histogram of the metric's values with its thresholds, or bars per value for picklists."""
    ident = ChartId("metric", f"{metric.label} in {metric.model}: values and scheme thresholds",
                    score=view.name, segment=metric.model, metric=metric.metric)
    if metric.histogram is not None:
        drawn = metric.histogram
        bars = _metric_bars(drawn, metric.label)
        marks = [Mark(t.at, t.value, t.label) for t in metric.thresholds]
        return histogram(ident, _metric_axis(drawn, metric.label), bars, marks)
    if metric.categories:
        total = sum(c.count for c in metric.categories) or 1
        rows = [Row(c.label, [Part(c.label, c.count, c.colour)],
                    f"{c.count / total:.0%} · {'N/A' if c.points is None else fmt(c.points) + ' pts'}")
                for c in metric.categories]
        return bar_rows(ident, rows, label_width=110, note_width=100)
    return None


def _metric_bars(drawn: Histogram, label: str) -> list[Bar]:
    bars = []
    for i, count in enumerate(drawn.counts.tolist()):
        lo, hi = float(drawn.edges[i]), float(drawn.edges[i + 1])
        span = fmt((lo + hi) / 2) if drawn.discrete else f"{fmt(lo)} – {fmt(hi)}"
        bars.append(Bar(lo, hi, [Part(label, int(count), drawn.colours[i])], f"{span}: {count:,} accounts"))
    return bars


def _metric_axis(drawn: Histogram, label: str) -> Axis:
    lo, hi = float(drawn.edges[0]), float(drawn.edges[-1])
    ticks = _whole_ticks(lo, hi) if drawn.discrete else _round_ticks(lo, hi)
    return Axis(lo, hi, ticks, label)


def _whole_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """One tick per bar (whole values), thinned to about 10."""
    step = max(1, round(nice_step(hi - lo, 10)))
    return [(float(v), fmt(v)) for v in range(int(np.ceil(lo)), int(hi) + 1, step)]


def _round_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    step = nice_step(hi - lo, 6)
    start = np.ceil(lo / step - 1e-9) * step
    return [(float(v), fmt(round(float(v), 10))) for v in np.arange(start, hi + step / 2, step)]


def na_meter(view: ScoreView, metric: MetricView) -> str:
    """The metric's N/A share in this segment as a small bar."""
    ident = ChartId("na-rate", f"{metric.label} in {metric.model}: {metric.na_share:.1%} N/A",
                    score=view.name, segment=metric.model, metric=metric.metric)
    parts = [Part("N/A", metric.not_available, NA_INK),
             Part("has a value", metric.accounts - metric.not_available, NA_TRACK)]
    return bar_rows(ident, [Row("", parts)], width=130, label_width=0, note_width=0, row_height=16,
                    normalize=True)


# ---------------------------------------------------------------- does the score predict churn?


def roc_curve(view: ScoreView, prediction: Prediction) -> str:
    """The ROC curve of "a lower score = more risk" against the diagonal of a coin toss."""
    d = (prediction.result or {})["discrimination"]
    auc = "n/a" if d["auc"] is None else f"{d['auc']:.3f}"
    ident = ChartId("roc", f"{view.label}: ROC curve against {prediction.outcome} within {prediction.horizon} days, "
                    f"AUC {auc}", score=view.name)
    return roc(ident, d["roc_fpr"], d["roc_tpr"], NEUTRAL)


def band_rates(view: ScoreView, prediction: Prediction) -> str:
    """The outcome rate of each status band, worst band first, in the band's colour, with its lift."""
    b = (prediction.result or {})["bands"]
    rows = []
    for row in b["rows"]:
        lift = "" if row["lift"] is None else f" · lift {row['lift']:.2f}"
        note = "no accounts" if row["rate"] is None else f"{percent(row['rate'])}{lift}"
        tip = (f"{row['band']}: {row['outcomes']:,} of {row['n']:,} observations had the outcome"
               + ("" if row["rate"] is None else f" ({percent(row['rate'])}){lift}"))
        rows.append(Rate(row["band"], row["rate"], view.colours.get(row["band"], NA), note, tip, row["band"]))
    ident = ChartId("band-rates", f"{view.label}: {prediction.outcome} rate within {prediction.horizon} days "
                    "per status band", score=view.name)
    return rate_rows(ident, rows, b["base_rate"])


def calibration(view: ScoreView, prediction: Prediction) -> str:
    """The outcome rate in each tenth of the observations, riskiest tenth first, coloured by the
    status band of its mean score."""
    c = (prediction.result or {})["calibration"]
    sign, definition = prediction.sign, view.score.definition
    columns = []
    for b in c["bins"]:
        lo, hi = sorted((sign * b["score_min"], sign * b["score_max"]))
        mean = sign * b["mean_score"]
        tip = (f"tenth {b['bin']}: {view.label} {fmt(lo)}–{fmt(hi)} (mean {mean:.1f}), {b['outcomes']:,} of "
               f"{b['n']:,} observations had the outcome ({percent(b['rate'])})")
        columns.append(Rate(f"{mean:.0f}", b["rate"], points_colour(mean, definition), percent(b["rate"]), tip,
                            str(b["bin"])))
    ident = ChartId("calibration", f"{view.label}: {prediction.outcome} rate per tenth of the scores", score=view.name)
    return rate_columns(ident, columns, c["base_rate"], f"mean {view.label} of each tenth, riskiest first")
