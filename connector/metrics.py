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
from datetime import UTC, date, datetime
from typing import Any

from .catalogue import catalogue
from .config.mappings import Mappings
from .sources import registry
from .sources.base import NA, AccountData, CatalogueMetric, Value
from .store import Store
from .times import iso


@dataclass
class MeasureSummary:
    accounts: int = 0
    values: int = 0
    changed: int = 0
    not_available: dict[str, int] = field(default_factory=dict)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> unit -> sum (MRR per currency)


def measure(store: Store, mappings: Mappings, now: datetime | None = None) -> MeasureSummary:
    """Compute and store every input and catalogue metric the mappings use, for every account."""
    now = now or datetime.now(UTC)
    summary = MeasureSummary()
    data = gather(store)
    names = mappings.stored_names()
    known = catalogue()
    compute = calculator(known, now)
    catalogue_of = {m: d.catalogue for m, d in mappings.metrics.items() if d.catalogue}
    totalled = [key for key in dict.fromkeys(catalogue_of.values()) if known[key].total_by]
    ids = store.account_ids().tolist()
    summary.accounts = len(ids)
    empty = AccountData()

    def rows() -> Iterator[tuple[int, str, Any, str | None]]:
        """One account at a time, consumed by the store as it is made (memory: one row wide)."""
        for account_id in ids:
            acct = data.pop(account_id, empty)
            inputs = {name: input_value(acct, mappings, name) for name in mappings.inputs}
            computed: dict[str, Value] = {}
            for name in names:
                if name in inputs:
                    value, reason = inputs[name]
                else:
                    key = catalogue_of.get(name, name)
                    if key not in computed:
                        computed[key] = compute(key, acct, inputs)
                    value, reason = computed[key]
                if value is None:
                    summary.not_available[name] = summary.not_available.get(name, 0) + 1
                summary.values += 1
                yield account_id, name, value, reason
            for key in totalled:  # e.g. MRR per currency, for the pull summary
                unit_key = known[key].total_by or ""
                if key in computed:
                    _total(summary, key, computed[key], computed.get(unit_key) or compute(unit_key, acct, inputs))

    summary.changed = store.set_values(rows(), iso(now))
    return summary


def calculator(known: dict[str, CatalogueMetric], now: datetime) -> Callable[[str, AccountData, dict[str, Value]], Value]:
    """compute(catalogue key, account, input values) at `now`: N/A with the source's reason when the
    account has no record of the metric's source."""
    unmatched = {p.system: p.unmatched for p in registry.plugins()}

    def compute(key: str, acct: AccountData, inputs: dict[str, Value]) -> Value:
        metric = known[key]
        if metric.system in unmatched and not acct.linked.get(metric.system):
            return NA, unmatched[metric.system]
        return metric.compute(acct, inputs, now)

    return compute


def _total(summary: MeasureSummary, key: str, value: Value, unit: Value) -> None:
    if value[0] and unit[0]:
        by_unit = summary.totals.setdefault(key, {})
        by_unit[unit[0]] = round(by_unit.get(unit[0], 0.0) + value[0], 2)


# ------------------------------------------------------------------ gathering


def gather(store: Store, only: set[tuple[str, str]] | None = None) -> dict[int, AccountData]:
    """Each account's CRM records, the ids of its matched records and the records that belong to them
    (with `only`: just those (system, object) records, e.g. what an outcome reads)."""
    data: dict[int, AccountData] = defaultdict(AccountData)
    for plugin in registry.plugins():
        system, rule = plugin.system, plugin.identity
        owner = store.linked(system, rule.obj)
        for rid, account_id in owner.items():
            data[account_id].linked.setdefault(system, []).append(rid)
        if rule.role != "linked" and (only is None or (system, rule.obj) in only):
            for rid, rec in store.records(system, rule.obj):
                if rid in owner:
                    data[owner[rid]].crm.append((system, rec))
        for belongs in plugin.belongs:
            if only is not None and (system, belongs.obj) not in only:
                continue
            parent = owner if belongs.parent == rule.obj else store.linked(system, belongs.parent)
            for _rid, rec in store.records(system, belongs.obj):
                account_id = parent.get(str(rec.get(belongs.via) or ""))
                if account_id is not None:
                    data[account_id].records.setdefault((system, belongs.obj), []).append(rec)
    return data


# ------------------------------------------------------------------ inputs


def input_value(acct: AccountData, mappings: Mappings, name: str) -> Value:
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
