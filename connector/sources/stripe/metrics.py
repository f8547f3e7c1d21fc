"""Stripe's catalogue metrics: MRR and its change, subscription status, unpaid invoices, failed payments.

Each function gets one account's gathered records (`AccountData.of`), its input values and the
moment measured; the measure step calls them only for accounts with a matched Stripe customer (the others
are N/A with the plugin's `unmatched` reason).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from ..base import NA, AccountData, CatalogueMetric, Value, first_after
from ..days import days_between, midnight, midnight_after, next_midnight, window_start

SYSTEM = "stripe"
Inputs = dict[str, Value]
MRR_STATUSES = {"active", "past_due"}  # trialing pays nothing yet; unpaid and canceled stopped paying
STATUS_RANK = ["active", "trialing", "past_due", "unpaid", "incomplete", "paused", "incomplete_expired", "canceled"]
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
MONTHS_PER = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}  # interval length in months


def _mrr_at(acct: AccountData, at: datetime | None) -> tuple[dict[str, float], str | None]:
    """MRR per currency now (at=None: by current status) or at a past moment (by dates)."""
    totals: dict[str, float] = defaultdict(float)
    for sub in acct.of(SYSTEM, "subscriptions"):
        if at is None:
            if sub.get("status") not in MRR_STATUSES:
                continue
        else:
            stamp = at.timestamp()
            ended = sub.get("ended_at") or sub.get("canceled_at")
            trial_end = sub.get("trial_end")
            if not isinstance(sub.get("created"), int) or sub["created"] > stamp:
                continue
            if isinstance(ended, int) and ended <= stamp:
                continue
            if isinstance(trial_end, int) and trial_end > stamp:
                continue
        for item in (sub.get("items") or {}).get("data") or []:
            currency, monthly, problem = item_monthly(sub, item)
            if problem:
                return {}, problem
            totals[currency] += monthly
    return dict(totals), None


def item_monthly(sub: dict[str, Any], item: dict[str, Any]) -> tuple[str, float, str | None]:
    """(currency, amount per month, why it has none) of one subscription item."""
    price = item.get("price") or item.get("plan") or {}
    recurring = price.get("recurring") or ({"interval": price.get("interval"), "interval_count": price.get("interval_count")} if price.get("interval") else None)
    amount = price.get("unit_amount")
    if amount is None and price.get("unit_amount_decimal") is not None:
        amount = float(price["unit_amount_decimal"])
    currency = str(price.get("currency") or sub.get("currency") or "").lower()
    if not recurring or recurring.get("interval") not in MONTHS_PER:
        return "", 0.0, f"subscription {sub.get('id')} has a price without a recurring interval"
    if amount is None or not currency:
        return "", 0.0, f"subscription {sub.get('id')} has a price without unit amount (tiered pricing is not supported)"
    quantity = item.get("quantity") if item.get("quantity") is not None else 1
    months = MONTHS_PER[recurring["interval"]] * (recurring.get("interval_count") or 1)
    minor = 1 if currency in ZERO_DECIMAL else 100
    return currency, float(amount) * float(quantity) / minor / months, None


def _single(totals: dict[str, float]) -> tuple[str | None, float | None, str | None]:
    if len(totals) > 1:
        listed = ", ".join(f"{c} {v:,.2f}" for c, v in sorted(totals.items()))
        return None, None, f"MRR is in several currencies ({listed})"
    if not totals:
        return None, 0.0, None
    currency, value = next(iter(totals.items()))
    return currency, round(value, 2), None


def _current_mrr(acct: AccountData) -> tuple[str | None, float | None, str | None]:
    """(currency, MRR, why N/A) from the subscriptions paying now."""
    totals, problem = _mrr_at(acct, None)
    return (None, None, problem) if problem else _single(totals)


def _mrr(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    _currency, value, problem = _current_mrr(acct)
    return (NA, problem) if problem else (value, None)


def _mrr_currency(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    currency, _value, problem = _current_mrr(acct)
    if problem:
        return NA, problem
    return (currency, None) if currency else (NA, "no paying subscription")


def _mrr_change_90d(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    totals_now, problem = _mrr_at(acct, None)
    totals_then, problem_then = _mrr_at(acct, datetime.fromtimestamp(window_start(now, 90), now.tzinfo))
    if problem or problem_then:
        return NA, problem or problem_then
    currency_now, value_now, p1 = _single(totals_now)
    currency_then, value_then, p2 = _single(totals_then)
    if p1 or p2:
        return NA, p1 or p2
    if not value_then:
        return NA, "no MRR 90 days ago"
    if currency_now and currency_then and currency_now != currency_then:
        return NA, f"the currency changed ({currency_then} -> {currency_now})"
    return round(100.0 * ((value_now or 0.0) - value_then) / value_then, 2), None


def _subscription_status(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    statuses = {s.get("status") for s in acct.of(SYSTEM, "subscriptions") if s.get("status")}
    if not statuses:
        return NA, "no subscriptions"
    ranked = sorted(statuses, key=lambda s: STATUS_RANK.index(s) if s in STATUS_RANK else len(STATUS_RANK))
    return ranked[0], None


def _past_due(acct: AccountData, now: datetime) -> list[dict[str, Any]]:
    """Open invoices whose due date is a day before today or earlier."""
    today = midnight(now.date(), now.tzinfo)
    return [i for i in acct.of(SYSTEM, "invoices")
            if i.get("status") == "open" and isinstance(i.get("due_date"), int) and i["due_date"] < today]


def _past_due_invoices(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    return float(len(_past_due(acct, now))), None


def _days_past_due(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    due = [i["due_date"] for i in _past_due(acct, now)]
    return (days_between(min(due), now) if due else 0.0), None


def _uncollectible_invoices(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    return float(sum(1 for i in acct.of(SYSTEM, "invoices") if i.get("status") == "uncollectible")), None


def _failed_payments_30d(acct: AccountData, inputs: Inputs, now: datetime) -> Value:
    since = window_start(now, 30)
    return float(sum(1 for c in acct.of(SYSTEM, "charges")
                     if c.get("status") == "failed" and isinstance(c.get("created"), int) and c["created"] >= since)), None


def moves(acct: AccountData, now: datetime) -> float | None:
    """The MRR of 90 days ago (at midnight 90 days before today) moves 90 days after the first
    midnight at or after a subscription starts, ends or leaves its trial; an open invoice falls
    past due at the midnight after its due date, and its days past due go up every midnight after;
    a failed charge leaves the 30-day count at the midnight 31 days after the day it was made. The
    MRR, the status and the uncollectible invoices move only with new records."""
    stamp, zone = now.timestamp(), now.tzinfo
    moments: list[float] = []
    for sub in acct.of(SYSTEM, "subscriptions"):
        moments += [midnight_after(sub[k], 90, zone, strictly=False) for k in ("created", "ended_at", "canceled_at", "trial_end")
                    if isinstance(sub.get(k), int | float) and not isinstance(sub.get(k), bool)]
    for invoice in acct.of(SYSTEM, "invoices"):
        due = invoice.get("due_date")
        if invoice.get("status") == "open" and isinstance(due, int):
            falls = midnight_after(due, 0, zone, strictly=True)
            moments.append(next_midnight(now) if falls <= stamp else falls)
    moments += [midnight_after(c["created"], 30, zone, strictly=True) for c in acct.of(SYSTEM, "charges")
                if c.get("status") == "failed" and isinstance(c.get("created"), int)]
    return first_after(stamp, moments)


def _metric(kind: str, description: str, compute: object, total_by: str | None = None) -> CatalogueMetric:
    return CatalogueMetric(kind, SYSTEM, description, compute, total_by)  # type: ignore[arg-type]


CATALOGUE: dict[str, CatalogueMetric] = {
    "mrr": _metric("number", "monthly recurring revenue, in the account's currency", _mrr, total_by="mrr_currency"),
    "mrr_currency": _metric("text", "the currency of the MRR (lowercase ISO code)", _mrr_currency),
    "mrr_change_90d": _metric("number", "MRR change over 90 days, percent", _mrr_change_90d),
    "subscription_status": _metric(
        "text", "best subscription status: active, trialing, past_due, canceled, ...", _subscription_status
    ),
    "past_due_invoices": _metric("number", "open invoices past their due date", _past_due_invoices),
    "uncollectible_invoices": _metric("number", "invoices marked uncollectible", _uncollectible_invoices),
    "failed_payments_30d": _metric("number", "failed charges in the last 30 days", _failed_payments_30d),
    "days_past_due": _metric("number", "days the oldest unpaid invoice is overdue", _days_past_due),
}
