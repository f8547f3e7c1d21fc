"""Stripe records as they were at a past moment, and the outcomes Stripe tells: cancellations and
MRR drops. Only the records' own timestamps are used: nothing known after the moment leaks in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..base import AccountData, Event, OutcomeRule
from .metrics import SYSTEM, _mrr_at, _single

PAYING = ("active", "past_due")


def as_of(obj: str, rec: dict[str, Any], at: datetime) -> dict[str, Any] | None:
    """The record at `at`: None when it did not exist yet; a subscription's status and an invoice's
    state rolled back from their transition times."""
    stamp = at.timestamp()
    created = rec.get("created")
    if not isinstance(created, int) or created > stamp:
        return None
    if obj == "subscriptions":
        ended = rec.get("ended_at") or rec.get("canceled_at")
        trial_end = rec.get("trial_end")
        if isinstance(ended, int) and ended <= stamp:
            status = "canceled"
        elif isinstance(trial_end, int) and trial_end > stamp:
            status = "trialing"
        elif rec.get("status") in ("canceled", "incomplete_expired"):
            status = "active"  # it ended later: at `at` it still ran
        else:
            status = rec.get("status")
        return {**rec, "status": status, "canceled_at": None if status != "canceled" else rec.get("canceled_at")}
    if obj == "invoices":
        moved = (rec.get("status_transitions") or {})
        later = [moved.get(k) for k in ("paid_at", "voided_at", "marked_uncollectible_at")]
        if rec.get("status") != "open" and any(isinstance(t, int) and t > stamp for t in later):
            return {**rec, "status": "open"}
        return rec
    return rec  # customers, charges: as created


class Cancellation(BaseModel):
    """Subscriptions canceled for one of `reasons` (Stripe's cancellation_details.reason):
    `cancellation_requested` is the customer's choice, `payment_failed` / `payment_disputed` are not."""

    model_config = ConfigDict(extra="forbid")
    reasons: list[Literal["cancellation_requested", "payment_failed", "payment_disputed"]] = Field(
        default_factory=lambda: ["cancellation_requested"], min_length=1)
    every_subscription: bool = True  # only when no paying subscription is left (the customer is gone)


class MrrDrop(BaseModel):
    """MRR down by at least `percent` within `days` (a downsell)."""

    model_config = ConfigDict(extra="forbid")
    percent: float = Field(gt=0, le=100)
    days: int = Field(gt=0, le=365)


def _when(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def cancellations(rule: Cancellation, acct: AccountData) -> list[Event]:
    subs = acct.of(SYSTEM, "subscriptions")
    found: list[Event] = []
    for sub in subs:
        ended = _when(sub.get("ended_at") or sub.get("canceled_at"))
        reason = (sub.get("cancellation_details") or {}).get("reason")
        if ended is None or reason not in rule.reasons:
            continue
        if rule.every_subscription and any(
            other is not sub and _runs_after(other, ended) for other in subs
        ):
            continue
        found.append((ended, f"subscription {sub.get('id')} canceled ({reason})"))
    return sorted(found, key=lambda e: e[0])


def _runs_after(sub: dict[str, Any], moment: datetime) -> bool:
    """Whether a subscription still paid after `moment` (a plan change is not a churn)."""
    ended = _when(sub.get("ended_at") or sub.get("canceled_at"))
    started = _when(sub.get("created"))
    if ended is not None:
        return ended > moment
    return sub.get("status") in PAYING and (started is None or started <= moment + timedelta(days=31))


def mrr_drops(rule: MrrDrop, acct: AccountData) -> list[Event]:
    """The first week at which MRR stood `percent` below its level `days` earlier, per drop."""
    subs = acct.of(SYSTEM, "subscriptions")
    starts = [s["created"] for s in subs if isinstance(s.get("created"), int)]
    if not starts:
        return []
    moment = datetime.fromtimestamp(min(starts), UTC) + timedelta(days=rule.days)
    end = datetime.now(UTC)
    found: list[Event] = []
    last: datetime | None = None
    while moment <= end:
        then, now = _single(_mrr_at(acct, moment - timedelta(days=rule.days))[0]), _single(_mrr_at(acct, moment)[0])
        if then[1] and now[1] is not None and then[0] in (now[0], None) and now[1] <= then[1] * (1 - rule.percent / 100):
            if last is None or moment - last > timedelta(days=rule.days):
                found.append((moment, f"MRR {then[1]:,.2f} -> {now[1]:,.2f} in {rule.days} days"))
                last = moment
        moment += timedelta(days=7)
    return found


OUTCOMES = {
    "stripe_cancellation": OutcomeRule(Cancellation, ("subscriptions",), cancellations,  # type: ignore[arg-type]
                                       "subscriptions canceled for the given reasons"),
    "mrr_drop": OutcomeRule(MrrDrop, ("subscriptions",), mrr_drops,  # type: ignore[arg-type]
                            "MRR down by a percentage within some days"),
}
