"""Zendesk's catalogue metrics: open and urgent tickets, ticket volume, CSAT.

Each function gets one account's gathered records (`AccountData.of`), its input values and the
moment measured; the measure step calls them only for accounts with a matched Zendesk organization (the others
are N/A with the plugin's `unmatched` reason).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...times import parse_iso
from ..base import NA, AccountData, CatalogueMetric, Value, first_after
from ..days import midnight_after, window_start

SYSTEM = "zendesk"
Inputs = dict[str, Value]
OPEN_TICKET = {"new", "open", "pending", "hold"}


def _ticket_time(value: Any) -> datetime | None:
    try:
        return parse_iso(str(value))
    except ValueError:
        return None


def _open_tickets(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    return float(sum(1 for t in acct.of(SYSTEM, "tickets") if t.get("status") in OPEN_TICKET)), None


def _urgent_tickets(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    return float(sum(1 for t in acct.of(SYSTEM, "tickets") if t.get("status") in OPEN_TICKET and t.get("priority") == "urgent")), None


def _tickets_30d(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    since = window_start(now, 30)
    return float(sum(1 for t in acct.of(SYSTEM, "tickets")
                     if (created := _ticket_time(t.get("created_at"))) is not None and created.timestamp() >= since)), None


def _csat_90d(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    since = window_start(now, 90)
    scores = [t.get("satisfaction") for t in acct.of(SYSTEM, "tickets") if t.get("satisfaction") in ("good", "bad")
              and (updated := _ticket_time(t.get("updated_at"))) is not None and updated.timestamp() >= since]
    if not scores:
        return NA, "no rated tickets in 90 days"
    return round(100.0 * scores.count("good") / len(scores), 1), None


def moves(acct: AccountData, now: datetime) -> float | None:
    """A ticket leaves the 30-day count at the midnight 31 days after the day it was created, and
    the 90-day CSAT 91 days after the day of its last update; nothing else here changes with time."""
    moments, zone = [], now.tzinfo
    for t in acct.of(SYSTEM, "tickets"):
        if (created := _ticket_time(t.get("created_at"))) is not None:
            moments.append(midnight_after(created.timestamp(), 30, zone, strictly=True))
        if (updated := _ticket_time(t.get("updated_at"))) is not None:
            moments.append(midnight_after(updated.timestamp(), 90, zone, strictly=True))
    return first_after(now.timestamp(), moments)


def _metric(kind: str, description: str, compute: object) -> CatalogueMetric:
    return CatalogueMetric(kind, SYSTEM, description, compute)  # type: ignore[arg-type]


CATALOGUE: dict[str, CatalogueMetric] = {
    "open_tickets": _metric("number", "tickets new, open, pending or on hold", _open_tickets),
    "urgent_tickets": _metric("number", "open tickets with urgent priority", _urgent_tickets),
    "tickets_30d": _metric("number", "tickets created in the last 30 days", _tickets_30d),
    "csat_90d": _metric("number", "share of good satisfaction ratings in 90 days, percent", _csat_90d),
}
