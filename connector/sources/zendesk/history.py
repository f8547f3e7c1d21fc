"""Zendesk tickets as they were at a past moment, from their own timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...times import parse_iso


def _time(value: Any) -> datetime | None:
    try:
        return parse_iso(str(value)) if value else None
    except ValueError:
        return None


def as_of(obj: str, rec: dict[str, Any], at: datetime) -> dict[str, Any] | None:
    """None for a ticket not created yet. A ticket solved or rated after `at` was still open and
    unrated then (its last update is the latest a change can be dated)."""
    if obj != "tickets":
        created = _time(rec.get("created_at"))
        return rec if created is None or created <= at else None
    created = _time(rec.get("created_at"))
    if created is None or created > at:
        return None
    updated = _time(rec.get("updated_at"))
    if updated is not None and updated > at:
        status = "open" if rec.get("status") in ("solved", "closed") else rec.get("status")
        return {**rec, "status": status, "satisfaction": None}
    return rec
