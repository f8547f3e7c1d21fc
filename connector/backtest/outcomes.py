"""What actually happened: each named outcome's events per account, from the stored records, by
the rules each source offers (`OutcomeRule`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from ..config.mappings import Mappings
from ..config.outcomes import Outcome
from ..errors import ConfigError, Problem
from ..sources.base import AccountData, Event


@dataclass
class Events:
    """One outcome's events: account id -> (when, what), oldest first."""

    outcome: Outcome
    by_account: dict[int, list[Event]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(e) for e in self.by_account.values())

    def first_after(self, account_id: int, after: datetime) -> Event | None:
        return next((e for e in self.by_account.get(account_id, []) if e[0] > after), None)

    def any_until(self, account_id: int, until: datetime) -> bool:
        events = self.by_account.get(account_id)
        return bool(events) and events[0][0] <= until


def events_of(outcome: Outcome, data: dict[int, AccountData]) -> Events:
    found = Events(outcome)
    for account_id, acct in data.items():
        events: list[Event] = []
        for rule in outcome.rules:
            events += rule.rule.events(rule.settings, acct)
        if events:
            found.by_account[account_id] = sorted(events, key=lambda e: e[0])
    return found


def check_against_records(outcome: Outcome, data: dict[int, AccountData], mappings: Mappings) -> None:
    """Refuse (exit 2) an opportunity type no pulled Opportunity has: picklists differ per org, and a
    misspelt type would silently find no outcome."""
    problems: list[Problem] = []
    for rule in outcome.rules:
        wanted = getattr(rule.settings, "types", None) or getattr(rule.settings, "dealtypes", None)
        if not wanted:
            continue
        obj = rule.rule.objects[0]
        field_name = "Type" if "types" in type(rule.settings).model_fields else "dealtype"
        seen = Counter(str(r.get(field_name)) for acct in data.values() for r in acct.of(rule.system, obj)
                       if r.get(field_name) is not None)
        if not seen:
            continue  # nothing pulled yet: the caller reports "no outcomes" if it matters
        unknown = [t for t in wanted if t not in seen]
        if unknown:
            listed = ", ".join(f"{t} ({n})" for t, n in seen.most_common(8))
            problems.append(mappings.located.problem(
                ("outcomes", outcome.name), f"{rule.kind}: {', '.join(repr(t) for t in unknown)} — no pulled "
                f"{rule.system} {obj} has this {field_name}", hint=f"the {field_name} values pulled are: {listed}"))
    if problems:
        raise ConfigError(problems)
