"""Zendesk tickets as they were at a past moment, from their own timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from ...times import parse_iso
from ..base import Columnar, Past, Table, Tables
from ..days import window_start
from .metrics import OPEN_TICKET


def _time(value: Any) -> datetime | None:
    try:
        return parse_iso(str(value)) if value else None
    except ValueError:
        return None


def as_of(obj: str, rec: dict[str, Any], at: datetime) -> dict[str, Any] | None:
    """None for a ticket not created yet. A ticket solved or rated after `at` was still open and
    unrated then (its last update is the latest a change can be dated)."""
    if obj != "tickets":
        created = _time(rec.get("created_at"))
        return rec if created is None or created <= at else None
    created = _time(rec.get("created_at"))
    if created is None or created > at:
        return None
    updated = _time(rec.get("updated_at"))
    if updated is not None and updated > at:
        status = "open" if rec.get("status") in ("solved", "closed") else rec.get("status")
        return {**rec, "status": status, "satisfaction": None}
    return rec


# ------------------------------------------------------------------ the same, column-wise


def _stamp(value: Any) -> float:
    moment = _time(value)
    return moment.timestamp() if moment is not None else np.nan


def _ticket(rec: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(_stamp(rec.get("created_at")), _stamp(rec.get("updated_at")), rec.get("status"),
             rec.get("priority"), rec.get("satisfaction"))]


TICKETS = Table("tickets", {"created": float, "updated": float, "status": str, "priority": str,
                            "satisfaction": str}, _ticket)


def _tickets_then(t: Tables, at: datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(existed at `at`, open then, satisfaction then) per ticket row."""
    rows, stamp = t["tickets"], at.timestamp()
    existed = rows["created"] <= stamp
    later = rows["updated"] > stamp
    status = rows["status"]
    solved = np.isin(status, ["solved", "closed"])
    is_open = existed & (np.isin(status, list(OPEN_TICKET)) | (later & solved))
    rated = np.where(later, "", rows["satisfaction"])
    return existed, is_open, rated


def _open_now(t: Tables, at: datetime) -> Columnar:
    return t.count("tickets", _tickets_then(t, at)[1]), None


def _urgent_now(t: Tables, at: datetime) -> Columnar:
    _existed, is_open, _rated = _tickets_then(t, at)
    return t.count("tickets", is_open & (t["tickets"]["priority"] == "urgent")), None


def _recent(t: Tables, at: datetime) -> Columnar:
    existed = _tickets_then(t, at)[0]
    return t.count("tickets", existed & (t["tickets"]["created"] >= window_start(at, 30))), None


def _csat(t: Tables, at: datetime) -> Columnar:
    existed, _is_open, rated = _tickets_then(t, at)
    recent = existed & (t["tickets"]["updated"] >= window_start(at, 90))
    good = t.count("tickets", recent & (rated == "good"))
    rated_count = good + t.count("tickets", recent & (rated == "bad"))
    values = np.full(t.n, np.nan)
    some = rated_count > 0
    values[some] = [round(100.0 * g / r, 1) for g, r in zip(good[some].tolist(), rated_count[some].tolist(), strict=True)]
    reasons = np.where(some, None, "no rated tickets in 90 days").astype(object)
    return values, reasons


PAST = Past(tables={"tickets": TICKETS},
            metrics={"open_tickets": _open_now, "urgent_tickets": _urgent_now, "tickets_30d": _recent,
                     "csat_90d": _csat})
