"""Whether the last scores still stand: an unchanged rescore that reads and writes nearly nothing.

A score is a function of the mappings (and healthsync's version), the stored values and live
accounts, the active overrides, the score history (its trend) and the clock. The store counts
every write to those (`inputs_changes`) and keeps the moments values and results took effect
(`moved_between`). After scoring, `remember` records the mappings state, the count and the moment
scored, with the summary; at the next score, `standing` gives that summary back, and nothing is
read or computed, when

- the mappings state and the count are what they were (nothing scoring reads was written since),
- the clock has not gone back,
- no read "as of N days ago" crosses a moment between then and now: the trend's N days, each
  `change()` / `pct_change()` of N days, each age rule (max_age_days, carry_forward), and
- no expression reads today's date (days_since, days_until), or today is the day scored.

Otherwise everything is scored again (`score(..., full=True)` always does), and percentile
schemes see the whole population as ever.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ..config.mappings import Mappings
from ..expressions import Expression
from ..store import Store
from ..times import iso

_KEY = "score.standing"


def time_reads(mappings: Mappings) -> set[tuple[str, str, int, bool]]:
    """Every (area, name, days, age) the scores read as of `days` ago: ("score", score, trend days)
    and ("value", name, days) for `change()` and carried values, read where the moment is at or before
    then; `age`: an age rule's cutoff (max_age_days), crossed where the moment is before it."""
    reads: set[tuple[str, str, int, bool]] = set()
    for name, score in mappings.scores.items():
        reads.add(("score", name, score.definition.trend.days, False))
        for model in score.models:
            for slot in model.slots():
                use = slot.use
                source = mappings.source_of(slot.name)
                if use.max_age_days is not None or use.missing == "carry_forward":
                    reads.add(("value", source, use.max_age_days or 0, True))
                if use.missing == "carry_forward":  # the last known value, as of now
                    reads.add(("value", source, 0, False))
    for expr in expressions(mappings):
        for name, days in expr.history_refs():
            reads |= {("value", name, days, False), ("value", mappings.source_of(name), days, False)}
    return reads


def expressions(mappings: Mappings) -> list[Expression]:
    """Every expression scoring evaluates: derived metrics, model conditions, applies, triggers."""
    found = list(mappings.derived.values())
    for score in mappings.scores.values():
        found += [t[1] for t in score.triggers]
        for model in score.models:
            found += [model.when] if model.when is not None else []
            found += [s.applies for s in model.slots() if s.applies is not None]
    return found


def standing(store: Store, mappings: Mappings, now: datetime) -> dict[str, Any] | None:
    """What `remember` recorded at the last score when those scores still stand at `now`, else None."""
    raw = store.meta(_KEY)
    if raw is None:
        return None
    last = json.loads(raw)
    if last.get("state") != mappings.state() or last.get("inputs") != store.inputs_changes():
        return None
    if set(last.get("scored", {})) != set(mappings.scores):
        return None
    if last.get("zone") != _zone(now):  # "N days ago" is wall-clock arithmetic in now's zone
        return None
    then = datetime.fromisoformat(last["at"].replace("Z", "+00:00"))
    then = then.astimezone(now.tzinfo) if now.tzinfo is not None else then.replace(tzinfo=None)  # as now was given
    if then > now:
        return None
    if then.date() != now.date() and any(e.reads_today() for e in expressions(mappings)):  # the frame's today
        return None
    for area, name, days, age in sorted(time_reads(mappings)):
        # as of a moment: what took effect at or before it (since <= cutoff); an age rule: before it
        back = timedelta(days=days, seconds=1 if age else 0)  # (the store's moments are whole seconds)
        if store.moved_between(area, name, iso(then - back), iso(now - back)):
            return None
    return last


def remember(store: Store, mappings: Mappings, now: datetime, summary: dict[str, Any]) -> None:
    """After every score was written: the state, the count and the moment they were scored at, and
    `summary` (what `standing` gives back)."""
    record = {"state": mappings.state(), "inputs": store.inputs_changes(), "at": iso(now), "zone": _zone(now), **summary}
    store.set_meta(_KEY, json.dumps(record, sort_keys=True))


def _zone(now: datetime) -> str | None:
    """The time zone a moment was given in (None: naive, taken as UTC)."""
    if now.tzinfo is None:
        return None
    return str(getattr(now.tzinfo, "key", None) or now.tzinfo)
