"""Stripe records as they were at a past moment, and the outcomes Stripe tells: cancellations and
MRR drops. Only the records' own timestamps are used: nothing known after the moment leaks in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..base import AccountData, Columnar, Event, OutcomeRule, Past, Table, Tables
from ..days import ordinals_of, today_ordinal, window_start
from .metrics import MRR_STATUSES, STATUS_RANK, SYSTEM, _mrr_at, _single, item_monthly

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


# ------------------------------------------------------------------ the same, column-wise


def _int(value: Any) -> float:
    return float(value) if isinstance(value, int) else np.nan


def _subscription(rec: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(_int(rec.get("created")), _int(rec.get("ended_at") or rec.get("canceled_at")),
             _int(rec.get("trial_end")), rec.get("status"))]


def _items(sub: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One row per subscription item: its monthly amount and currency, or why it has none (the
    same arithmetic as metrics._mrr_at, so sums agree to the bit)."""
    head = _subscription(sub)[0]
    rows = []
    for item in (sub.get("items") or {}).get("data") or []:
        currency, monthly, problem = item_monthly(sub, item)
        rows.append((*head, currency, np.nan, problem) if problem else (*head, currency, monthly, ""))
    return rows


def _invoice(rec: dict[str, Any]) -> list[tuple[Any, ...]]:
    moved = rec.get("status_transitions") or {}
    later = [moved.get(k) for k in ("paid_at", "voided_at", "marked_uncollectible_at")]
    stamps = [float(t) for t in later if isinstance(t, int)]
    return [(_int(rec.get("created")), rec.get("status"), _int(rec.get("due_date")), max(stamps) if stamps else np.nan)]


def _charge(rec: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(_int(rec.get("created")), rec.get("status"))]


SUBSCRIPTION = {"created": float, "ended": float, "trial_end": float, "status": str}
TABLES = {
    "subscriptions": Table("subscriptions", SUBSCRIPTION, _subscription),
    "items": Table("subscriptions", {**SUBSCRIPTION, "currency": str, "monthly": float, "problem": str}, _items),
    "invoices": Table("invoices", {"created": float, "status": str, "due": float, "moved": float}, _invoice),
    "charges": Table("charges", {"created": float, "status": str}, _charge),
}


def _status_then(rows: Any, stamp: float) -> np.ndarray:
    """Each subscription's status at `stamp` (as_of's roll-back)."""
    status = rows["status"]
    ran = np.where(np.isin(status, ["canceled", "incomplete_expired"]), "active", status)
    return np.where(rows["ended"] <= stamp, "canceled", np.where(rows["trial_end"] > stamp, "trialing", ran))


