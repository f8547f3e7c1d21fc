"""Salesforce records as they were at a past moment, and the outcome Salesforce tells: closed
opportunities (a renewal lost is a churn, won a renewal)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...times import moment_of
from ..base import AccountData, Columnar, Event, OutcomeRule, Past, Table, Tables
from ..days import window_start
from .metrics import URGENT_PRIORITIES

SYSTEM = "salesforce"


def as_of(obj: str, rec: dict[str, Any], at: datetime) -> dict[str, Any] | None:
    """None for a record created after `at`; a Case closed later was open then; an Opportunity
    closed later was open then. Accounts are not rolled back: their fields have no history."""
    if obj == "Account":
        return None
    created = moment_of(rec.get("CreatedDate"))
    if created is not None and created > at:
        return None
    if obj == "Case":
        closed = moment_of(rec.get("ClosedDate"))
        if rec.get("IsClosed") and closed is not None and closed > at:
            return {**rec, "IsClosed": False, "Status": "Working", "ClosedDate": None}
        return rec
    if obj == "Opportunity":
        close = moment_of(rec.get("CloseDate"))
        if rec.get("IsClosed") and close is not None and close > at:
            return {**rec, "IsClosed": False, "IsWon": False, "StageName": "Open"}
    return rec


class ClosedOpportunity(BaseModel):
    """Opportunities of the given types (Opportunity.Type: picklists differ per org) closed won
    or closed lost; the event date is the CloseDate."""

    model_config = ConfigDict(extra="forbid")
    types: list[str] = Field(min_length=1)
    result: Literal["won", "lost"]


def closed_opportunities(rule: ClosedOpportunity, acct: AccountData) -> list[Event]:
    found: list[Event] = []
    for opp in acct.of(SYSTEM, "Opportunity"):
        if opp.get("Type") not in rule.types or not opp.get("IsClosed"):
            continue
        if bool(opp.get("IsWon")) != (rule.result == "won"):
            continue
        when = moment_of(opp.get("CloseDate"))
        if when is not None:
            found.append((when, f"{opp.get('Type')} opportunity {opp.get('Name') or opp.get('Id')!r} closed {rule.result}"))
    return sorted(found, key=lambda e: e[0])


OUTCOMES = {
    "salesforce_opportunity": OutcomeRule(ClosedOpportunity, ("Opportunity",), closed_opportunities,  # type: ignore[arg-type]
                                          "opportunities of some types closed won or lost"),
}


# ------------------------------------------------------------------ Cases, column-wise


def _stamp(value: Any) -> float:
    moment = moment_of(value)
    return moment.timestamp() if moment is not None else np.nan


def _case(rec: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(_stamp(rec.get("CreatedDate")), _stamp(rec.get("ClosedDate")), float(bool(rec.get("IsClosed"))),
             float(str(rec.get("Priority") or "").strip().lower() in URGENT_PRIORITIES),
             float(rec.get("IsEscalated") is True), float(rec.get("Status") == "Escalated"))]


CASES = Table("Case", {"created": float, "closed": float, "is_closed": float, "urgent": float,
                       "escalated_flag": float, "escalated_status": float}, _case)


def _cases_then(t: Tables, at: datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(existed at `at`, open then, closed later: reopened by the roll-back) per Case."""
    rows, stamp = t["Case"], at.timestamp()
    existed = ~(rows["created"] > stamp)  # a Case without CreatedDate is kept, as `as_of` keeps it
    reopened = (rows["is_closed"] == 1) & (rows["closed"] > stamp)
    return existed, existed & ((rows["is_closed"] == 0) | reopened), reopened


def _open_cases(t: Tables, at: datetime) -> Columnar:
    return t.count("Case", _cases_then(t, at)[1]), None


def _urgent_cases(t: Tables, at: datetime) -> Columnar:
    return t.count("Case", _cases_then(t, at)[1] & (t["Case"]["urgent"] == 1)), None


def _escalated_cases(t: Tables, at: datetime) -> Columnar:
    _existed, is_open, reopened = _cases_then(t, at)
    rows = t["Case"]
    escalated = (rows["escalated_flag"] == 1) | ((rows["escalated_status"] == 1) & ~reopened)
    return t.count("Case", is_open & escalated), None


def _cases_30d(t: Tables, at: datetime) -> Columnar:
    existed = _cases_then(t, at)[0]
    return t.count("Case", existed & (t["Case"]["created"] >= window_start(at, 30))), None


PAST = Past(tables={"Case": CASES},
            metrics={"open_cases": _open_cases, "urgent_cases": _urgent_cases,
                     "escalated_cases": _escalated_cases, "cases_30d": _cases_30d})
