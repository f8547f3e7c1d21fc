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
from .sources.days import next_midnight


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


def _next_midnight(inputs: dict[str, Value], now: datetime) -> float | None:
    """Days to renewal go down at each midnight of `now`'s zone, once the renewal date is known."""
    if inputs.get("renewal_date", (None, None))[0] is None:
        return None
    return next_midnight(now)


# when a CRM metric of an account moves with time alone: (its input values, now) -> epoch seconds
CRM_MOVES: dict[str, Callable[[dict[str, Value], datetime], float | None]] = {
    "license_utilization": lambda inputs, now: None,
    "days_to_renewal": _next_midnight,
}

CRM_METRICS: dict[str, CatalogueMetric] = {
    "license_utilization": CatalogueMetric(
        "number", "crm", "active users in 30 days / seats purchased, percent", _license_utilization
    ),
    "days_to_renewal": CatalogueMetric("number", "crm", "days until the renewal date", _days_to_renewal),
}


def _given(inputs: dict[str, Any], name: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, known, N/A reasons where not known) of an input column, as the inputs dict gives them."""
    if name not in inputs:
        return (np.full(n, None, dtype=object), np.zeros(n, dtype=bool),
                np.full(n, f"the mappings have no input '{name}'", dtype=object))
    col = inputs[name]
    values = col.values
    known = ~np.isnan(values) if values.dtype != object else \
        np.array([v is not None and not (isinstance(v, float) and v != v) for v in values.tolist()], dtype=bool)
    reasons = np.full(n, None, dtype=object)
    reasons[~known] = [str(r or "N/A") for r in col.na_reason[~known].tolist()]
    return values, known, reasons


def _explained(template: str, reasons: np.ndarray, rows: np.ndarray) -> list[str]:
    made: dict[Any, str] = {}
    return [made.setdefault(r, template.format(r)) for r in reasons[rows].tolist()]


def _license_utilization_columns(inputs: dict[str, Any], n: int, now: datetime) -> Columnar:
    seats, has_seats, why_seats = _given(inputs, "seats", n)
    active, has_active, why_active = _given(inputs, "active_users_30d", n)
    has_seats &= seats.dtype != object
    has_active &= active.dtype != object
    values, reasons = np.full(n, np.nan), np.full(n, None, dtype=object)
    no_seats = np.flatnonzero(~has_seats)
    reasons[no_seats] = _explained("seats unknown ({})", why_seats, no_seats)
    no_active = np.flatnonzero(has_seats & ~has_active)
    reasons[no_active] = _explained("active users unknown ({})", why_active, no_active)
    both = has_seats & has_active
    bad = np.flatnonzero(both & (np.where(both, seats, 1.0).astype(float) <= 0))
    reasons[bad] = [f"seats is {v:g}" for v in seats[bad].tolist()]
    good = np.flatnonzero(both & (np.where(both, seats, 0.0).astype(float) > 0))
    values[good] = [round(100.0 * a / s, 1) for a, s in zip(active[good].tolist(), seats[good].tolist(), strict=True)]
    return values, reasons


def _days_to_renewal_columns(inputs: dict[str, Any], n: int, now: datetime) -> Columnar:
    renewal, known, why = _given(inputs, "renewal_date", n)
    values, reasons = np.full(n, np.nan), np.full(n, None, dtype=object)
    unknown = np.flatnonzero(~known)
    reasons[unknown] = _explained("renewal date unknown ({})", why, unknown)
    rows = np.flatnonzero(known)
    today = now.date()
    days: dict[str, float] = {}
    values[rows] = [days.setdefault(v, float((date.fromisoformat(v) - today).days)) for v in renewal[rows].tolist()]
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
