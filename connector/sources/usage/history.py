"""Usage series as they were at a past moment (a row exists from its timestamp on: rows never change
later, a period's counts are what they are), and the catalogue's usage metrics column-wise."""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Any

import numpy as np

from ..base import Columnar, Past, Table, Tables
from ..days import midnights_after_of, next_midnight, ordinals_of, today_ordinal, window_start
from .metrics import WINDOW_DAYS


def as_of(obj: str, rec: dict[str, Any], at: datetime) -> dict[str, Any] | None:
    """A series as it was at `at`: its rows up to then (None when it had none yet)."""
    if obj != "series":
        return rec
    stamps = rec.get("at") or []
    upto = bisect.bisect_right(stamps, at.timestamp())
    if upto == len(stamps):
        return rec
    if upto == 0:
        return None
    cut = {**rec, "at": stamps[:upto], "values": {c: v[:upto] for c, v in (rec.get("values") or {}).items()}}
    if rec.get("na"):
        cut["na"] = {c: r[:upto] for c, r in rec["na"].items()}
    return cut


def _columns(rec: dict[str, Any]) -> list[Any]:
    """at, the three conventional columns (None = N/A), and whether the series has each (one value
    for all its rows)."""
    values = rec.get("values") or {}  # spelled out: run for every series of a measure
    return [rec.get("at") or [], values.get("active_users") or None, values.get("key_events") or None,
            values.get("events") or None,
            1.0 if "active_users" in values else 0.0, 1.0 if "key_events" in values else 0.0,
            1.0 if "events" in values else 0.0]


ROWS = Table("series", {"at": float, "active_users": float, "key_events": float, "events": float,
                        "has_active_users": float, "has_key_events": float, "has_events": float},
             rows=lambda rec: [], columns_of=_columns)


def _window(t: Tables, at: datetime, column: str, days: int, ending_days_ago: int = 0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows up to `at`, rows in the window with a value of `column`, why N/A per account or None)."""
    rows, stamp = t["rows"], at.timestamp()
    upto = rows["at"] <= stamp
    end = window_start(at, ending_days_ago) if ending_days_ago else stamp
    inside = upto & (rows["at"] > window_start(at, ending_days_ago + days)) & (rows["at"] <= end) & ~np.isnan(rows[column])
    reasons = np.full(t.n, None, dtype=object)
    has = t.count("rows", upto & (rows[f"has_{column}"] == 1)) > 0
    reasons[~has] = f"no usage source has a {column} column"
    reasons[t.count("rows", upto) == 0] = "no usage rows for this account yet"
    return upto, inside, reasons


def _active(t: Tables, at: datetime) -> Columnar:
    _upto, inside, reasons = _window(t, at, "active_users", 30)
    values = np.full(t.n, -np.inf)
    rows = t["rows"]
    np.maximum.at(values, rows.account[inside], rows["active_users"][inside])
    values[np.isinf(values)] = 0.0  # rows, none in the window: no one was active
    values[reasons != None] = np.nan  # noqa: E711
    return values, reasons


def _sum(column: str) -> Any:
    def compute(t: Tables, at: datetime) -> Columnar:
        _upto, inside, reasons = _window(t, at, column, 30)
        rows = t["rows"]
        values = np.bincount(rows.account[inside], weights=rows[column][inside], minlength=t.n).astype(float)
        values[reasons != None] = np.nan  # noqa: E711
        return values, reasons
    return compute


def _change(t: Tables, at: datetime) -> Columnar:
    rows = t["rows"]
    _upto, recent, reasons = _window(t, at, "events", 30)
    _upto, before, _ = _window(t, at, "events", 30, ending_days_ago=90)
    now = np.bincount(rows.account[recent], weights=rows["events"][recent], minlength=t.n)
    then = np.bincount(rows.account[before], weights=rows["events"][before], minlength=t.n)
    now_n = np.bincount(rows.account[recent], minlength=t.n)
    then_n = np.bincount(rows.account[before], minlength=t.n)
    mean_then = np.divide(then, then_n, out=np.zeros(t.n), where=then_n > 0)
    reasons[(reasons == None) & (mean_then == 0)] = "no usage 90 days ago"  # noqa: E711
    values = np.full(t.n, np.nan)
    ok = np.flatnonzero(reasons == None)  # noqa: E711
    values[ok] = [round(100.0 * ((a / n if n else 0.0) - b / m) / (b / m), 1) for a, n, b, m in
                  zip(now[ok].tolist(), now_n[ok].tolist(), then[ok].tolist(), then_n[ok].tolist(), strict=True)]
    return values, reasons


def _days_since(t: Tables, at: datetime) -> Columnar:
    rows, stamp = t["rows"], at.timestamp()
    active = (rows["at"] <= stamp) & ((rows["active_users"] > 0) | (rows["events"] > 0) | (rows["key_events"] > 0))
    latest = np.full(t.n, -np.inf)
    np.maximum.at(latest, rows.account[active], rows["at"][active])
    values = np.full(t.n, np.nan)
    some = np.isfinite(latest)
    values[some] = today_ordinal(at) - ordinals_of(latest[some], at.tzinfo)
    reasons = np.where(some, None, "no activity in any usage row").astype(object)
    return values, reasons


def _seats(t: Tables, at: datetime, inputs: dict[str, Any]) -> Columnar:
    active, reasons = _active(t, at)
    values = np.full(t.n, np.nan)
    if "seats" not in inputs:
        why = np.full(t.n, "the mappings have no input 'seats'", dtype=object)
        seats = np.full(t.n, np.nan)
    else:
        seats = inputs["seats"].values.astype(float)
        why = inputs["seats"].na_reason
    for i in np.flatnonzero(reasons == None).tolist():  # noqa: E711
        s = seats[i]
        if s != s:
            reasons[i] = f"seats unknown ({why[i] or 'N/A'})"
        elif s <= 0:
            reasons[i] = f"seats is {s:g}"
        else:
            values[i] = round(100.0 * active[i] / s, 1)
    return values, reasons


def _moves(t: Tables, at: datetime) -> np.ndarray:
    """`metrics.moves` for every account at once (NaN: never)."""
    rows, stamp = t["rows"], at.timestamp()
    first = np.full(t.n, np.inf)
    for days in (None, *WINDOW_DAYS):  # one window's moments at a time (each a float per row)
        moment = rows["at"] if days is None else midnights_after_of(rows["at"], days, at.tzinfo, strictly=False)
        later = moment >= stamp
        np.minimum.at(first, rows.account[later], moment[later])
    active = (rows["at"] <= stamp) & ((rows["active_users"] > 0) | (rows["events"] > 0) | (rows["key_events"] > 0))
    latest = np.full(t.n, -np.inf)
    np.maximum.at(latest, rows.account[active], rows["at"][active])
    some = np.isfinite(latest)
    first[some] = np.minimum(first[some], next_midnight(at))
    first[np.isinf(first)] = np.nan
    return first


PAST = Past(tables={"rows": ROWS},
            metrics={"active_users_30d": _active, "key_events_30d": _sum("key_events"), "events_30d": _sum("events"),
                     "usage_change_90d": _change, "days_since_active": _days_since},
            with_inputs={"seat_utilization": _seats},
            live=True, moves=_moves)  # rows are checked when read: every one has its moment, and none past now counts