def _mrr_where(t: Tables, paying: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MRR, currency, why N/A) per account from the item rows `paying`, as metrics._mrr_at and
    _single give them: the first problem wins, then several currencies, else the rounded sum."""
    items, n = t["items"], t.n
    values, currency = np.full(n, np.nan), np.full(n, None, dtype=object)
    reasons = np.full(n, None, dtype=object)
    problem = paying & (items["problem"] != "")
    rows = np.flatnonzero(problem)
    owners, first = np.unique(items.account[rows], return_index=True)
    reasons[owners] = items["problem"][rows[first]].tolist()
    good = paying & ~problem
    names, codes = items.codes("currency")
    width = max(len(names), 1)
    key = items.account[good] * width + codes[good]
    present = np.bincount(key, minlength=n * width).reshape(n, width) > 0
    sums = np.bincount(key, weights=items["monthly"][good], minlength=n * width).reshape(n, width)
    count = present.sum(axis=1)
    ok = reasons == None  # noqa: E711
    zero = ok & (count == 0)
    values[zero] = 0.0
    one = np.flatnonzero(ok & (count == 1))
    which = present[one].argmax(axis=1)
    values[one] = [round(v, 2) for v in sums[one, which].tolist()]
    currency[one] = names[which].tolist()
    for i in np.flatnonzero(ok & (count > 1)).tolist():
        listed = ", ".join(f"{names[c]} {sums[i, c]:,.2f}" for c in np.flatnonzero(present[i]).tolist())
        reasons[i] = f"MRR is in several currencies ({listed})"
    return values, currency, reasons


def _paying_now(t: Tables, stamp: float) -> np.ndarray:
    items = t["items"]
    return (items["created"] <= stamp) & np.isin(_status_then(items, stamp), list(MRR_STATUSES))


def _mrr_now(t: Tables, at: datetime) -> Columnar:
    values, _currency, reasons = _mrr_where(t, _paying_now(t, at.timestamp()))
    return values, reasons


def _mrr_currency_now(t: Tables, at: datetime) -> Columnar:
    _values, currency, reasons = _mrr_where(t, _paying_now(t, at.timestamp()))
    none = (currency == None) & (reasons == None)  # noqa: E711
    reasons[none] = "no paying subscription"
    return currency, reasons


def _mrr_change(t: Tables, at: datetime) -> Columnar:
    stamp, then = at.timestamp(), window_start(at, 90)
    items = t["items"]
    ran_then = ((items["created"] <= stamp) & (items["created"] <= then) & ~(items["ended"] <= then)
                & ~(items["trial_end"] > then))
    now_v, now_c, now_r = _mrr_where(t, _paying_now(t, stamp))
    then_v, then_c, then_r = _mrr_where(t, ran_then)
    values = np.full(t.n, np.nan)
    reasons = np.where(now_r != None, now_r, then_r)  # noqa: E711
    clear = reasons == None  # noqa: E711
    reasons[clear & (then_v == 0)] = "no MRR 90 days ago"
    for i in np.flatnonzero(clear & (then_v != 0) & (now_c != None) & (then_c != None) & (now_c != then_c)).tolist():  # noqa: E711
        reasons[i] = f"the currency changed ({then_c[i]} -> {now_c[i]})"
    rows = np.flatnonzero(reasons == None)  # noqa: E711
    values[rows] = [round(100.0 * (a - b) / b, 2) for a, b in zip(now_v[rows].tolist(), then_v[rows].tolist(), strict=True)]
    return values, reasons


def _status_best(t: Tables, at: datetime) -> Columnar:
    subs, stamp = t["subscriptions"], at.timestamp()
    status = _status_then(subs, stamp)
    seen = (subs["created"] <= stamp) & (status != "")
    order = {name: i for i, name in enumerate(STATUS_RANK)}
    codes = np.array([order.get(s, len(STATUS_RANK)) for s in status.tolist()], dtype=np.int64)
    best = np.full(t.n, len(STATUS_RANK) + 1)
    np.minimum.at(best, subs.account[seen], codes[seen])
    values = np.full(t.n, None, dtype=object)
    known = best < len(STATUS_RANK)
    values[known] = np.array(STATUS_RANK, dtype=object)[best[known]]
    for i in np.flatnonzero(best == len(STATUS_RANK)).tolist():  # only statuses Stripe does not list
        values[i] = str(status[seen & (subs.account == i)][0])
    reasons = np.where(values == None, "no subscriptions", None).astype(object)  # noqa: E711
    return values, reasons


def _invoices_then(t: Tables, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    rows = t["invoices"]
    existed = rows["created"] <= stamp
    status = np.where((rows["status"] != "open") & (rows["moved"] > stamp), "open", rows["status"])
    return existed, status


def _past_due_rows(t: Tables, stamp: float, today: float) -> np.ndarray:
    """Invoices open at `stamp` whose due date is a day before `today` (its midnight) or earlier."""
    existed, status = _invoices_then(t, stamp)
    return existed & (status == "open") & (t["invoices"]["due"] < today)


def _past_due(t: Tables, at: datetime) -> Columnar:
    return t.count("invoices", _past_due_rows(t, at.timestamp(), window_start(at, 0))), None


def _days_due(t: Tables, at: datetime) -> Columnar:
    due = _past_due_rows(t, at.timestamp(), window_start(at, 0))
    oldest = np.full(t.n, np.inf)
    np.minimum.at(oldest, t["invoices"].account[due], t["invoices"]["due"][due])
    days = np.zeros(t.n)
    some = ~np.isinf(oldest)
    days[some] = today_ordinal(at) - ordinals_of(oldest[some], at.tzinfo)
    return days, None


def _uncollectible(t: Tables, at: datetime) -> Columnar:
    existed, status = _invoices_then(t, at.timestamp())
    return t.count("invoices", existed & (status == "uncollectible")), None


def _failed_30d(t: Tables, at: datetime) -> Columnar:
    rows, stamp = t["charges"], at.timestamp()
    since = window_start(at, 30)
    return t.count("charges", (rows["created"] <= stamp) & (rows["status"] == "failed") & (rows["created"] >= since)), None


PAST = Past(tables=TABLES, metrics={
    "mrr": _mrr_now, "mrr_currency": _mrr_currency_now, "mrr_change_90d": _mrr_change,
    "subscription_status": _status_best, "past_due_invoices": _past_due, "days_past_due": _days_due,
    "uncollectible_invoices": _uncollectible, "failed_payments_30d": _failed_30d,
})
