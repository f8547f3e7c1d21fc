"""Salesforce records as they were at a past moment, and the outcome Salesforce tells: closed
opportunities (a renewal lost is a churn, won a renewal)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...times import moment_of
from ..base import AccountData, Event, OutcomeRule

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
