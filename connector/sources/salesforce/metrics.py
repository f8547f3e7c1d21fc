"""Salesforce's catalogue metrics: support Cases per Account (open, urgent, escalated, recent).

Each function gets one account's gathered records (`AccountData.of`): its Salesforce Account's
Cases (`Belongs("Case", "AccountId", "Account")`, deleted ones left out by the store). The measure
step calls them only for accounts with a Salesforce Account (the others are N/A with the plugin's
`unmatched` reason). Cases are pulled only when a mapped metric needs one of these
(`objects=("Case",)`), so an org whose mappings use none is never asked for them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...times import moment_of
from ..base import AccountData, CatalogueMetric, Value, first_after
from ..days import midnight_after, window_start

SYSTEM = "salesforce"
Inputs = dict[str, Value]
URGENT_PRIORITIES = {"high", "critical", "urgent"}  # the standard picklist has High; orgs add the others


def _open(acct: AccountData) -> list[dict[str, Any]]:
    return [c for c in acct.of(SYSTEM, "Case") if not c.get("IsClosed")]


def _open_cases(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    return float(len(_open(acct))), None


def _urgent_cases(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    return float(sum(1 for c in _open(acct) if str(c.get("Priority") or "").strip().lower() in URGENT_PRIORITIES)), None


def _escalated_cases(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    return float(sum(1 for c in _open(acct) if c.get("IsEscalated") is True or c.get("Status") == "Escalated")), None


def _cases_30d(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    since = window_start(now, 30)
    return float(sum(1 for c in acct.of(SYSTEM, "Case")
                     if (created := moment_of(c.get("CreatedDate"))) is not None and created.timestamp() >= since)), None


def moves(acct: AccountData, now: datetime) -> float | None:
    """A Case leaves the 30-day count at the midnight 31 days after the day it was created; the
    open, urgent and escalated counts move only with new records."""
    return first_after(now.timestamp(), [midnight_after(created.timestamp(), 30, now.tzinfo, strictly=True)
                                         for c in acct.of(SYSTEM, "Case")
                                         if (created := moment_of(c.get("CreatedDate"))) is not None])


def _metric(description: str, compute: object) -> CatalogueMetric:
    return CatalogueMetric("number", SYSTEM, description, compute, objects=("Case",))  # type: ignore[arg-type]


CATALOGUE: dict[str, CatalogueMetric] = {
    "open_cases": _metric("Salesforce Cases not closed", _open_cases),
    "urgent_cases": _metric("open Cases of priority High, Critical or Urgent", _urgent_cases),
    "escalated_cases": _metric("open Cases escalated (IsEscalated, or status Escalated)", _escalated_cases),
    "cases_30d": _metric("Cases created in the last 30 days", _cases_30d),
}
