"""The columns a scoring pass reads: stored values, derived metrics and history.

A Frame is the expression Scope of the engine: one row per account, one
column per name, with each column's `since` timestamps and N/A reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

from .. import times
from ..config.mappings import Mappings
from ..expressions import TEXT
from ..store import Column, Store


@dataclass
class Frame:
    ids: np.ndarray
    now: datetime
    columns: dict[str, Column] = field(default_factory=dict)
    history: Callable[[str, int, bool], Column] | None = None
    last_known: Callable[[str, bool], Column] | None = None
    text_names: set[str] = field(default_factory=set)
    _as_of: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    _known: dict[str, Column] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def today(self) -> date:
        return self.now.date()

    def column(self, name: str) -> np.ndarray:
        return self.columns[name].values

    def get(self, name: str) -> Column:
        return self.columns[name]

    def as_of(self, name: str, days: int) -> np.ndarray:
        key = (name, days)
        if key not in self._as_of:
            if self.history is None:
                self._as_of[key] = _empty(self.n, name in self.text_names).values
            else:
                self._as_of[key] = self.history(name, days, name in self.text_names).values
        return self._as_of[key]

    def known(self, name: str) -> Column:
        """Each account's last value that was not N/A (for carry-forward: of the accounts N/A now)."""
        if name not in self._known:  # read once: every model that carries the name forward uses it
            text = name in self.text_names
            self._known[name] = _empty(self.n, text) if self.last_known is None else self.last_known(name, text)
        return self._known[name]


def _empty(n: int, text: bool) -> Column:
    values = np.full(n, None, dtype=object) if text else np.full(n, np.nan)
    return Column(values, np.full(n, None, dtype=object), np.full(n, None, dtype=object))


iso = times.iso  # the one spelling of a moment (connector/times.py), where the steps have long imported it


def from_store(store: Store, mappings: Mappings, now: datetime) -> Frame:
    """Load every stored name the mappings use, then compute derived metrics."""
    ids = store.account_ids()
    text_names = {n for n, t in mappings.types.items() if t in (TEXT, "date")}

    def history(name: str, days: int, text: bool) -> Column:
        return store.history_column(name, ids, text, iso(now - timedelta(days=days)))

    def last_known(name: str, text: bool) -> Column:
        """Read for the accounts N/A now only: another's last known value is its current one,
        which is never carried (a stale one is as old in the history)."""
        values = frame.columns[name].values
        na = np.flatnonzero(values == None if values.dtype == object else np.isnan(values))  # noqa: E711
        if len(na) * 2 > len(ids):
            return store.history_column(name, ids, text, iso(now), non_null=True)
        some = store.history_column(name, ids[na], text, iso(now), non_null=True, only=True)
        known = _empty(len(ids), text)
        known.values[na], known.since[na] = some.values, some.since
        return known

    frame = Frame(ids, now, history=history, last_known=last_known, text_names=text_names)
    aged = mappings.aged_names()
    for name in mappings.stored_names():
        frame.columns[name] = store.load_column(name, ids, name in text_names, with_since=name in aged)
    add_metric_columns(frame, mappings)
    return frame


def from_values(
    values: dict[str, list[object] | np.ndarray], mappings: Mappings, now: datetime | None = None
) -> Frame:
    """A frame from plain columns (tests, benchmarks, the worked examples)."""
    n = len(next(iter(values.values()))) if values else 0
    text_names = {k for k, t in mappings.types.items() if t in (TEXT, "date")}
    frame = Frame(np.arange(1, n + 1, dtype=np.int64), now or datetime.now(UTC), text_names=text_names)
    for name in mappings.stored_names():
        raw = values.get(name)
        text = name in text_names
        if raw is None:
            frame.columns[name] = _empty(n, text)
            continue
        arr = (
            np.array(list(raw), dtype=object)
            if text
            else np.array([np.nan if v is None else v for v in raw], dtype=float)
        )
        frame.columns[name] = Column(arr, np.full(n, None, dtype=object), np.full(n, None, dtype=object))
    add_metric_columns(frame, mappings)
    return frame


def add_metric_columns(frame: Frame, mappings: Mappings) -> None:
    """Metrics that read an input get its column; derived ones are evaluated in order."""
    for name, metric in mappings.metrics.items():
        if metric.input and name != metric.input:
            frame.columns[name] = frame.columns[metric.input]
    for name, expr in mappings.derived.items():
        values = expr.evaluate(frame)
        reasons = np.full(frame.n, None, dtype=object)
        missing = values == None if values.dtype == object else np.isnan(values)  # noqa: E711
        if missing.any():
            reasons[missing] = f"derived: {expr.source} is N/A"
        frame.columns[name] = Column(values, np.full(frame.n, None, dtype=object), reasons)
