"""What actually happened: each named outcome's events per account, from the stored records, by
the rules each source offers (`OutcomeRule`)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime

from ..config.mappings import Mappings
from ..config.outcomes import Outcome
from ..errors import ConfigError, Problem
from ..metrics import gather
from ..sources.base import AccountData, Event
from ..store import Store


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


def outcome_records(store: Store, mappings: Mappings) -> dict[int, AccountData]:
    """Each account's records that the mappings' outcomes read (opportunities, deals, subscriptions)."""
    return gather(store, only=set().union(*(o.objects() for o in mappings.outcomes.values())))


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


# ------------------------------------------------------------------ kept, and found on the second core

Found = dict[str, tuple[dict[int, list[Event]], list[Problem]]]  # outcome -> (events per account, problems)


def fingerprint(store: Store, mappings: Mappings, today: date) -> str:
    """What outcome events depend on: the outcomes' rules, the records they read, and the day."""
    pairs = sorted(set().union(*(o.objects() for o in mappings.outcomes.values())))
    rules = {name: [[r.kind, r.settings.model_dump(mode="json")] for r in o.rules] for name, o in mappings.outcomes.items()}
    text = json.dumps([rules, store.records_state(pairs), today.isoformat()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find_all(store: Store, mappings: Mappings, names: list[str]) -> Found:
    """Each named outcome's events and the problems `check_against_records` finds for it."""
    data = outcome_records(store, mappings)
    found: Found = {}
    for name in names:
        outcome = mappings.outcomes[name]
        try:
            check_against_records(outcome, data, mappings)
            problems: list[Problem] = []
        except ConfigError as err:
            problems = err.problems
        found[name] = (events_of(outcome, data).by_account, problems)
    return found


def encoded(found: Found) -> str:
    return json.dumps({name: {"events": {str(a): [[w.isoformat(), what] for w, what in evs] for a, evs in by.items()},
                              "problems": [asdict(p) for p in problems]} for name, (by, problems) in found.items()})


def decoded(text: str) -> Found:
    return {name: ({int(a): [(datetime.fromisoformat(w), what) for w, what in evs] for a, evs in kept["events"].items()},
                   [Problem(**p) for p in kept["problems"]]) for name, kept in json.loads(text).items()}


_MAPPINGS: Mappings | None = None  # what a forked worker reads (set before the fork, never pickled)


def _job(path: str, names: list[str]) -> Found:
    assert _MAPPINGS is not None
    with Store(path, readonly=True) as store:
        return find_all(store, _MAPPINGS, names)


class EventsLater:
    """Outcome events found in a forked process while the caller rebuilds or loads the series
    (decoding every opportunity and subscription is the slowest part of judging a score), or at
    once from what the last `rescore` kept when the records and outcomes are unchanged since."""

    def __init__(self, store: Store, mappings: Mappings, names: list[str], reuse: bool = True):
        global _MAPPINGS
        self.names, self.mappings = names, mappings
        self.fingerprint = fingerprint(store, mappings, datetime.now(UTC).date())
        kept = store.cached_events(self.fingerprint) if reuse else None
        self.kept: Found | None = decoded(kept) if kept is not None else None
        if not names:
            self.kept = {}
        self.reused = self.kept is not None and all(n in self.kept for n in names)
        self.pool = None
        if not self.reused:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            _MAPPINGS = mappings
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
            self.future = self.pool.submit(_job, str(store.path), names)

    def __enter__(self) -> EventsLater:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def found(self) -> Found:
        if self.kept is None or not self.reused:
            assert self.pool is not None
            self.kept = self.future.result()
        return self.kept

    def events(self, outcome: Outcome | None, check: bool = False) -> Events | None:
        """One outcome's events; with `check`, ConfigError (exit 2) for the problems found with it."""
        if outcome is None:
            return None
        by_account, problems = self.found()[outcome.name]
        if check and problems:
            raise ConfigError(problems)
        return Events(outcome, by_account)
