"""The measure step: pulled records -> input and catalogue metric values per account.

Every value is either a real observation or N/A with a reason a person can act
on ("no Stripe customer matched", "NPS__c: 'n/a' is not a number"); never a
silent 0, never a crash on garbage. Derived (expr) metrics are not stored: the
scoring engine evaluates them from these values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from .catalogue import catalogue
from .columns import Columnwise
from .config.mappings import Mappings
from .sources import registry
from .sources.base import NA, AccountData, CatalogueMetric, Value
from .store import Column, Store
from .times import iso


@dataclass
class MeasureSummary:
    accounts: int = 0
    values: int = 0
    changed: int = 0
    not_available: dict[str, int] = field(default_factory=dict)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> unit -> sum (MRR per currency)


def measure(store: Store, mappings: Mappings, now: datetime | None = None,
            per_account: bool = False, names: Iterable[str] | None = None) -> MeasureSummary:
    """Compute and store every input and catalogue metric the mappings use, for every account.

    Catalogue metrics with a column-wise form that holds live (`Past.live`: usage, and the two from
    CRM inputs; `connector/columns.py`) are computed for all accounts at once; the others, and the
    inputs, account by account over the gathered records.
    `per_account` takes the second path for every metric (the reference the tests hold the first to).
    `names`: only these stored names (a preview of one source); every input is still read.
    """
    now = now or datetime.now(UTC)
    summary = MeasureSummary()
    names = mappings.stored_names() if names is None else [n for n in mappings.stored_names() if n in set(names)]
    known = catalogue()
    compute = calculator(known, now)
    catalogue_of = {m: d.catalogue for m, d in mappings.metrics.items() if d.catalogue}
    ids = store.account_ids()
    wise = Columnwise(store, ids)
    keys = list(dict.fromkeys(catalogue_of.get(n, n) for n in names if n not in mappings.inputs))
    totalled = [k for k in keys if known[k].total_by]  # e.g. MRR per currency, for the pull summary
    keys += [u for u in dict.fromkeys(known[k].total_by or "" for k in totalled) if u not in keys]
    wide = [] if per_account else [k for k in keys if wise.has(k, live=True)]
    narrow = [k for k in keys if k not in wide]
    data = gather(store, only=_objects_read({known[k].system for k in narrow}))
    summary.accounts = len(ids)
    empty = AccountData()
    inputs: dict[str, list[Value]] = {name: [] for name in mappings.inputs}
    computed: dict[str, list[Value]] = {k: [] for k in narrow}
    for account_id in ids.tolist():
        acct = data.pop(account_id, empty)
        given = {name: input_value(acct, mappings, name) for name in mappings.inputs}
        for name, value in given.items():
            inputs[name].append(value)
        for k in narrow:
            computed[k].append(compute(k, acct, given))
    if wide:
        columns = {name: _column(values, mappings.inputs[name].type == "number") for name, values in inputs.items()}
        for k in wide:
            computed[k] = _values(wise.column(k, now, columns))
    computed.update(inputs)
    by_name = {name: computed[catalogue_of.get(name, name) if name not in mappings.inputs else name] for name in names}
    for key in totalled:
        for value, unit in zip(computed[key], computed[known[key].total_by or ""], strict=True):
            _total(summary, key, value, unit)

    def rows() -> Iterator[tuple[int, str, Any, str | None]]:
        for i, account_id in enumerate(ids.tolist()):
            for name in names:
                value, reason = by_name[name][i]
                if value is None:
                    summary.not_available[name] = summary.not_available.get(name, 0) + 1
                summary.values += 1
                yield account_id, name, value, reason

    summary.changed = store.set_values(rows(), iso(now))
    return summary


def _objects_read(systems: set[str]) -> set[tuple[str, str]]:
    """What the per-account path reads: every CRM's account records (the inputs), and the records
    of the sources with a metric computed account by account."""
    found = set()
    for plugin in registry.plugins():
        if plugin.identity.role != "linked":
            found.add((plugin.system, plugin.identity.obj))
        if plugin.system in systems:
            found.update((plugin.system, b.obj) for b in plugin.belongs)
    return found


def _column(values: list[Value], number: bool) -> Column:
    """Per-account (value, reason) pairs as a stored name's column (what column-wise metrics read)."""
    n = len(values)
    data = np.array([np.nan if v is None else v for v, _r in values], dtype=float) if number else \
        np.array([v for v, _r in values], dtype=object)
    return Column(data, np.full(n, None, dtype=object), np.array([r for _v, r in values], dtype=object))


def _values(column: Column) -> list[Value]:
    out: list[Value] = []
    for value, reason in zip(column.values.tolist(), column.na_reason.tolist(), strict=True):
        if value is None or (isinstance(value, float) and value != value):
            out.append((NA, reason or "N/A"))
        else:
            out.append((value, None))
    return out


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
