"""`rescore` and `backtest`: scores as they were at past dates, and whether they predicted what happened."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..backtest.evaluate import BacktestError, BelowFloor, backtest, compare, floors
from ..backtest.history import Rebuilt, load, rebuild, rebuilding, schedule, streamed_rows
from ..backtest.outcomes import EventsLater, encoded, events_of, outcome_records
from ..config.mappings import Mappings, load_mappings
from ..runlock import RunLock
from ..store import Store
from ..times import iso, parse_iso
from .base import Invocation, cli, handled
from .output import out, show

_EVERY = re.compile(r"^\s*(\d+)\s*([dw])\s*$")


def _every(value: str) -> timedelta:
    match = _EVERY.match(value)
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r}: give days or weeks, e.g. 7d or 2w")
    n = int(match.group(1))
    return timedelta(days=n * (7 if match.group(2) == "w" else 1))


def _date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC) if len(value) <= 10 else \
            datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@cli.command()
@click.option("--from", "start", required=True, help="The first date to rebuild (YYYY-MM-DD).")
@click.option("--to", "end", default=None, help="The last date (default: today).")
@click.option("--every", default="7d", show_default=True, help="The interval between snapshots: 7d, 2w ...")
@click.option("--json", "as_json", is_flag=True, help="The series, per date and score, as JSON.")
@click.pass_obj
@handled
def rescore(obj: Invocation, start: str, end: str | None, every: str, as_json: bool) -> None:
    """Rebuild every account's metric values and scores as they were at each date, from the
    timestamped records in the store (only what was known then), and keep them as a series tagged
    with the mappings version. The live scores and their history are never touched."""
    mappings = obj.mappings()
    first, last = _date(start, "--from"), _date(end, "--to") or _now()
    assert first is not None
    step = _every(every)
    if first >= last:
        raise click.BadParameter(f"--from {start} is not before the last date {last.date()}", param_hint="--from")
    dates = schedule(first, last, step)
    with obj.store() as store, RunLock(store), \
            EventsLater(store, mappings, list(mappings.outcomes), reuse=False) as later:  # on the other core
        rebuilt, steps = rebuilding(store, mappings, dates)  # each date written as it is built
        series = store.save_series(mappings.version, iso(first), iso(last), step.days,
                                   streamed_rows(rebuilt, steps), rebuilt.assumptions)
        store.save_events(later.fingerprint, encoded(later.found()))
    summary = _series_summary(rebuilt, mappings)
    if as_json:
        click.echo(json.dumps({"series": series, "mappings_version": mappings.version, **summary}, indent=2))
        return
    out.print(f"rescored {len(rebuilt.ids):,} accounts at {len(dates)} dates, {dates[0].date()} to "
              f"{dates[-1].date()} every {step.days} days (series {series}, mappings {mappings.version})",
              markup=False)
    for name, by_date in summary["scores"].items():
        table = Table(title=f"{name}: accounts per status")
        table.add_column("date")
        statuses = sorted({s for counts in by_date.values() for s in counts["by_status"]})
        for column in ("scored", *statuses):
            table.add_column(column, justify="right")
        for day, counts in by_date.items():
            table.add_row(day, f"{counts['scored']:,}", *(f"{counts['by_status'].get(s, 0):,}" for s in statuses))
        out.print(table)
    for line in rebuilt.assumptions:
        out.print(f"assumption: {line}", markup=False)


def _series_summary(rebuilt: Rebuilt, mappings: Mappings) -> dict[str, Any]:
    scores: dict[str, dict[str, Any]] = {name: {} for name in mappings.scores}
    for at in rebuilt.dates:
        for name, s in rebuilt.scores[at].items():
            scored = s.value == s.value
            labels, counts = (list(x) for x in _unique(s.status[scored]))
            scores[name][at.date().isoformat()] = {"scored": int(scored.sum()),
                                                   "by_status": dict(zip(labels, counts, strict=True))}
    return {"dates": [d.date().isoformat() for d in rebuilt.dates], "accounts": len(rebuilt.ids),
            "assumptions": rebuilt.assumptions, "scores": scores}


def _unique(values: Any) -> tuple[list[str], list[int]]:
    found: Counter[str] = Counter()
    for v, n in Counter(values.tolist()).items():
        found[str(v)] += n
    return sorted(found), [found[k] for k in sorted(found)]


@cli.command("backtest")
@click.option("--score", "score_name", default="health", show_default=True, help="The named score to judge.")
@click.option("--outcome", "outcome_name", default="churn", show_default=True, help="The outcome (outcomes.yaml).")
@click.option("--horizon", default=90, show_default=True, type=click.IntRange(1, 730),
              help="Days after a snapshot within which the outcome counts.")
@click.option("--against", "against", type=click.Path(path_type=Path), default=None,
              help="Another mappings folder: score both on the same history, side by side.")
@click.option("--from", "start", default=None, help="Without a stored series: the first snapshot date "
              "(default: 26 weekly snapshots ending today).")
@click.option("--every", default="7d", show_default=True, help="Without a stored series: the interval.")
@click.option("--min-auc", type=float, default=None, help="Exit 7 when the AUC is below this.")
@click.option("--min-red-lift", type=float, default=None, help="Exit 7 when the worst band's lift is below this.")
@click.option("--json", "as_json", is_flag=True, help="Every measure as JSON.")
@click.pass_obj
@handled
def backtest_command(obj: Invocation, score_name: str, outcome_name: str, horizon: int, against: Path | None,
                     start: str | None, every: str, min_auc: float | None, min_red_lift: float | None,
                     as_json: bool) -> None:
    """Does the score predict the outcome? ROC AUC with its interval, outcome rate and lift per status
    band, calibration, lead time, the metrics that separate, watermelons and false alarms; all from
    the rebuilt history (`rescore`, or rebuilt here in memory). Reads only."""
    mappings = obj.mappings()
    other = load_mappings(against) if against is not None else None
    outcome = mappings.outcomes.get(outcome_name)
    if outcome is None:
        known = ", ".join(mappings.outcomes) or "none: add mappings/outcomes.yaml (docs/backtest.md)"
        raise BacktestError(f"no outcome named '{outcome_name}' in the mappings (outcomes: {known})")
    end = _now()
    renewal = next((o for o in mappings.outcomes.values() if o.good), None)
    with obj.reader() as store, EventsLater(store, mappings, [o.name for o in (outcome, renewal) if o]) as later:
        names = {i: name or key for i, (key, name) in store.live_accounts().items()}
        stored = store.latest_series(mappings.version) if start is None else None
        rebuilt = load(store, mappings, stored) if stored else \
            rebuild(store, mappings, _dates(start, every, end))
        dates = rebuilt.dates
        events, renewals = later.events(outcome, check=True), later.events(renewal)
        assert events is not None
        result = backtest(rebuilt, mappings, score_name, events, horizon, end, names, renewals)
        compared = None
        if other is not None:
            kept = store.latest_series(other.version)
            theirs = load(store, other, kept) if kept and _same_dates(store, other, kept, dates) else \
                rebuild(store, other, dates)
            old = backtest(theirs, other, score_name, events, horizon, end, names, renewals)
            compared = compare(result, old, _band_changes(rebuilt, theirs, score_name))
    failed = floors(result, min_auc, min_red_lift)
    if as_json:
        click.echo(json.dumps({**result, "compare": compared, "floors_failed": failed}, indent=2, default=str))
    else:
        _print(result, compared)
    if failed:
        raise BelowFloor("; ".join(failed))


def demo_backtest(path: Path, mappings: Mappings, snapshots: int = 26) -> None:
    """What `demo` ends with: rescore the demo store weekly and print whether the score predicted churn."""
    outcome = next((o for o in mappings.outcomes.values() if not o.good), None)
    if outcome is None:
        out.print("backtest: the mappings name no churn-like outcome (mappings/outcomes.yaml)", markup=False)
        return
    end = _now()
    dates = schedule(end - (snapshots - 1) * timedelta(days=7), end, timedelta(days=7))
    with Store(path) as store, RunLock(store):
        data = outcome_records(store, mappings)
        rebuilt = rebuild(store, mappings, dates)
        store.save_series(mappings.version, iso(dates[0]), iso(end), 7, rebuilt.rows(), rebuilt.assumptions)
        names = {i: name or key for i, (key, name) in store.live_accounts().items()}
    score = next((n for n, s in mappings.scores.items() if s.definition.kind == "weighted"), next(iter(mappings.scores)))
    renewal = next((o for o in mappings.outcomes.values() if o.good), None)
    try:
        result = backtest(rebuilt, mappings, score, events_of(outcome, data), 90, end, names,
                          events_of(renewal, data) if renewal else None)
    except BacktestError as exc:
        out.print(f"backtest: {exc}", markup=False)
        return
    out.print(f"does the score predict churn? (rescored {len(dates)} weekly snapshots)", markup=False)
    _print(result, None)


def _dates(start: str | None, every: str, end: datetime) -> list[datetime]:
    """Without a stored series: 26 snapshots ending today, or from --from on."""
    step = _every(every)
    first = _date(start, "--from") or end - 25 * step
    return schedule(first, end, step)


def _same_dates(store: Store, mappings: Mappings, series: dict[str, Any], dates: list[datetime]) -> bool:
    return schedule(parse_iso(series["first"]), parse_iso(series["last"]),
                    timedelta(days=series["every_days"])) == dates


def _band_changes(a: Rebuilt, b: Rebuilt, score: str) -> int:
    last = a.dates[-1]
    sa, sb = a.scores[last][score].status, b.scores[last][score].status
    return int(sum(1 for x, y in zip(sa.tolist(), sb.tolist(), strict=True) if x != y))


def _pct(value: float | None) -> str:
    return "N/A" if value is None else f"{100 * value:.1f}%"


def _print(r: dict[str, Any], compared: dict[str, Any] | None) -> None:
    d = r["discrimination"]
    ci = d["auc_ci"]
    out.print(f"{r['score']} vs {r['outcome']} within {r['horizon_days']} days: {r['observations']:,} observations "
              f"({r['accounts']:,} accounts x {len(r['snapshots'])} snapshots), {d['positives']:,} with the outcome "
              f"(base rate {_pct(d['base_rate'])}); mappings {r['mappings_version']}", markup=False)
    one = r["per_account"]
    ci = one["auc_ci"]
    out.print(f"ROC AUC {show(d['auc'])} over every snapshot; one snapshot per account: {show(one['auc'])}"
              + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f}, {one['ci_method']}, {one['positives']:,} of {one['n']:,} "
                 "accounts with the outcome)" if ci else "")
              + f"; PR-AUC {show(d['pr_auc'])} (baseline {show(d['pr_baseline'])})", markup=False)
    if one["thin"] or d["thin"]:
        out.print(f"too thin to judge: {one['thin'] or d['thin']}", markup=False)
    bands = Table(title="outcome rate per status band (worst first)")
    for column in ("band", "accounts", "outcomes", "rate", "lift"):
        bands.add_column(column, justify="right" if column != "band" else "left")
    for row in r["bands"]["rows"]:
        bands.add_row(row["band"], f"{row['n']:,}", f"{row['outcomes']:,}", _pct(row["rate"]), show(row["lift"]))
    out.print(bands)
    b = r["bands"]
    out.print(f"bands monotonic: {show(b['monotonic'])}; {b['worst']} precision {_pct(b['worst_precision'])}, "
              f"recall {_pct(b['worst_recall'])}", markup=False)
    for model, m in r["by_model"].items():
        out.print(f"  model {model}: AUC {show(m['discrimination']['auc'])}, "
                  f"{m['discrimination']['positives']:,} outcomes of {m['discrimination']['n']:,}", markup=False)
    if "lead_times" in r:
        lt = r["lead_times"]
        shares = ", ".join(f"{h['days']} d {_pct(h['share'])}" for h in lt["horizons"])
        out.print(f"churners not in the best band before the event: {shares}; median lead time "
                  f"{show(lt['median_lead_days'])} days", markup=False)
    metrics = Table(title="what separates the outcome (sub-scores, then metrics)")
    for column in ("input", "AUC", "direction", "coverage"):
        metrics.add_column(column)
    for s in [*r["sub_scores"], *r["metrics"][:12]]:
        metrics.add_row(s["name"], show(s["strength"]), s["direction"] or "", _pct(s["coverage"]))
    out.print(metrics)
    if "watermelons" in r:
        w = r["watermelons"]
        out.print(f"watermelons (best band {w['days_before']} days before the event): {w['count']:,} of "
                  f"{w['churners_judged']:,} churners", markup=False)
        for acct in w["accounts"][:10]:
            known = ", ".join(f"{g} {v:g}" for g, v in acct["sub_scores"].items() if v is not None)
            blind = ", ".join(g for g, v in acct["sub_scores"].items() if v is None)
            seen = f"drivers: {acct['drivers']}" if acct["drivers"] else f"sub-scores: {known or '-'}"
            out.print(f"  {acct['account']}: {acct['status']} {acct['score']:g} on {acct['snapshot']}, then "
                      f"{acct['event']} on {acct['event_date']}; {seen}" + (f"; no data: {blind}" if blind else ""),
                      markup=False)
        f = r["false_alarms"]
        out.print(f"false alarms ({f['band']} that " + ("renewed" if f["renewal_outcome"] else "did not churn")
                  + f" within the horizon): {f['count']:,}", markup=False)
    for line in r["assumptions"]:
        out.print(f"assumption: {line}", markup=False)
    if compared:
        table = Table(title="side by side on the same history")
        for column in ("", "mappings", "AUC", "PR-AUC", "worst band lift", "monotonic"):
            table.add_column(column)
        for label in ("new", "against"):
            c = compared[label]
            table.add_row(label, c["mappings_version"], show(c["auc"]), show(c["pr_auc"]), show(c["worst_band_lift"]),
                          show(c["monotonic"]))
        out.print(table)
        out.print(f"accounts in another band at the last snapshot: {compared['accounts_changing_band']:,}", markup=False)
