"""Usage metrics: from the rows of every usage source matched to an account.

A row is one period's activity (a day, a week) ending at its timestamp. The conventional columns
the catalogue reads, when a source declares them:

* `active_users`: people active in the period;
* `key_events`: uses of the features tied to outcomes (the admin picks which, in the query);
* `events`: all activity.

An account with rows, none in the window, has 0 activity there (a real zero); an account whose
key no usage row names is N/A with the plugin's `unmatched` reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..base import NA, AccountData, CatalogueMetric, Value, first_after
from ..days import days_between, midnight_after, next_midnight, window_start

SYSTEM = "usage"
Inputs = dict[str, Value]


def _rows(acct: AccountData, now: datetime) -> list[tuple[float, dict[str, Any]]]:
    """(epoch seconds, row) of the account's rows up to `now`, from its series (one per entry)."""
    stamp = now.timestamp()
    found = []
    for series in acct.of(SYSTEM, "series"):
        values = series.get("values") or {}
        for i, at in enumerate(series.get("at") or []):
            if at <= stamp:
                found.append((at, {c: v[i] for c, v in values.items()}))
    return found


def _window(acct: AccountData, now: datetime, column: str, days: int, ending_days_ago: int = 0) -> Value:
    """The values of `column` in the rows of the `days` calendar days ending `ending_days_ago` days
    before today (ending now when 0): a row's period ends at its timestamp, so a row stamped at a
    midnight belongs to the day before it."""
    rows = _rows(acct, now)
    if not rows:
        return NA, "no usage rows for this account yet"
    if not any(column in r for _at, r in rows):
        return NA, f"no usage source has a {column} column"
    end = window_start(now, ending_days_ago) if ending_days_ago else now.timestamp()
    start = window_start(now, ending_days_ago + days)
    return [r[column] for at, r in rows if start < at <= end and isinstance(r.get(column), float)], None


def _active_users(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    values, reason = _window(acct, now, "active_users", 30)
    return (NA, reason) if reason else (max(values, default=0.0), None)


def _sum(column: str, days: int = 30) -> Any:
    def compute(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
        values, reason = _window(acct, now, column, days)
        return (NA, reason) if reason else (float(sum(values)), None)
    return compute


def _change(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    """Events per row (per period) now against 90 days ago: the mean, so that a window holding one
    row more than the other (rows every 14 days in 30-day windows) does not read as growth."""
    recent, reason = _window(acct, now, "events", 30)
    if reason:
        return NA, reason
    before, _ = _window(acct, now, "events", 30, ending_days_ago=90)
    then = float(sum(before)) / len(before) if before else 0.0
    if not then:
        return NA, "no usage 90 days ago"
    current = float(sum(recent)) / len(recent) if recent else 0.0
    return round(100.0 * (current - then) / then, 1), None


def _days_since_active(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    active = [at for at, r in _rows(acct, now)
              if any(isinstance(r.get(c), float) and r[c] > 0 for c in ("active_users", "events", "key_events"))]
    if not active:
        return NA, "no activity in any usage row"
    return days_between(max(active), now), None


def _seat_utilization(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    active, reason = _active_users(acct, inputs, now)
    if active is None:
        return NA, reason
    seats, why = inputs.get("seats", (NA, "the mappings have no input 'seats'"))
    if not isinstance(seats, float):
        return NA, f"seats unknown ({why})"
    if seats <= 0:
        return NA, f"seats is {seats:g}"
    return round(100.0 * active / seats, 1), None


WINDOW_DAYS = (30, 90, 120)  # days after a row's first midnight: it leaves the 30-day window, enters and leaves the one 90 days ago


def moves(acct: AccountData, now: datetime) -> float | None:
    """A row counts from its timestamp on, leaves the 30-day window 30 days after the first
    midnight at or after it, and is in the window ending 90 days ago from 90 to 120 days after
    that midnight; the days since the last active row go up every midnight."""
    stamp, zone = now.timestamp(), now.tzinfo
    moments = []
    for series in acct.of(SYSTEM, "series"):
        for at in series.get("at") or []:
            moments.append(at)
            moments += [midnight_after(at, days, zone, strictly=False) for days in WINDOW_DAYS]
    if any(any(isinstance(r.get(c), float) and r[c] > 0 for c in ("active_users", "events", "key_events"))
           for _at, r in _rows(acct, now)):
        moments.append(next_midnight(now))
    return first_after(stamp, moments)


def _metric(description: str, compute: Any) -> CatalogueMetric:
    return CatalogueMetric("number", SYSTEM, description, compute)


CATALOGUE: dict[str, CatalogueMetric] = {
    "active_users_30d": _metric("most active users of any usage row (day, week) in the last 30 days", _active_users),
    "key_events_30d": _metric("key-feature events in the last 30 days", _sum("key_events")),
    "events_30d": _metric("all usage events in the last 30 days", _sum("events")),
    "usage_change_90d": _metric("events per usage row in the last 30 days against the 30 days ending 90 days "
                                "ago, percent", _change),
    "days_since_active": _metric("days since the last usage row with any activity", _days_since_active),
    "seat_utilization": _metric("active users in 30 days (usage) / seats (CRM input), percent", _seat_utilization),
}
