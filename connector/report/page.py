"""The report's HTML page: a header of facts, one section per score (and, for weighted scores,
whether it predicts churn), matching, runs.

Every text that comes from the store or the mappings goes through `esc`
(html.escape). The page carries its own small stylesheet and loads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from ..config.models import ScoreDef
from . import charts
from .contents import Report, ScoreView
from .metrics import MetricView, SegmentMetrics
from .operations import Header, MatchIssues, RunRow
from .palette import NA, YELLOW
from .palette import NO_VERDICT as NO_VERDICT_COLOUR
from .prediction import NO_OUTCOME, Prediction
from .scores import Mover, Movers, Segment, SegmentSubScores
from .svg import number, percent

STYLE = """
:root { --ink:#212529; --muted:#6c757d; --line:#dee2e6; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink);
       background:#f1f3f5; }
header.top { background:#1f2a44; color:#fff; padding:22px 36px 18px; }
header.top h1 { margin:0 0 10px; font-size:22px; font-weight:650; letter-spacing:.01em; }
dl.facts { display:flex; flex-wrap:wrap; gap:8px 34px; margin:0; }
dl.facts div { min-width:120px; }
dl.facts dt { color:#a5b4d0; font-size:11.5px; text-transform:uppercase; letter-spacing:.05em; }
dl.facts dd { margin:0; font-size:14.5px; font-weight:600; }
nav.toc { margin-top:14px; font-size:13px; }
nav.toc a { color:#dbe4ff; margin-right:16px; text-decoration:none; }
main { max-width:1320px; margin:0 auto; padding:10px 36px 48px; }
section.block { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 24px 22px;
                margin:20px 0; }
h2 { font-size:19px; margin:0 0 4px; }
h2 code, h5 code { font-size:12px; color:var(--muted); font-weight:400; margin-left:6px; }
h3 { font-size:15px; margin:26px 0 10px; padding-bottom:5px; border-bottom:1px solid var(--line); }
h4 { font-size:12.5px; margin:18px 0 8px; color:#495057; text-transform:uppercase; letter-spacing:.05em; }
h5 { font-size:13.5px; margin:0 0 2px; }
p { margin:4px 0; }
.note { color:var(--muted); font-size:12.5px; }
.warn { background:#fff4e6; border:1px solid #ffd8a8; padding:8px 12px; border-radius:6px; margin:12px 0; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(380px, 1fr)); gap:14px; }
.card { border:1px solid #e3e7eb; border-radius:6px; padding:10px 12px 8px; background:#fff; }
.card .sub { color:var(--muted); font-size:12px; margin:0 0 6px; }
.split { display:grid; grid-template-columns:minmax(0, 1.15fr) minmax(0, 1fr); gap:20px; align-items:start; }
svg.chart { display:block; max-width:100%; height:auto; }
.card svg.chart, .split svg.chart { width:100%; }
table { border-collapse:collapse; font-size:13px; width:100%; }
th, td { padding:4px 8px; border-bottom:1px solid #edf0f2; text-align:left; vertical-align:middle; }
th { background:#f8f9fa; font-weight:600; color:#495057; white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.meter svg.chart { display:inline-block; vertical-align:middle; }
.legend { display:flex; flex-wrap:wrap; gap:4px 18px; font-size:12.5px; color:#495057; margin:8px 0 4px; }
.swatch { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
.dash { display:inline-block; width:18px; border-top:2px dashed var(--ink); margin-right:5px; vertical-align:3px; }
.pill { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; color:#fff; line-height:18px; }
.bands { font-size:12px; color:#495057; margin:4px 0 0; }
.bands span { white-space:nowrap; margin-right:12px; }
.twocol { display:grid; grid-template-columns:1fr 1fr; gap:20px; }
ul.assumptions { margin:4px 0; padding-left:20px; font-size:12.5px; color:#495057; }
tr.thin td { color:var(--muted); }
td code { font-size:11.5px; color:var(--muted); }
"""


def esc(value: object) -> str:
    return escape("" if value is None else str(value))


def render(report: Report) -> str:
    """The whole page."""
    body = "".join([
        _header(report.header, report),
        "<main>",
        _version_warning(report.header),
        *(_score_section(view) + _prediction_section(view) for view in report.scores),
        _issues_section(report.issues),
        _runs_section(report.runs),
        "</main>",
    ])
    title = f"healthsync report — {report.header.store_name}"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# ---------------------------------------------------------------- header


def _header(header: Header, report: Report) -> str:
    last = header.last_run
    last_text = "none yet" if last is None else (
        f"#{last.id} {last.command}: {last.status}" + ("" if last.exit_code is None else f" (exit {last.exit_code})"))
    facts = [("Generated", header.generated_at), ("Store", header.store_name),
             ("Mappings version", header.mappings_version), ("Accounts", f"{header.accounts:,}"),
             ("Last run", last_text)]
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
    links = [link for v in report.scores for link in [(f"score-{v.name}", v.label)]
             + ([(f"predict-{v.name}", f"{v.label}: predicts churn?")] if v.prediction else [])]
    links += [("matching", "Matching"), ("runs", "Runs")]
    toc = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in links)
    return (f'<header class="top"><h1>healthsync report</h1><dl class="facts">{items}</dl>'
            f'<nav class="toc">{toc}</nav></header>')


def _version_warning(header: Header) -> str:
    other = {v: n for v, n in header.score_versions.items() if v != header.mappings_version}
    if not other:
        return ""
    listed = ", ".join(f"{v} ({n:,} rows)" for v, n in other.items())
    return (f'<p class="warn">Some stored scores were computed with other mappings: {esc(listed)}. '
            f"Thresholds shown are those of the loaded mappings ({esc(header.mappings_version)}); "
            f"run <code>healthsync score</code> to bring the scores up to date.</p>")


# ---------------------------------------------------------------- one score


NO_SCORES = ('<p class="note">No scores in the store yet: <code>healthsync run</code> or '
             "<code>healthsync score</code> computes them.</p>")
METRICS_NOTE = ('<p class="note">Values as the score used them (per-seat metrics divided by seats, age limits '
                "and carry-forward applied), with the segment’s scheme thresholds; bar colours are the status each "
                "value’s points would have. N/A: the score had no value for the account, or the metric does not "
                "apply to it.</p>")


def _score_section(view: ScoreView) -> str:
    body = _score_charts(view) if view.segments else NO_SCORES
    return f'<section class="block" id="score-{esc(view.name)}">{_score_head(view)}{body}</section>'


def _score_head(view: ScoreView) -> str:
    scored = sum(s.scored for s in view.segments)
    return (f"<h2>{esc(view.label)}<code>{esc(view.name)}</code></h2>"
            f'<p class="note">{scored:,} accounts scored in {len(view.segments)} segment(s)'
            f"{_unscored_text(view.unscored)}</p>{_status_legend(view)}")


def _score_charts(view: ScoreView) -> str:
    parts = [
        "<h3>Status by segment</h3>",
        f'<div class="split">{_status_table(view)}<div>{charts.status_counts(view)}</div></div>',
        "<h3>Score distribution by segment</h3>",
        '<div class="grid">' + "".join(_histogram_card(view, s) for s in view.segments) + "</div>",
    ]
    if view.sub_scores:
        cards = "".join(_sub_score_card(view, s) for s in view.sub_scores)
        parts += ["<h3>Sub-scores by segment</h3>", f'<div class="grid">{cards}</div>']
    if view.metrics:
        parts += ["<h3>Metrics by segment</h3>", METRICS_NOTE, *(_segment_metrics(view, s) for s in view.metrics)]
    parts.append(_movers(view, view.movers))
    return "".join(parts)


def _unscored_text(unscored: dict[str, int]) -> str:
    if not unscored:
        return "."
    reasons = "; ".join(f"{reason}: {n:,}" for reason, n in unscored.items())
    return f"; {sum(unscored.values()):,} without a value ({esc(reasons)})."


def _status_legend(view: ScoreView) -> str:
    items = [f'<span><i class="swatch" style="background:{c}"></i>{esc(text)}</span>'
             for text, c in _band_texts(view.score.definition, view.colours)]
    if _has_no_verdict(view):
        items.append(f'<span><i class="swatch" style="background:{NO_VERDICT_COLOUR}"></i>'
                     f'{NO_VERDICT} ({esc(_no_verdict_title(view))})</span>')
    items.append(f'<span><i class="swatch" style="background:{NA}"></i>N/A (no value)</span>')
    items.append('<span><i class="dash"></i>status threshold</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def _band_texts(definition: ScoreDef, colours: dict[str, str]) -> list[tuple[str, str]]:
    out, previous = [], None
    for band in definition.status:
        if band.below is not None and previous is None:
            text = f"{band.name}: below {number(band.below)}"
        elif band.below is not None:
            text = f"{band.name}: {number(previous or 0)} to under {number(band.below)}"
        else:
            text = f"{band.name}: {number(previous or 0)} and up"
        out.append((text, colours[band.name]))
        previous = band.below
    return out


def _status_table(view: ScoreView) -> str:
    statuses = list(view.segments[0].status_counts) if view.segments else [b.name for b in view.score.definition.status]
    head = ("<tr><th>Segment</th>" + "".join(f'<th class="num">{_pill(s, view.colours.get(s, NA))}</th>' for s in statuses)
            + (f'<th class="num" title="{esc(_no_verdict_title(view))}">{NO_VERDICT}</th>' if _has_no_verdict(view) else "")
            + '<th class="num">N/A</th><th class="num">Total</th><th class="num">Mean</th><th class="num">Coverage</th></tr>')
    rows = []
    for s in view.segments:
        total = s.total
        cells = "".join(_count_cell(s.status_counts.get(name, 0), total, name) for name in statuses)
        if _has_no_verdict(view):
            cells += _count_cell(s.no_verdict, total, NO_VERDICT)
        mean = "–" if s.mean is None else f"{s.mean:.1f}"
        coverage = "–" if s.coverage is None else f"{s.coverage:.0f}%"
        rows.append(f'<tr data-segment="{esc(s.model)}"><td>{esc(s.label)}</td>{cells}{_count_cell(s.not_scored, total, "N/A")}'
                    f'<td class="num">{total:,}</td><td class="num">{mean}</td><td class="num">{coverage}</td></tr>')
    return f'<table class="status-counts" data-score="{esc(view.name)}">{head}{"".join(rows)}</table>'


NO_VERDICT = "No verdict"  # accounts below the score's min_coverage: coverage too low for a status


def _has_no_verdict(view: ScoreView) -> bool:
    return view.score.definition.min_coverage is not None or any(s.no_verdict for s in view.segments)


def _no_verdict_title(view: ScoreView) -> str:
    minimum = view.score.definition.min_coverage
    below = f"below the score's minimum of {minimum:g}%" if minimum is not None else "below the score's minimum"
    return f"no number, status or grade: coverage {below}"


def _count_cell(count: int, total: int, status: str) -> str:
    share = f' <span class="note">{count / total:.0%}</span>' if total else ""
    return f'<td class="num" data-status="{esc(status)}" data-count="{count}">{count:,}{share}</td>'


def _pill(status: str, colour: str) -> str:
    ink = "#212529" if colour == YELLOW else "#fff"
    return f'<span class="pill" style="background:{colour};color:{ink}">{esc(status)}</span>'


def _histogram_card(view: ScoreView, segment: Segment) -> str:
    stats = [f"{segment.scored:,} scored"]
    if segment.mean is not None:
        stats.append(f"mean {segment.mean:.1f} · median {number(segment.median or 0)}")
    if segment.coverage is not None:
        stats.append(f"coverage {segment.coverage:.0f}%")
    if segment.no_verdict:
        stats.append(f"{segment.no_verdict:,} no verdict (coverage too low)")
    if segment.not_scored:
        stats.append(f"{segment.not_scored:,} N/A")
    return _card(segment.label, " · ".join(stats), charts.score_histogram(view, segment))


def _sub_score_card(view: ScoreView, segment: SegmentSubScores) -> str:
    accounts = int(segment.groups[0].counts.sum()) + segment.groups[0].not_available if segment.groups else 0
    subtitle = f"{accounts:,} accounts · {len(segment.groups)} sub-scores, 10-point bars"
    return _card(segment.label, subtitle, charts.sub_scores(view, segment))


def _card(title: str, subtitle: str, chart: str, extra: str = "", code: str | None = None) -> str:
    code_html = f"<code>{esc(code)}</code>" if code else ""
    return (f'<div class="card"><h5>{esc(title)}{code_html}</h5><p class="sub">{esc(subtitle)}</p>'
            f"{chart}{extra}</div>")


# ---------------------------------------------------------------- metrics


def _segment_metrics(view: ScoreView, segment: SegmentMetrics) -> str:
    cards, empty = [], []
    for metric in segment.metrics:
        chart = charts.metric_chart(view, metric)
        if chart is None:
            empty.append(metric.label)
        else:
            cards.append(_card(metric.label, _metric_subtitle(metric), chart, _metric_notes(metric), metric.metric))
    missing = f'<p class="note">No values at all: {esc(", ".join(empty))}.</p>' if empty else ""
    return (f'<h4 id="metrics-{esc(view.name)}-{esc(segment.model)}">{esc(segment.label)} · {segment.accounts:,} accounts</h4>'
            f"{_na_table(view, segment)}{missing}<div class=\"grid\" style=\"margin-top:12px\">{''.join(cards)}</div>")


def _metric_subtitle(metric: MetricView) -> str:
    text = f"{metric.group} · {metric.scheme}"
    return text + (f" · only when {metric.applies_when}" if metric.applies_when else "")


def _metric_notes(metric: MetricView) -> str:
    notes = []
    if metric.bands:
        shown = sum(b.count for b in metric.bands) or 1
        items = "".join(
            f'<span><i class="swatch" style="background:{b.colour}"></i>{esc(b.label)} → {esc(b.points)} pts: '
            f"{b.count:,} ({b.count / shown:.0%})</span>" for b in metric.bands)
        notes.append(f'<p class="bands">{items}</p>')
    drawn = metric.histogram
    if drawn is not None and (drawn.below or drawn.above):
        edge = []
        if drawn.below:
            edge.append(f"{drawn.below:,} under {number(float(drawn.edges[0]))} in the first bar")
        if drawn.above:
            edge.append(f"{drawn.above:,} over {number(float(drawn.edges[-1]))} in the last bar")
        notes.append(f'<p class="note">Outliers: {esc("; ".join(edge))}.</p>')
    notes.append(f'<p class="note">N/A: {metric.not_available:,} of {metric.accounts:,} ({metric.na_share:.1%})'
                 + (f" — mostly “{esc(metric.top_reason)}”" if metric.top_reason else "") + "</p>")
    return "".join(notes)


def _na_table(view: ScoreView, segment: SegmentMetrics) -> str:
    head = ('<tr><th>Metric</th><th>Group</th><th class="num">N/A</th><th class="num">N/A share</th><th></th>'
            "<th>Most common reason</th></tr>")
    rows = "".join(
        f'<tr data-metric="{esc(m.metric)}" data-na="{m.not_available}" data-accounts="{m.accounts}">'
        f"<td>{esc(m.label)}</td><td>{esc(m.group)}</td><td class=\"num\">{m.not_available:,}</td>"
        f'<td class="num">{m.na_share:.1%}</td><td class="meter">{charts.na_meter(view, m)}</td>'
        f"<td>{esc(m.top_reason or '')}</td></tr>"
        for m in segment.metrics
    )
    return (f'<table class="na-rates" data-score="{esc(view.name)}" data-segment="{esc(segment.model)}">'
            f"{head}{rows}</table>")


# ---------------------------------------------------------------- movers


def _movers(view: ScoreView, moved: Movers) -> str:
    title = f"<h3>Biggest movers since {esc(moved.since[:10])} ({moved.days} days)</h3>"
    summary = (f'<p class="note">{moved.compared:,} accounts had a value then and now; {moved.changed:,} changed. '
               "From: the value held at the start of the window (score history); to: the current value.</p>")
    if not moved.down and not moved.up:
        return title + summary
    tables = (f'<div class="twocol"><div><h4>Down</h4>{_mover_table(view, moved.down, "down")}</div>'
              f'<div><h4>Up</h4>{_mover_table(view, moved.up, "up")}</div></div>')
    return title + summary + charts.movers(view, moved) + tables


def _mover_table(view: ScoreView, movers: Sequence[Mover], direction: str) -> str:
    if not movers:
        return '<p class="note">none</p>'
    labels = {s.model: s.label for s in view.segments}
    head = ('<tr><th>Account</th><th>Segment</th><th class="num">From</th><th class="num">To</th>'
            '<th class="num">Change</th><th>Status</th></tr>')
    rows = "".join(
        f'<tr data-account="{m.account_id}"><td>{esc(m.name or m.key)}</td><td>{esc(labels.get(m.model or "", m.model))}</td>'
        f'<td class="num">{number(m.before)}</td><td class="num">{number(m.after)}</td>'
        f'<td class="num">{m.change:+g}</td><td>{_status_change(view, m)}</td></tr>'
        for m in movers
    )
    return f'<table class="movers" data-score="{esc(view.name)}" data-direction="{direction}">{head}{rows}</table>'


def _status_change(view: ScoreView, mover: Mover) -> str:
    before = _pill(mover.status_before or "N/A", view.colours.get(mover.status_before or "", NA))
    if mover.status_before == mover.status_after:
        return before
    return before + " → " + _pill(mover.status_after or "N/A", view.colours.get(mover.status_after or "", NA))


# ---------------------------------------------------------------- does the score predict churn?


PREDICT_TITLE = "Does the score predict churn?"
TOP_WATERMELONS = 10


def _prediction_section(view: ScoreView) -> str:
    """The backtest of a weighted score on the stored series; nothing for trigger indexes."""
    found = view.prediction
    if found is None:
        return ""
    if found.missing:
        body = _prediction_how_to(view, found)
    elif found.error or found.result is None:
        body = (f'<p class="warn backtest-error">The backtest of {esc(view.label)} against the outcome '
                f"<code>{esc(found.outcome)}</code> could not judge: {esc(found.error)}</p>")
    else:
        body = _prediction_body(view, found, found.result)
    return (f'<section class="block prediction" id="predict-{esc(view.name)}" data-score="{esc(view.name)}">'
            f"<h2>{PREDICT_TITLE}<code>{esc(view.name)}</code></h2>{body}</section>")


def _prediction_how_to(view: ScoreView, found: Prediction) -> str:
    if found.missing == NO_OUTCOME:
        need = ("name the churn as an outcome with <code>good: false</code> in <code>mappings/outcomes.yaml</code> "
                "and rebuild past scores with <code>healthsync rescore --from DATE</code>")
    else:
        need = (f"rebuild past scores with <code>healthsync rescore --from DATE</code> (at least {found.horizon} days "
                f"back): the store holds no series for the loaded mappings, and the outcome "
                f"<code>{esc(found.outcome)}</code> of <code>mappings/outcomes.yaml</code> is what it is judged against")
    return (f'<p class="note how-to">To see whether {esc(view.label)} predicts churn, {need}; this section then '
            f"shows the backtest of the stored series (docs/backtest.md).</p>")


def _prediction_body(view: ScoreView, found: Prediction, r: dict) -> str:  # type: ignore[type-arg]
    d, b = r["discrimination"], r["bands"]
    snapshots = r["snapshots"]
    span = f"{snapshots[0]} to {snapshots[-1]}" if snapshots else "no snapshot"
    parts = [
        f'<p class="note">{esc(view.label)} at {len(snapshots)} snapshots ({esc(span)}) against '
        f"“{esc(r['outcome_label'] or r['outcome'])}” (outcome <code>{esc(r['outcome'])}</code>) within "
        f"{r['horizon_days']} days: {r['observations']:,} observations of {r['accounts']:,} accounts, "
        f"{d['positives']:,} with the outcome (base rate {_pct(d['base_rate'])}). From the stored series of mappings "
        f"{esc(r['mappings_version'])} (<code>healthsync rescore</code>); <code>healthsync backtest</code> prints "
        "the same measures.</p>",
    ]
    if d["thin"]:
        parts.append(f'<p class="warn thin">Too thin to judge: {esc(d["thin"])}</p>')
    monotonic = {True: "yes", False: "no", None: "n/a"}[b["monotonic"]]
    cards = [
        _card("ROC curve", _auc_caption(d), charts.roc_curve(view, found),
              '<p class="note">The chance that an account with the outcome scored lower than one without: 0.5 is a '
              "coin toss (the dashed diagonal), 0.7 useful, 0.8 strong.</p>"),
        _card("Outcome rate per status band", f"worst band first · dashed line: the base rate · monotonic: {monotonic}",
              charts.band_rates(view, found), _band_table(view, b)),
        _card("Calibration by decile", "the outcome rate in each tenth of the observations; it should fall as the "
              "score rises", charts.calibration(view, found)),
    ]
    parts.append(f'<div class="grid">{"".join(cards)}</div>')
    parts.append(_lead_times(r, b))
    parts.append(_by_model(view, r["by_model"]))
    parts.append(_separation(view, found, r))
    if "watermelons" in r:
        parts.append(_watermelons(view, r["watermelons"], b))
        f = r["false_alarms"]
        what = (f"renewed (<code>{esc(f['renewal_outcome'])}</code>)" if f["renewal_outcome"]
                else "did not churn")
        parts.append(f'<p class="false-alarms" data-count="{f["count"]}"><b>False alarms:</b> {f["count"]:,} '
                     f"account(s) {esc(f['band'])} at a snapshot that {what} within {r['horizon_days']} days.</p>")
    parts.append(_assumptions(r["assumptions"]))
    return "".join(parts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else percent(value)


def _auc_caption(d: dict) -> str:  # type: ignore[type-arg]
    if d["auc"] is None:
        return "AUC n/a: the observations hold only one class"
    ci = d["auc_ci"]
    interval = f" (95% CI {ci[0]:.3f}–{ci[1]:.3f}, {d['ci_method']})" if ci else " (no interval: too few of a class)"
    pr = "" if d["pr_auc"] is None else f" · PR-AUC {d['pr_auc']:.3f} (baseline {d['pr_baseline']:.3f})"
    return f"AUC {d['auc']:.3f}{interval}{pr}"


def _band_table(view: ScoreView, b: dict) -> str:  # type: ignore[type-arg]
    head = ('<tr><th>Band</th><th class="num">Observations</th><th class="num">Outcomes</th><th class="num">Rate</th>'
            '<th class="num">Lift</th></tr>')
    rows = "".join(
        f'<tr data-band="{esc(row["band"])}" data-n="{row["n"]}" data-outcomes="{row["outcomes"]}">'
        f"<td>{_pill(row['band'], view.colours.get(row['band'], NA))}</td><td class=\"num\">{row['n']:,}</td>"
        f'<td class="num">{row["outcomes"]:,}</td><td class="num">{_pct(row["rate"])}</td>'
        f'<td class="num">{"–" if row["lift"] is None else format(row["lift"], ".2f")}</td></tr>'
        for row in b["rows"])
    precision = (f'<p class="note">{esc(b["worst"])}: precision {_pct(b["worst_precision"])} (of the {esc(b["worst"])}, '
                 f"the share with the outcome), recall {_pct(b['worst_recall'])} (of those with the outcome, the share "
                 f"{esc(b['worst'])}).</p>")
    return (f'<table class="band-rates" data-score="{esc(view.name)}" style="margin-top:8px">{head}{rows}</table>'
            f"{precision}")


def _lead_times(r: dict, b: dict) -> str:  # type: ignore[type-arg]
    lt = r.get("lead_times")
    if not lt or not lt["horizons"]:
        return ""
    best = b["rows"][-1]["band"] if b["rows"] else "the best band"
    shares = ", ".join(f"{h['days']} days {_pct(h['share'])}" for h in lt["horizons"])
    median = "n/a" if lt["median_lead_days"] is None else f"{lt['median_lead_days']:g} days"
    return (f'<p class="note lead-times">Churners not {esc(best)} before the event: {esc(shares)}; median lead time '
            f"{esc(median)}.</p>")


def _by_model(view: ScoreView, by_model: dict) -> str:  # type: ignore[type-arg]
    if len(by_model) < 2:
        return ""
    labels = {m.name: m.label for m in view.score.models}
    rows = []
    for model, m in by_model.items():
        d = m["discrimination"]
        ci = d["auc_ci"]
        rows.append([labels.get(model, model), "n/a" if d["auc"] is None else f"{d['auc']:.3f}",
                     f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–", f"{d['n']:,}", f"{d['positives']:,}"])
    return "<h4>Per segment</h4>" + _table(["Segment", "AUC", "95% CI", "Observations", "Outcomes"], rows,
                                           numeric={1, 2, 3, 4}, cls="by-model")


SEPARATION_NOTE = ('<p class="note">Each sub-score and metric on its own, over every observation: its AUC in its risky '
                   "direction (0.5 separates nothing, 1 perfectly), which way is riskier, the share of observations "
                   "with a value and the 95% interval (DeLong) in the same direction. Trust those whose interval "
                   "excludes 0.5; grey rows are too thin to judge.</p>")


def _separation(view: ScoreView, found: Prediction, r: dict) -> str:  # type: ignore[type-arg]
    listed = [("sub-score", s, (found.group_labels or {}).get(s["name"])) for s in r["sub_scores"]]
    listed += [("metric", s, (found.metric_labels or {}).get(s["name"])) for s in r["metrics"]]
    if not listed:
        return ""
    head = ('<tr><th>Kind</th><th>Name</th><th class="num">AUC (risky direction)</th><th>Direction</th>'
            '<th class="num">Coverage</th><th class="num">95% CI</th></tr>')
    rows = []
    for kind, s, label in listed:
        ci = s["auc_ci"]
        if ci and s["auc"] is not None and s["auc"] < 0.5:
            ci = (1 - ci[1], 1 - ci[0])
        name = esc(label or s["name"]) + (f' <code>{esc(s["name"])}</code>' if label else "")
        thin = ' class="thin"' if s["thin"] else ""
        title = f' title="{esc(s["thin"])}"' if s["thin"] else ""
        rows.append(f'<tr{thin}{title} data-kind="{kind}" data-name="{esc(s["name"])}"><td>{kind}</td><td>{name}</td>'
                    f'<td class="num">{"–" if s["strength"] is None else format(s["strength"], ".3f")}</td>'
                    f"<td>{esc(s['direction'] or '')}</td><td class=\"num\">{_pct(s['coverage'])}</td>"
                    f'<td class="num">{f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"}</td></tr>')
    return (f"<h3>What separates churners</h3>{SEPARATION_NOTE}"
            f'<table class="separation" data-score="{esc(view.name)}">{head}{"".join(rows)}</table>')


def _watermelons(view: ScoreView, w: dict, b: dict) -> str:  # type: ignore[type-arg]
    best = b["rows"][-1]["band"] if b["rows"] else "the best band"
    shown = w["accounts"][:TOP_WATERMELONS]
    first = f"; the first {len(shown)} by score" if w["count"] > len(shown) else ""
    parts = ["<h3>Watermelons</h3>",
             f'<p class="note">{w["count"]:,} of {w["churners_judged"]:,} churners were {esc(best)} about '
             f"{w['days_before']} days before the event: what the score missed, with the drivers it saw{first}.</p>"]
    if shown:
        head = ('<tr><th>Account</th><th>Snapshot</th><th>Status</th><th class="num">Score</th>'
                "<th>What happened when</th><th>Drivers</th></tr>")
        rows = "".join(
            f'<tr data-account="{a["account_id"]}"><td>{esc(a["account"])}</td><td>{esc(a["snapshot"])}</td>'
            f"<td>{_pill(a['status'], view.colours.get(a['status'], NA))}</td>"
            f'<td class="num">{number(a["score"])}</td><td>{esc(a["event"])} on {esc(a["event_date"])}</td>'
            f"<td>{esc(a['drivers'] or '–')}</td></tr>"
            for a in shown)
        parts.append(f'<table class="watermelons" data-score="{esc(view.name)}">{head}{rows}</table>')
    return "".join(parts)


def _assumptions(assumptions: Sequence[str]) -> str:
    items = "".join(f"<li>{esc(a)}</li>" for a in assumptions)
    return ('<h4>Assumptions</h4><ul class="assumptions">'
            "<li>At each snapshot only what was known then is used; links between records and accounts are "
            f"today's and overrides are not replayed (docs/backtest.md).</li>{items}</ul>")


# ---------------------------------------------------------------- matching and runs


def _issues_section(issues: MatchIssues) -> str:
    parts = ['<section class="block" id="matching"><h2>Unmatched and conflicting records</h2>',
             f'<p class="note">{issues.total:,} record(s) matched no account or more than one '
             "(<code>healthsync matches</code> lists them all).</p>"]
    if issues.counts:
        parts.append(_table(["System", "Object", "Kind", "Records"],
                            [[s, o, k, f"{n:,}"] for s, o, k, n in issues.counts], numeric={3}, cls="issue-counts"))
    if issues.first:
        parts.append(f"<h4>First {len(issues.first)}</h4>")
        rows = [[r["kind"], r["system"], r["object"], r["external_id"], r["detail"], ", ".join(r["candidates"])]
                for r in issues.first]
        parts.append(_table(["Kind", "System", "Object", "External id", "Why", "Candidates"], rows, cls="issues"))
    parts.append("</section>")
    return "".join(parts)


def _runs_section(runs: Sequence[RunRow]) -> str:
    rows = [[str(r.id), r.command, r.started_at, r.status, "" if r.exit_code is None else str(r.exit_code),
             _duration(r.seconds), _per_system(r.written), _per_system(r.failed), (r.error or "")[:160]]
            for r in runs]
    table = _table(["Id", "Command", "Started", "Status", "Exit", "Duration", "Written", "Failed", "Error"],
                   rows, numeric={0, 4, 5}, cls="runs") if rows else '<p class="note">No runs recorded.</p>'
    return (f'<section class="block" id="runs"><h2>Last runs</h2>'
            f'<p class="note">The {len(runs)} most recent (<code>healthsync runs</code>).</p>{table}</section>')


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int] | None = None, cls: str = "") -> str:
    numeric = numeric or set()

    def cell(tag: str, i: int, value: str) -> str:
        cls = ' class="num"' if i in numeric else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    header = "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>"
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}">{header}{body}</table>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _per_system(counts: dict[str, int]) -> str:
    return ", ".join(f"{system} {n:,}" for system, n in counts.items())
