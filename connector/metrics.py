"""The measure step: pulled records -> input and catalogue metric values per account.

Every value is either a real observation or N/A with a reason a person can act
on ("no Stripe customer matched", "NPS__c: 'n/a' is not a number"); never a
silent 0, never a crash on garbage. Derived (expr) metrics are not stored: the
scoring engine evaluates them from these values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .catalogue import CATALOGUE
from .config.mappings import Mappings
from .store import Store
from .times import iso, parse_iso

NA = None
OPEN_TICKET = {"new", "open", "pending", "hold"}
MRR_STATUSES = {"active", "past_due"}  # trialing pays nothing yet; unpaid and canceled stopped paying
STATUS_RANK = ["active", "trialing", "past_due", "unpaid", "incomplete", "paused", "incomplete_expired", "canceled"]
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
MONTHS_PER = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}  # interval length in months

Value = tuple[Any, str | None]  # (value, N/A reason)


@dataclass
class MeasureSummary:
    accounts: int = 0
    values: int = 0
    changed: int = 0
    not_available: dict[str, int] = field(default_factory=dict)
    mrr_by_currency: dict[str, float] = field(default_factory=dict)


@dataclass
class AccountData:
    """Everything pulled for one account."""

    crm: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (system, record), Salesforce first
    customers: list[str] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    charges: list[dict[str, Any]] = field(default_factory=list)
    organizations: list[str] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)


def measure(store: Store, mappings: Mappings, now: datetime | None = None) -> MeasureSummary:
    """Compute and store every input and catalogue metric the mappings use, for every account."""
    now = now or datetime.now(UTC)
    summary = MeasureSummary()
    data = _gather(store)
    names = mappings.stored_names()
    catalogue_of = {m: d.catalogue for m, d in mappings.metrics.items() if d.catalogue}
    ids = store.account_ids().tolist()
    summary.accounts = len(ids)
    empty = AccountData()

    def rows() -> Iterator[tuple[int, str, Any, str | None]]:
        """One account at a time, consumed by the store as it is made (memory: one row wide)."""
        for account_id in ids:
            acct = data.pop(account_id, empty)
            inputs = {name: _input(acct, mappings, name) for name in mappings.inputs}
            computed: dict[str, Value] = {}
            for name in names:
                if name in inputs:
                    value, reason = inputs[name]
                else:
                    key = catalogue_of.get(name, name)
                    if key not in computed:
                        computed[key] = _catalogue(key, acct, inputs, now)
                    value, reason = computed[key]
                if value is None:
                    summary.not_available[name] = summary.not_available.get(name, 0) + 1
                summary.values += 1
                yield account_id, name, value, reason
            mrr = computed.get("mrr")
            if mrr and mrr[0]:
                currency = computed.get("mrr_currency") or _catalogue("mrr_currency", acct, inputs, now)
                if currency[0]:
                    total = summary.mrr_by_currency.get(currency[0], 0.0) + mrr[0]
                    summary.mrr_by_currency[currency[0]] = round(total, 2)

    summary.changed = store.set_values(rows(), iso(now))
    return summary


# ------------------------------------------------------------------ gathering


def _gather(store: Store) -> dict[int, AccountData]:
    data: dict[int, AccountData] = defaultdict(AccountData)
    for system, obj in (("salesforce", "Account"), ("hubspot", "companies")):
        owner = store.linked(system, obj)
        for rid, rec in store.records(system, obj):
            if rid in owner:
                data[owner[rid]].crm.append((system, rec))
    customers = store.linked("stripe", "customers")
    for cid, account_id in customers.items():
        data[account_id].customers.append(cid)
    for obj, attr in (("subscriptions", "subscriptions"), ("invoices", "invoices"), ("charges", "charges")):
        for _rid, rec in store.records("stripe", obj):
            account_id = customers.get(str(rec.get("customer") or ""))
            if account_id is not None:
                getattr(data[account_id], attr).append(rec)
    orgs = store.linked("zendesk", "organizations")
    for oid, account_id in orgs.items():
        data[account_id].organizations.append(oid)
    for _rid, rec in store.records("zendesk", "tickets"):
        account_id = orgs.get(str(rec.get("organization_id")))
        if account_id is not None:
            data[account_id].tickets.append(rec)
    return data


# ------------------------------------------------------------------ inputs


def _input(acct: AccountData, mappings: Mappings, name: str) -> Value:
    spec = mappings.inputs[name]
    reasons = []
    for system, rec in acct.crm:
        crm_field = getattr(spec, system, None)
        if not crm_field:
            continue
        raw = rec.get(crm_field)
        if raw is None or raw == "":
            reasons.append(f"{system} {crm_field} is empty")
            continue
        value, problem = _convert(raw, spec.type)
        if problem:
            return NA, f"{system} {crm_field}: {problem}"
        return value, None
    if not acct.crm:
        return NA, "no CRM record"
    return NA, "; ".join(reasons) or "not mapped for this account's CRM"


def _convert(raw: Any, kind: str) -> tuple[Any, str | None]:
    if kind == "number":
        if isinstance(raw, bool):
            return NA, f"{raw!r} is not a number"
        try:
            number = float(raw) if isinstance(raw, (int, float)) else float(str(raw).strip().replace(",", ""))
        except ValueError:
            return NA, f"{str(raw)[:40]!r} is not a number"
        if math.isnan(number) or math.isinf(number):
            return NA, f"{raw!r} is not a finite number"
        return number, None
    if kind == "date":
        parsed = _date(raw)
        return (parsed.isoformat(), None) if parsed else (NA, f"{str(raw)[:40]!r} is not a date")
    if kind == "boolean":
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes"):
            return True, None
        if text in ("false", "0", "no"):
            return False, None
        return NA, f"{str(raw)[:40]!r} is not true/false"
    return str(raw), None


def _date(raw: Any) -> date | None:
    text = str(raw).strip()
    try:
        if text.isdigit() and len(text) >= 12:  # HubSpot dates: epoch milliseconds
            return datetime.fromtimestamp(int(text) / 1000, UTC).date()
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _number(inputs: dict[str, Value], name: str) -> tuple[float | None, str | None]:
    value, reason = inputs.get(name, (NA, f"the mappings have no input '{name}'"))
    return (value if isinstance(value, float) else None), reason


# ------------------------------------------------------------------ catalogue


def _catalogue(key: str, acct: AccountData, inputs: dict[str, Value], now: datetime) -> Value:
    fn = _COMPUTE.get(key)
    if fn is None:  # validate refuses unknown catalogue names; this is a guard, not a path
        return NA, f"catalogue metric {key} is not implemented"
    return fn(acct, inputs, now)


Compute = Callable[[AccountData, dict[str, Value], datetime], Value]


def _needs(system: str) -> Callable[[Callable[[AccountData, datetime], Value]], Compute]:
    """N/A with the reason when the account has no record of `system` to compute from."""
    reason = {"stripe": "no Stripe customer matched to this account",
              "zendesk": "no Zendesk organization matched to this account"}[system]

    def decorate(fn: Callable[[AccountData, datetime], Value]) -> Compute:
        def wrapped(acct: AccountData, inputs: dict[str, Value], now: datetime) -> Value:
            linked = acct.customers if system == "stripe" else acct.organizations
            return fn(acct, now) if linked else (NA, reason)

        return wrapped

    return decorate


_needs_stripe = _needs("stripe")
_needs_zendesk = _needs("zendesk")


def _mrr_at(acct: AccountData, at: datetime | None) -> tuple[dict[str, float], str | None]:
    """MRR per currency now (at=None: by current status) or at a past moment (by dates)."""
    totals: dict[str, float] = defaultdict(float)
    for sub in acct.subscriptions:
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
            price = item.get("price") or item.get("plan") or {}
            recurring = price.get("recurring") or ({"interval": price.get("interval"), "interval_count": price.get("interval_count")} if price.get("interval") else None)
            amount = price.get("unit_amount")
            if amount is None and price.get("unit_amount_decimal") is not None:
                amount = float(price["unit_amount_decimal"])
            currency = str(price.get("currency") or sub.get("currency") or "").lower()
            if not recurring or recurring.get("interval") not in MONTHS_PER:
                return {}, f"subscription {sub.get('id')} has a price without a recurring interval"
            if amount is None or not currency:
                return {}, f"subscription {sub.get('id')} has a price without unit amount (tiered pricing is not supported)"
            quantity = item.get("quantity") if item.get("quantity") is not None else 1
            months = MONTHS_PER[recurring["interval"]] * (recurring.get("interval_count") or 1)
            minor = 1 if currency in ZERO_DECIMAL else 100
            totals[currency] += float(amount) * float(quantity) / minor / months
    return dict(totals), None


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


@_needs_stripe
def _mrr(acct: AccountData, now: datetime) -> Value:
    _currency, value, problem = _current_mrr(acct)
    return (NA, problem) if problem else (value, None)


@_needs_stripe
def _mrr_currency(acct: AccountData, now: datetime) -> Value:
    currency, _value, problem = _current_mrr(acct)
    if problem:
        return NA, problem
    return (currency, None) if currency else (NA, "no paying subscription")


@_needs_stripe
def _mrr_change_90d(acct: AccountData, now: datetime) -> Value:
    totals_now, problem = _mrr_at(acct, None)
    totals_then, problem_then = _mrr_at(acct, now - timedelta(days=90))
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


@_needs_stripe
def _subscription_status(acct: AccountData, now: datetime) -> Value:
    statuses = {s.get("status") for s in acct.subscriptions if s.get("status")}
    if not statuses:
        return NA, "no subscriptions"
    ranked = sorted(statuses, key=lambda s: STATUS_RANK.index(s) if s in STATUS_RANK else len(STATUS_RANK))
    return ranked[0], None


def _past_due(acct: AccountData, now: datetime) -> list[dict[str, Any]]:
    stamp = now.timestamp()
    return [i for i in acct.invoices
            if i.get("status") == "open" and isinstance(i.get("due_date"), int) and i["due_date"] < stamp]


@_needs_stripe
def _past_due_invoices(acct: AccountData, now: datetime) -> Value:
    return float(len(_past_due(acct, now))), None


@_needs_stripe
def _days_past_due(acct: AccountData, now: datetime) -> Value:
    due = [i["due_date"] for i in _past_due(acct, now)]
    return (float((now.timestamp() - min(due)) // 86400) if due else 0.0), None


@_needs_stripe
def _uncollectible_invoices(acct: AccountData, now: datetime) -> Value:
    return float(sum(1 for i in acct.invoices if i.get("status") == "uncollectible")), None


@_needs_stripe
def _failed_payments_30d(acct: AccountData, now: datetime) -> Value:
    since = (now - timedelta(days=30)).timestamp()
    return float(sum(1 for c in acct.charges
                     if c.get("status") == "failed" and isinstance(c.get("created"), int) and c["created"] >= since)), None


def _ticket_time(value: Any) -> datetime | None:
    try:
        return parse_iso(str(value))
    except ValueError:
        return None


@_needs_zendesk
def _open_tickets(acct: AccountData, now: datetime) -> Value:
    return float(sum(1 for t in acct.tickets if t.get("status") in OPEN_TICKET)), None


@_needs_zendesk
def _urgent_tickets(acct: AccountData, now: datetime) -> Value:
    return float(sum(1 for t in acct.tickets if t.get("status") in OPEN_TICKET and t.get("priority") == "urgent")), None


@_needs_zendesk
def _tickets_30d(acct: AccountData, now: datetime) -> Value:
    since = now - timedelta(days=30)
    return float(sum(1 for t in acct.tickets if (_ticket_time(t.get("created_at")) or since) > since)), None


@_needs_zendesk
def _csat_90d(acct: AccountData, now: datetime) -> Value:
    since = now - timedelta(days=90)
    scores = [t.get("satisfaction") for t in acct.tickets
              if t.get("satisfaction") in ("good", "bad") and (_ticket_time(t.get("updated_at")) or since) > since]
    if not scores:
        return NA, "no rated tickets in 90 days"
    return round(100.0 * scores.count("good") / len(scores), 1), None


def _license_utilization(acct: AccountData, inputs: dict[str, Value], now: datetime) -> Value:
    seats, why_seats = _number(inputs, "seats")
    active, why_active = _number(inputs, "active_users_30d")
    if seats is None:
        return NA, f"seats unknown ({why_seats})"
    if active is None:
        return NA, f"active users unknown ({why_active})"
    if seats <= 0:
        return NA, f"seats is {seats:g}"
    return round(100.0 * active / seats, 1), None


def _days_to_renewal(acct: AccountData, inputs: dict[str, Value], now: datetime) -> Value:
    value, reason = inputs.get("renewal_date", (NA, "the mappings have no input 'renewal_date'"))
    if value is None:
        return NA, f"renewal date unknown ({reason})"
    return float((date.fromisoformat(value) - now.date()).days), None


_COMPUTE: dict[str, Compute] = {
    "mrr": _mrr,
    "mrr_currency": _mrr_currency,
    "mrr_change_90d": _mrr_change_90d,
    "subscription_status": _subscription_status,
    "past_due_invoices": _past_due_invoices,
    "uncollectible_invoices": _uncollectible_invoices,
    "failed_payments_30d": _failed_payments_30d,
    "days_past_due": _days_past_due,
    "open_tickets": _open_tickets,
    "urgent_tickets": _urgent_tickets,
    "tickets_30d": _tickets_30d,
    "csat_90d": _csat_90d,
    "license_utilization": _license_utilization,
    "days_to_renewal": _days_to_renewal,
}
if set(_COMPUTE) != set(CATALOGUE):  # pragma: no cover - a developer error, caught by any test
    raise RuntimeError("metrics.py must compute exactly the catalogue's metrics")
