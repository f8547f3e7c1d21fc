"""HubSpot deals as they were at a past moment, and the outcome HubSpot tells: closed deals."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...times import moment_of
from ..base import AccountData, Event, OutcomeRule

SYSTEM = "hubspot"


def as_of(obj: str, rec: dict[str, Any], at: datetime) -> dict[str, Any] | None:
    """None for a deal created after `at`; a deal closed later was open then. Companies are not
    rolled back: their properties have no history."""
    if obj != "deals":
        return None
    created = moment_of(rec.get("createdate"))
    if created is not None and created > at:
        return None
    close = moment_of(rec.get("closedate"))
    if rec.get("hs_is_closed") == "true" and close is not None and close > at:
        return {**rec, "hs_is_closed": "false", "hs_is_closed_won": "false", "dealstage": "open"}
    return rec


class ClosedDeal(BaseModel):
    """Deals of the given deal types (and, optionally, whose name contains a word, e.g. Renewal)
    closed won or closed lost; the event date is the close date."""

    model_config = ConfigDict(extra="forbid")
    dealtypes: list[str] = Field(default_factory=lambda: ["existingbusiness"], min_length=1)
    name_contains: str | None = None
    result: Literal["won", "lost"]


def closed_deals(rule: ClosedDeal, acct: AccountData) -> list[Event]:
    found: list[Event] = []
    for deal in acct.of(SYSTEM, "deals"):
        if deal.get("dealtype") not in rule.dealtypes or deal.get("hs_is_closed") != "true":
            continue
        if rule.name_contains and rule.name_contains.lower() not in str(deal.get("dealname") or "").lower():
            continue
        if (deal.get("hs_is_closed_won") == "true") != (rule.result == "won"):
            continue
        when = moment_of(deal.get("closedate"))
        if when is not None:
            found.append((when, f"deal {deal.get('dealname') or deal.get('id')!r} closed {rule.result}"))
    return sorted(found, key=lambda e: e[0])


OUTCOMES = {
    "hubspot_deal": OutcomeRule(ClosedDeal, ("deals",), closed_deals,  # type: ignore[arg-type]
                                "deals of some types closed won or lost"),
}
