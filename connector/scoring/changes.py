"""What a rescore changes: status transitions per segment model, the biggest movers, stale versions.

A preview (`plan`, `run --dry-run`) scores with the mappings as they are now and
compares the result with the scores the store holds, so an admin who edited a
threshold sees "Yellow -> Red 12" before anything is written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Move:
    """One account whose score or status a rescore changes."""

    account_id: int
    account: str  # its name, or its key
    model: str | None
    before: float | None
    after: float | None
    status_before: str | None
    status_after: str | None

    @property
    def delta(self) -> float:
        """Points moved; a score appearing or disappearing counts as the whole scale."""
        if self.before is None or self.after is None:
            return 0.0 if self.before is self.after else 100.0
        return self.after - self.before


@dataclass
class ScoreChanges:
    """One named score, stored vs recomputed."""

    score: str
    accounts: int = 0
    moves: list[Move] = field(default_factory=list)  # biggest |delta| first
    transitions: dict[str, Counter[tuple[str | None, str | None]]] = field(default_factory=dict)  # model -> ...
    stale: Counter[str] = field(default_factory=Counter)  # stored mappings version (not the current one) -> accounts

    def changed_status(self) -> int:
        return sum(sum(c.values()) for c in self.transitions.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "score": self.score, "accounts": self.accounts, "moved": len(self.moves),
            "status_changes": self.changed_status(),
            "transitions": {model: [{"from": a, "to": b, "accounts": n} for (a, b), n in c.most_common()]
                            for model, c in self.transitions.items()},
            "movers": [{"account_id": m.account_id, "account": m.account, "model": m.model, "before": m.before,
                        "after": m.after, "status_before": m.status_before, "status_after": m.status_after}
                       for m in self.moves],
            "stored_versions": dict(self.stale),
        }


def _value(row: Mapping[str, Any] | None) -> float | None:
    value = None if row is None else row.get("value")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def compare(score: str, stored: Iterable[Mapping[str, Any]], recomputed: Iterable[Mapping[str, Any]],
            version: str) -> ScoreChanges:
    """Stored score rows vs recomputed ones (dicts with account_id, value, status, model, model_version)."""
    before = {r["account_id"]: r for r in stored}
    after = {r["account_id"]: r for r in recomputed}
    changes = ScoreChanges(score, accounts=len(after))
    for row in before.values():
        if row.get("model_version") and row["model_version"] != version:
            changes.stale[row["model_version"]] += 1
    for account_id in before.keys() | after.keys():
        old, new = before.get(account_id), after.get(account_id)
        move = Move(account_id, str((new or old or {}).get("account_name") or (new or old or {}).get("account_key")),
                    (new or old or {}).get("model"), _value(old), _value(new),
                    None if old is None else old.get("status"), None if new is None else new.get("status"))
        if move.before == move.after and move.status_before == move.status_after:
            continue
        changes.moves.append(move)
        if move.status_before != move.status_after:
            changes.transitions.setdefault(move.model or "-", Counter())[(move.status_before, move.status_after)] += 1
    changes.moves.sort(key=lambda m: (-abs(m.delta), m.account))
    return changes
