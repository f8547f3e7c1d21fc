"""Calendar days, as the catalogue's time windows count them.

"In the last 30 days" means since midnight 30 days before today (Salesforce's `LAST_N_DAYS:30`
counts the same way), "days since" and "days past due" count calendar days, and an invoice is past
due from the day after its due date. Days are those of the zone of the moment measured (UTC for
the CLI and the scheduler). So a metric moves only at a midnight: hourly runs between two
midnights find the same values, and write nothing when nothing else changed.

Per-record forms take epoch seconds; the column forms (`*_of`) take arrays of them (NaN stays NaN).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo

import numpy as np

DAY = 86400.0
_EPOCH_DAY = date(1970, 1, 1)


def _offset(zone: tzinfo | None) -> float | None:
    """The zone's fixed offset from UTC in seconds, or None when it has daylight-saving changes."""
    if zone is None or zone is UTC:
        return 0.0
    if isinstance(zone, timezone):
        return zone.utcoffset(None).total_seconds()
    return 0.0 if str(zone) in ("UTC", "Etc/UTC", "GMT", "Etc/GMT") else None


def midnight(day: date, zone: tzinfo | None) -> float:
    """Epoch seconds of the midnight that starts `day` in `zone`. Where clocks go back across
    midnight, 00:00 comes twice and the day before returns in between: the day starts at the
    second (America/St_Johns until 2010); where midnight does not exist, at the day's first moment."""
    first = datetime.combine(day, time(), tzinfo=zone or UTC).timestamp()
    second = datetime.combine(day, time(fold=1), tzinfo=zone or UTC).timestamp()
    return second if second > first and day_of(second - 1, zone) < day else first


def day_of(stamp: float, zone: tzinfo | None) -> date:
    """The calendar day (in `zone`) of a moment."""
    return datetime.fromtimestamp(stamp, zone or UTC).date()


def window_start(now: datetime, days: int) -> float:
    """Midnight `days` calendar days before `now`'s day: where "the last `days` days" start."""
    return midnight(now.date() - timedelta(days=days), now.tzinfo)


def days_between(stamp: float, now: datetime) -> float:
    """Calendar days from the day of `stamp` to `now`'s day (0 on the same day)."""
    return float((now.date() - day_of(stamp, now.tzinfo)).days)


def midnight_after(stamp: float, days: int, zone: tzinfo | None, *, strictly: bool) -> float:
    """`days` days after the first midnight after `stamp` (strictly), or at or after it: when a
    moment leaves (enters) a window counted from a midnight."""
    day = day_of(stamp, zone)
    if strictly or midnight(day, zone) != stamp:
        day += timedelta(days=1)
    return midnight(day + timedelta(days=days), zone)


def next_midnight(now: datetime) -> float:
    """When a count of calendar days next goes up."""
    return midnight(now.date() + timedelta(days=1), now.tzinfo)


# ------------------------------------------------------------------ column forms


def _each(stamps: np.ndarray, one: object) -> np.ndarray:
    """`one` for every distinct finite stamp (zones with daylight-saving changes)."""
    out = np.full(stamps.shape, np.nan)
    finite = np.isfinite(stamps)
    distinct, where = np.unique(stamps[finite], return_inverse=True)
    out[finite] = np.array([one(float(s)) for s in distinct.tolist()], dtype=float)[where]  # type: ignore[operator]
    return out


def ordinals_of(stamps: np.ndarray, zone: tzinfo | None) -> np.ndarray:
    """The calendar day of each stamp, as a day number (differences are days)."""
    offset = _offset(zone)
    if offset is not None:
        return np.floor((stamps + offset) / DAY)
    return _each(stamps, lambda s: float(day_of(s, zone).toordinal()))


def today_ordinal(now: datetime) -> float:
    """`now`'s day on the scale of `ordinals_of` for its zone."""
    if _offset(now.tzinfo) is not None:  # days since 1970-01-01, as floor((stamp + offset) / DAY); a naive now is UTC
        return float((now.date() - _EPOCH_DAY).days)
    return float(now.date().toordinal())


def midnights_after_of(stamps: np.ndarray, days: int, zone: tzinfo | None, *, strictly: bool) -> np.ndarray:
    """`midnight_after` for each stamp."""
    offset = _offset(zone)
    if offset is None:
        return _each(stamps, lambda s: midnight_after(s, days, zone, strictly=strictly))
    local = (stamps + offset) / DAY
    first = np.floor(local) + 1 if strictly else np.ceil(local)
    return (first + days) * DAY - offset
