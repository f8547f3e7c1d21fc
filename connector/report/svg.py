"""Inline SVG charts drawn from plain numbers: histograms, horizontal and diverging bars.

No charting library: each chart is a string of SVG elements with every text
escaped, a <title> and an aria-label, and `class="chart"` plus data-attributes
naming its kind and subject (score, segment, metric) so readers and tests can
find it. Thresholds are `<line class="threshold" data-value=...>`, bars are
`<rect class="bar" data-count=...>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from .palette import GRID, INK, MUTED

FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


@dataclass(frozen=True)
class ChartId:
    """What a chart shows: its kind and subject, written as data-attributes."""

    kind: str
    title: str
    score: str | None = None
    segment: str | None = None
    metric: str | None = None


@dataclass(frozen=True)
class Part:
    """One coloured piece of a bar: `count` accounts of one status or band."""

    name: str
    count: int
    colour: str


@dataclass
class Bar:
    """A histogram bar over [x0, x1] on the axis, its parts stacked bottom-up."""

    x0: float
    x1: float
    parts: list[Part]
    tip: str

    @property
    def total(self) -> int:
        return sum(p.count for p in self.parts)


@dataclass(frozen=True)
class Mark:
    """A threshold line at axis position `at`; `value` is the threshold as configured."""

    at: float
    value: float
    label: str


@dataclass(frozen=True)
class Region:
    """A shaded band of the axis (a status or scheme band) with its label."""

    x0: float
    x1: float
    colour: str
    label: str


@dataclass
class Axis:
    lo: float
    hi: float
    ticks: list[tuple[float, str]]
    label: str


@dataclass
class Panel:
    """One small histogram among several in a chart (a sub-score of one segment)."""

    title: str
    axis: Axis
    bars: list[Bar]
    marks: list[Mark] = field(default_factory=list)


@dataclass
class Row:
    """One horizontal bar: a label, its parts left to right, a note at the right."""

    label: str
    parts: list[Part]
    note: str = ""


@dataclass(frozen=True)
class Box:
    """The plot area inside a chart, in SVG user units."""

    left: float
    top: float
    width: float
    height: float

    @property
    def bottom(self) -> float:
        return self.top + self.height


# ---------------------------------------------------------------- elements


def tag(name: str, attributes: Mapping[str, object], body: str = "") -> str:
    """One SVG element; attribute values escaped, numbers with at most 2 decimals."""
    parts = "".join(f' {k}="{escape(_attr(v))}"' for k, v in attributes.items() if v is not None)
    return f"<{name}{parts}>{body}</{name}>" if body else f"<{name}{parts}/>"


def text(x: float, y: float, content: str, size: float = 11, anchor: str = "start",
         colour: str = MUTED, weight: str | None = None, cls: str | None = None) -> str:
    return tag("text", {"x": x, "y": y, "font-size": size, "text-anchor": anchor, "fill": colour,
                        "font-weight": weight, "class": cls}, escape(content))


def chart(ident: ChartId, width: float, height: float, body: str) -> str:
    """The <svg> element around a chart's body, with its title and data-attributes."""
    attributes = {
        "class": "chart", "data-chart": ident.kind, "data-score": ident.score,
        "data-segment": ident.segment, "data-metric": ident.metric,
        "viewBox": f"0 0 {_attr(width)} {_attr(height)}", "width": width, "height": height,
        "role": "img", "aria-label": ident.title, "style": FONT,
    }
    return tag("svg", attributes, tag("title", {}, escape(ident.title)) + body)


def _attr(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def number(value: float) -> str:
    """A threshold or tick as an admin would write it: 40, 0.05, -12.5, 12,000."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) >= 1 else f"{value:.4g}"


# ---------------------------------------------------------------- scales


def nice_step(span: float, target: int, multiples: Sequence[float] = (1, 2, 2.5, 5, 10)) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) cutting `span` into about `target` parts."""
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * power for m in multiples if m * power >= raw * 0.999))


def _y_scale(peak: int) -> tuple[float, float]:
    """(top of the y axis, tick step) for bars up to `peak`: whole numbers of accounts."""
    step = max(1.0, nice_step(max(peak, 1), 4, multiples=(1, 2, 5, 10)))
    return max(step, math.ceil(max(peak, 1) / step) * step), step


