"""CSM overrides entered in CRM input fields, turned into audited store overrides."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from ..config.mappings import Mappings
from ..store import Store
from .frame import Frame, iso


def sync_crm_overrides(store: Store, mappings: Mappings, frame: Frame, now: datetime) -> list[str]:
    """Start, replace or end CRM-sourced overrides; return warnings about rejected ones."""
    warnings: list[str] = []
    stamp = iso(now)
    for name, score in mappings.scores.items():
        spec = score.definition.override
        if spec is None:
            continue
        kind = "status" if spec.status else "score"
        field = spec.status or spec.score
        assert field is not None
        values = frame.column(field)
        reasons = frame.column(spec.reason)
        expires = frame.column(spec.expires) if spec.expires else None
        active = {o["account_id"]: o for o in store.active_overrides(name, stamp)}
        present = ~(values == None) if values.dtype == object else ~np.isnan(values)  # noqa: E711
        for i in np.flatnonzero(present):
            account_id = int(frame.ids[i])
            value = _text(values[i])
            reason = (reasons[i] or "").strip() if isinstance(reasons[i], str) else ""
            if not reason:
                warnings.append(
                    f"account {account_id}: {name} override '{value}' ignored: "
                    f"input '{spec.reason}' (the reason) is empty"
                )
                continue
            until = expires[i] if expires is not None and isinstance(expires[i], str) else None
            expires_at = f"{until[:10]}T23:59:59Z" if until else iso(now + timedelta(days=spec.default_days))
            if expires_at <= stamp:
                continue
            current = active.get(account_id)
            if current is not None and (current["kind"], current["value"], current["reason"]) == (kind, value, reason):
                if until is None or current["expires_at"] == expires_at:
                    continue
            store.set_override(account_id, name, kind, value, reason, expires_at, "crm", f"crm:{field}", stamp)
        for account_id, current in active.items():
            i = int(np.searchsorted(frame.ids, account_id))
            if current["source"] == "crm" and (i >= frame.n or frame.ids[i] != account_id or not present[i]):
                store.end_override(current["id"], "cleared in CRM", f"crm:{field}", stamp)
    return warnings


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
