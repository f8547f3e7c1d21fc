"""The built-in metric catalogue: metrics healthsync computes from pulled records.

Mappings refer to these by name (``catalogue: open_tickets``); the measure step fills them in
the store. Each source folder declares its own (`connector/sources/<name>/metrics.py`); the two
here are computed from CRM inputs, whichever CRM they come from.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import numpy as np

from .sources import registry
from .sources.base import NA, AccountData, CatalogueMetric, Columnar, Value


def _number(inputs: dict[str, Value], name: str) -> tuple[float | None, str | None]:
    value, reason = inputs.get(name, (NA, f"the mappings have no input '{name}'"))
    return (value if isinstance(value, float) else None), reason


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


CRM_METRICS: dict[str, CatalogueMetric] = {
    "license_utilization": CatalogueMetric(
        "number", "crm", "active users in 30 days / seats purchased, percent", _license_utilization
    ),
    "days_to_renewal": CatalogueMetric("number", "crm", "days until the renewal date", _days_to_renewal),
}


def _given(inputs: dict[str, Any], name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, N/A reasons) of an input column, as `_number` / the inputs dict would give them."""
    if name not in inputs:
        return np.full(n, None, dtype=object), np.full(n, f"the mappings have no input '{name}'", dtype=object)
    col = inputs[name]
    values = col.values.astype(object)
    missing = np.array([v is None or (isinstance(v, float) and v != v) for v in values.tolist()], dtype=bool)
    values[missing] = None
    reasons = np.array([str(r or "N/A") for r in col.na_reason.tolist()], dtype=object)
    reasons[~missing] = None
    return values, reasons


def _license_utilization_columns(inputs: dict[str, Any], n: int, now: datetime) -> Columnar:
    seats, why_seats = _given(inputs, "seats", n)
    active, why_active = _given(inputs, "active_users_30d", n)
    values, reasons = np.full(n, np.nan), np.full(n, None, dtype=object)
    for i, (s, a) in enumerate(zip(seats.tolist(), active.tolist(), strict=True)):
        if not isinstance(s, float):
            reasons[i] = f"seats unknown ({why_seats[i]})"
        elif not isinstance(a, float):
            reasons[i] = f"active users unknown ({why_active[i]})"
        elif s <= 0:
            reasons[i] = f"seats is {s:g}"
        else:
            values[i] = round(100.0 * a / s, 1)
    return values, reasons


def _days_to_renewal_columns(inputs: dict[str, Any], n: int, now: datetime) -> Columnar:
    renewal, why = _given(inputs, "renewal_date", n)
    values, reasons = np.full(n, np.nan), np.full(n, None, dtype=object)
    today = now.date()
    for i, value in enumerate(renewal.tolist()):
        if value is None:
            reasons[i] = f"renewal date unknown ({why[i]})"
        else:
            values[i] = float((date.fromisoformat(value) - today).days)
    return values, reasons


# the same two for every account at once, from the input columns (the rescore's path)
CRM_PAST: dict[str, Callable[[dict[str, Any], int, datetime], Columnar]] = {
    "license_utilization": _license_utilization_columns,
    "days_to_renewal": _days_to_renewal_columns,
}


def catalogue() -> dict[str, CatalogueMetric]:
    """Every catalogue metric: the CRM-input ones, then each registered source's, in registry order."""
    found = dict(CRM_METRICS)
    for plugin in registry.plugins():
        for name, metric in plugin.catalogue.items():
            if name in found:  # a developer error, caught by any test
                raise RuntimeError(f"catalogue metric {name!r} of {plugin.system} is declared twice")
            found[name] = metric
    return found