class _Scale:
    def __init__(self, axis: Axis, box: Box, peak: int):
        self.axis, self.box = axis, box
        self.top_count, self.step = _y_scale(peak)

    def x(self, value: float) -> float:
        lo, hi = self.axis.lo, self.axis.hi
        clamped = min(max(value, lo), hi)
        return self.box.left + (clamped - lo) / ((hi - lo) or 1.0) * self.box.width

    def y(self, count: float) -> float:
        return self.box.bottom - count / self.top_count * self.box.height


# ---------------------------------------------------------------- histograms


def histogram(ident: ChartId, axis: Axis, bars: Sequence[Bar], marks: Sequence[Mark] = (),
              regions: Sequence[Region] = (), width: float = 420, height: float = 240) -> str:
    """Bars over a numeric axis, shaded bands behind them and threshold lines on top."""
    box = Box(48, 34, width - 48 - 16, height - 34 - 46)
    scale = _Scale(axis, box, max((b.total for b in bars), default=0))
    body = (_regions(scale, regions) + _y_axis(scale) + _bars(scale, bars) + _x_axis(scale, compact=False)
            + _marks(scale, marks, label_y=box.top - 8))
    return chart(ident, width, height, body)


def small_multiples(ident: ChartId, panels: Sequence[Panel], columns: int = 2,
                    panel_width: float = 230, panel_height: float = 150) -> str:
    """Several small histograms in a grid, each with its title and threshold lines."""
    rows = max(1, math.ceil(len(panels) / columns))
    body = []
    for index, panel in enumerate(panels):
        dx, dy = (index % columns) * panel_width, (index // columns) * panel_height
        box = Box(dx + 36, dy + 28, panel_width - 36 - 12, panel_height - 28 - 30)
        scale = _Scale(panel.axis, box, max((b.total for b in panel.bars), default=0))
        body.append(text(dx + 8, dy + 14, panel.title, size=11.5, colour=INK, weight="600"))
        body.append(_y_axis(scale) + _bars(scale, panel.bars) + _x_axis(scale, compact=True)
                    + _marks(scale, panel.marks, label_y=None))
    return chart(ident, columns * panel_width, rows * panel_height, "".join(body))


def _regions(scale: _Scale, regions: Sequence[Region]) -> str:
    out = []
    box = scale.box
    for region in regions:
        x0, x1 = scale.x(region.x0), scale.x(region.x1)
        if x1 - x0 < 0.5:
            continue
        out.append(tag("rect", {"class": "band", "data-band": region.label, "x": x0, "y": box.top,
                                "width": x1 - x0, "height": box.height, "fill": region.colour,
                                "fill-opacity": 0.09}))
        if x1 - x0 >= len(region.label) * 6.2 + 6:
            out.append(text((x0 + x1) / 2, box.top + 13, region.label, size=10.5, anchor="middle",
                            colour=region.colour, weight="600"))
    return "".join(out)


def _y_axis(scale: _Scale) -> str:
    box, out = scale.box, []
    count = 0.0
    while count <= scale.top_count + 1e-9:
        y = scale.y(count)
        out.append(tag("line", {"x1": box.left, "x2": box.left + box.width, "y1": y, "y2": y,
                                "stroke": GRID, "stroke-width": 1}))
        out.append(text(box.left - 5, y + 3.5, f"{count:,.0f}", size=9.5, anchor="end"))
        count += scale.step
    return "".join(out)


def _bars(scale: _Scale, bars: Sequence[Bar]) -> str:
    out = []
    for bar in bars:
        x0, x1 = scale.x(bar.x0), scale.x(bar.x1)
        gap = 0.8 if x1 - x0 > 4 else 0.0
        base = 0
        for part in bar.parts:
            if part.count <= 0:
                continue
            y_top, y_base = scale.y(base + part.count), scale.y(base)
            out.append(tag("rect", {"class": "bar", "data-status": part.name, "data-count": part.count,
                                    "x": x0 + gap, "y": y_top, "width": max(x1 - x0 - 2 * gap, 0.5),
                                    "height": max(y_base - y_top, 0.6), "fill": part.colour},
                           tag("title", {}, escape(bar.tip))))
            base += part.count
    return "".join(out)


def _x_axis(scale: _Scale, compact: bool) -> str:
    box, axis = scale.box, scale.axis
    out = [tag("line", {"x1": box.left, "x2": box.left + box.width, "y1": box.bottom, "y2": box.bottom,
                        "stroke": "#ced4da", "stroke-width": 1})]
    for at, label in axis.ticks:
        x = scale.x(at)
        out.append(tag("line", {"x1": x, "x2": x, "y1": box.bottom, "y2": box.bottom + 4, "stroke": "#ced4da"}))
        out.append(text(x, box.bottom + 15, label, size=9.5 if compact else 10, anchor="middle"))
    if axis.label and not compact:
        out.append(text(box.left + box.width / 2, box.bottom + 33, axis.label, size=10.5, anchor="middle",
                        colour=INK))
    return "".join(out)


def _marks(scale: _Scale, marks: Sequence[Mark], label_y: float | None) -> str:
    out, last_x, row = [], -1e9, 0
    box = scale.box
    for mark in sorted(marks, key=lambda m: m.at):
        if not scale.axis.lo <= mark.at <= scale.axis.hi:
            continue
        x = scale.x(mark.at)
        out.append(tag("line", {"class": "threshold", "data-value": number(mark.value), "x1": x, "x2": x,
                                "y1": box.top - (4 if label_y is not None else 0), "y2": box.bottom,
                                "stroke": INK, "stroke-width": 1.2, "stroke-dasharray": "4 3"},
                       tag("title", {}, escape(mark.label))))
        if label_y is not None:
            row = row + 1 if x - last_x < len(mark.label) * 5.6 + 4 else 0
            out.append(text(x, label_y - (row % 2) * 11, mark.label, size=9.5, anchor="middle", colour=INK))
            last_x = x
    return "".join(out)


# ---------------------------------------------------------------- horizontal bars


def bar_rows(ident: ChartId, rows: Sequence[Row], width: float = 420, label_width: float = 120,
             note_width: float = 110, row_height: float = 22, normalize: bool = False) -> str:
    """Horizontal bars, one per row; stacked parts; `normalize` makes every row 100 %."""
    bar_width = width - label_width - note_width - 8
    peak = max((sum(p.count for p in r.parts) for r in rows), default=0) or 1
    out = []
    for index, row in enumerate(rows):
        y = 6 + index * row_height
        total = sum(p.count for p in row.parts) or 1
        scale = bar_width / (total if normalize else peak)
        if label_width:
            out.append(text(label_width - 6, y + row_height / 2 + 3, _clip(row.label, label_width),
                            size=11, anchor="end", colour=INK))
        out.append(_row_parts(row, label_width, y + 2, row_height - 6, scale))
        if note_width:
            out.append(text(label_width + bar_width + 6, y + row_height / 2 + 3, row.note, size=10.5))
    height = 12 + len(rows) * row_height
    return chart(ident, width, height, "".join(out))


def _row_parts(row: Row, x: float, y: float, height: float, scale: float) -> str:
    out = []
    for part in row.parts:
        w = part.count * scale
        if part.count > 0:
            tip = f"{row.label}: {part.name} {part.count:,}".strip(": ")
            out.append(tag("rect", {"class": "bar", "data-status": part.name, "data-count": part.count,
                                    "x": x, "y": y, "width": max(w, 0.6), "height": height, "fill": part.colour},
                           tag("title", {}, escape(tip))))
        x += w
    return "".join(out)


def diverging(ident: ChartId, rows: Sequence[tuple[str, float, str, str]], width: float = 560,
              label_width: float = 190, row_height: float = 20) -> str:
    """(label, change, colour, note) rows as bars left or right of a zero line."""
    peak = max((abs(r[1]) for r in rows), default=0) or 1
    room = 38  # for the change written past the end of each bar
    half = (width - label_width - 2 * room) / 2
    zero = label_width + room + half
    out = []
    for index, (label, change, colour, note) in enumerate(rows):
        y = 6 + index * row_height
        w = abs(change) / peak * half
        x = zero - w if change < 0 else zero
        out.append(text(label_width - 6, y + row_height / 2 + 3, _clip(label, label_width), size=11,
                        anchor="end", colour=INK))
        out.append(tag("rect", {"class": "bar", "data-count": f"{change:g}", "x": x, "y": y + 3,
                                "width": max(w, 0.6), "height": row_height - 7, "fill": colour},
                       tag("title", {}, escape(f"{label}: {note}"))))
        note_x = zero + w + 4 if change >= 0 else zero - w - 4
        out.append(text(note_x, y + row_height / 2 + 3, f"{change:+g}", size=10,
                        anchor="start" if change >= 0 else "end", colour=INK))
    height = 12 + len(rows) * row_height
    out.append(tag("line", {"x1": zero, "x2": zero, "y1": 2, "y2": height - 4, "stroke": MUTED}))
    return chart(ident, width, height, "".join(out))


def _clip(label: str, width: float) -> str:
    """Cut a label to what fits in `width` at about 6.3 units per character."""
    room = max(int(width / 6.3), 4)
    return label if len(label) <= room else label[: room - 1] + "…"


# ---------------------------------------------------------------- rates and curves


@dataclass(frozen=True)
class Rate:
    """One bar of a rate chart: `rate` (0..1, None = nothing to measure) with its colour and tip."""

    label: str
    rate: float | None
    colour: str
    note: str = ""
    tip: str = ""
    name: str = ""  # written as data-status (a band) or data-bin


def percent(value: float) -> str:
    """A 0..1 share as a percentage: 0.125 -> 12.5%, 0.05 -> 5%, 0.0064 -> 0.64%."""
    shown = f"{value * 100:.1f}" if value >= 0.01 or value == 0 else f"{value * 100:.2f}"
    return (shown[:-2] if shown.endswith(".0") else shown) + "%"


def _rate_top(peak: float) -> tuple[float, float]:
    """(top of a 0..1 rate axis, tick step) for rates up to `peak`."""
    if peak <= 0:
        return 0.01, 0.0025
    step = nice_step(peak, 4)
    return math.ceil(peak / step - 1e-9) * step or step, step


def rate_rows(ident: ChartId, rows: Sequence[Rate], base: float | None, width: float = 420,
              label_width: float = 80, note_width: float = 120, row_height: float = 26) -> str:
    """Horizontal bars of a rate, one per row (status bands), with a dashed line at the base rate."""
    top, step = _rate_top(max([r.rate or 0 for r in rows] + [base or 0]))
    bar_width = width - label_width - note_width - 8
    plot_top, plot_height = 18.0, len(rows) * row_height
    out = []
    tick = 0.0
    while tick <= top + 1e-12:
        x = label_width + tick / top * bar_width
        out.append(tag("line", {"x1": x, "x2": x, "y1": plot_top, "y2": plot_top + plot_height, "stroke": GRID}))
        out.append(text(x, plot_top + plot_height + 13, percent(tick), size=9.5, anchor="middle"))
        tick += step
    for index, row in enumerate(rows):
        y = plot_top + index * row_height
        out.append(text(label_width - 6, y + row_height / 2 + 4, _clip(row.label, label_width), size=11.5,
                        anchor="end", colour=INK, weight="600"))
        if row.rate is not None:
            out.append(tag("rect", {"class": "bar", "data-status": row.name or row.label, "data-rate": f"{row.rate:.6g}",
                                    "x": label_width, "y": y + 4, "width": max(row.rate / top * bar_width, 0.8),
                                    "height": row_height - 8, "fill": row.colour},
                           tag("title", {}, escape(row.tip or row.note))))
        out.append(text(label_width + bar_width + 6, y + row_height / 2 + 4, row.note, size=10.5, colour=INK))
    if base is not None:
        x = label_width + base / top * bar_width
        out.append(tag("line", {"class": "baseline", "data-value": f"{base:.6g}", "x1": x, "x2": x, "y1": plot_top - 4,
                                "y2": plot_top + plot_height, "stroke": INK, "stroke-width": 1.2,
                                "stroke-dasharray": "4 3"}, tag("title", {}, escape(f"base rate {percent(base)}"))))
        out.append(text(x, plot_top - 7, f"base {percent(base)}", size=9.5, anchor="middle", colour=INK))
    return chart(ident, width, plot_top + plot_height + 20, "".join(out))


def rate_columns(ident: ChartId, columns: Sequence[Rate], base: float | None, axis_label: str,
                 width: float = 420, height: float = 240) -> str:
    """Vertical bars of a rate, one per column (score deciles), with a dashed line at the base rate."""
    box = Box(48, 22, width - 48 - 16, height - 22 - 46)
    top, step = _rate_top(max([c.rate or 0 for c in columns] + [base or 0]))
    out = []

    def y(rate: float) -> float:
        return box.bottom - rate / top * box.height

    tick = 0.0
    while tick <= top + 1e-12:
        out.append(tag("line", {"x1": box.left, "x2": box.left + box.width, "y1": y(tick), "y2": y(tick),
                                "stroke": GRID, "stroke-width": 1}))
        out.append(text(box.left - 5, y(tick) + 3.5, percent(tick), size=9.5, anchor="end"))
        tick += step
    slot = box.width / max(len(columns), 1)
    for index, column in enumerate(columns):
        x = box.left + index * slot
        if column.rate is not None:
            out.append(tag("rect", {"class": "bar", "data-bin": column.name or column.label,
                                    "data-rate": f"{column.rate:.6g}", "x": x + slot * 0.12, "y": y(column.rate),
                                    "width": slot * 0.76, "height": max(box.bottom - y(column.rate), 0.6),
                                    "fill": column.colour}, tag("title", {}, escape(column.tip or column.note))))
        out.append(text(x + slot / 2, box.bottom + 14, column.label, size=9.5, anchor="middle"))
    out.append(tag("line", {"x1": box.left, "x2": box.left + box.width, "y1": box.bottom, "y2": box.bottom,
                            "stroke": "#ced4da", "stroke-width": 1}))
    out.append(text(box.left + box.width / 2, box.bottom + 33, axis_label, size=10.5, anchor="middle", colour=INK))
    if base is not None:
        out.append(tag("line", {"class": "baseline", "data-value": f"{base:.6g}", "x1": box.left,
                                "x2": box.left + box.width, "y1": y(base), "y2": y(base), "stroke": INK,
                                "stroke-width": 1.2, "stroke-dasharray": "4 3"},
                       tag("title", {}, escape(f"base rate {percent(base)}"))))
        out.append(text(box.left + box.width - 2, y(base) - 4, f"base {percent(base)}", size=9.5, anchor="end",
                        colour=INK))
    return chart(ident, width, height, "".join(out))


def roc(ident: ChartId, fpr: Sequence[float], tpr: Sequence[float], colour: str, size: float = 320) -> str:
    """A ROC curve in a unit square: the diagonal of a coin toss, the curve and the area under it."""
    box = Box(46, 12, size - 46 - 14, size - 12 - 44)

    def point(f: float, t: float) -> str:
        return f"{_attr(box.left + f * box.width)} {_attr(box.bottom - t * box.height)}"

    out = []
    for i in range(6):
        v = i / 5
        x, y = box.left + v * box.width, box.bottom - v * box.height
        out.append(tag("line", {"x1": x, "x2": x, "y1": box.top, "y2": box.bottom, "stroke": GRID}))
        out.append(tag("line", {"x1": box.left, "x2": box.left + box.width, "y1": y, "y2": y, "stroke": GRID}))
        out.append(text(x, box.bottom + 14, f"{v:g}", size=9.5, anchor="middle"))
        out.append(text(box.left - 5, y + 3.5, f"{v:g}", size=9.5, anchor="end"))
    out.append(tag("rect", {"x": box.left, "y": box.top, "width": box.width, "height": box.height, "fill": "none",
                            "stroke": "#ced4da"}))
    out.append(tag("line", {"class": "diagonal", "x1": box.left, "y1": box.bottom, "x2": box.left + box.width,
                            "y2": box.top, "stroke": MUTED, "stroke-width": 1, "stroke-dasharray": "4 3"},
                   tag("title", {}, "a coin toss (AUC 0.5)")))
    points = list(zip(fpr, tpr, strict=True))
    if points:
        line = "M " + " L ".join(point(f, t) for f, t in points)
        area = f"{line} L {point(points[-1][0], 0)} L {point(points[0][0], 0)} Z"
        out.append(tag("path", {"class": "area", "d": area, "fill": colour, "fill-opacity": 0.1, "stroke": "none"}))
        out.append(tag("path", {"class": "curve", "d": line, "fill": "none", "stroke": colour, "stroke-width": 2.2,
                                "stroke-linejoin": "round"}, tag("title", {}, escape(ident.title))))
    out.append(text(box.left + box.width / 2, box.bottom + 32, "false positive rate: retained accounts flagged",
                    size=10.5, anchor="middle", colour=INK))
    out.append(tag("text", {"x": 12, "y": box.top + box.height / 2, "font-size": 10.5, "text-anchor": "middle",
                            "fill": INK, "transform": f"rotate(-90 12 {_attr(box.top + box.height / 2)})"},
                   "true positive rate: churners caught"))
    return chart(ident, size, size, "".join(out))
