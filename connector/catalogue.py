"""The built-in metric catalogue: metrics healthsync computes from pulled records.

Mappings refer to these by name (``catalogue: open_tickets``); the measure step fills them in
the store. Each source folder declares its own (`connector/sources/<name>/metrics.py`); the two
here are computed from CRM inputs, whichever CRM they come from.
"""

from __future__ import annotations

from datetime import date, datetime

from .sources import registry
from .sources.base import NA, AccountData, CatalogueMetric, Value


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


def catalogue() -> dict[str, CatalogueMetric]:
    """Every catalogue metric: the CRM-input ones, then each registered source's, in registry order."""
    found = dict(CRM_METRICS)
    for plugin in registry.plugins():
        for name, metric in plugin.catalogue.items():
            if name in found:  # a developer error, caught by any test
                raise RuntimeError(f"catalogue metric {name!r} of {plugin.system} is declared twice")
            found[name] = metric
    return found
