"""Catalogue metrics for every account at once: each source's records as arrays (its `Past.tables`),
aligned to the accounts being measured, so a metric at a moment (now, for the measure step; a past
date, for `rescore`) is a few array operations over all accounts instead of a loop over each
account's records. Records are matched to accounts by the same rules `metrics.gather` follows: a
source's matched object through its links, the objects that belong to it through their parent.

Each source's column-wise metrics give exactly what their per-account `compute` gives
(tests/test_past_columns.py); a metric without one is computed account by account."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from .catalogue import CRM_PAST, catalogue
from .sources import registry
from .sources.base import Records, SourcePlugin, Table, Tables
from .store import Column, Store

Linked = Callable[[str, str], dict[str, int]]  # (system, object) -> external id -> account id


class Columnwise:
    """The catalogue metrics that have a column-wise form, for the accounts `ids` (in that order)."""

    def __init__(self, store: Store, ids: np.ndarray, linked: Linked | None = None):
        self.store, self.ids, self.linked = store, ids, linked
        self.known = catalogue()
        self.past = {p.system: p.past for p in registry.plugins() if p.past is not None}
        self.unmatched = {p.system: p.unmatched for p in registry.plugins()}
        self._tables: tuple[dict[str, Tables], dict[str, np.ndarray]] | None = None

    def has(self, key: str, live: bool = False) -> bool:
        """Whether a catalogue metric is computed column-wise (`live`: at now, for the measure step)."""
        past = self.past.get(self.known[key].system)
        return key in CRM_PAST or (past is not None and (past.live or not live)
                                   and (key in past.metrics or key in past.with_inputs))

    def tables(self) -> tuple[dict[str, Tables], dict[str, np.ndarray]]:
        if self._tables is None:
            self._tables = load_tables(self.store, self.ids, self.linked)
        return self._tables

    def column(self, key: str, at: datetime, inputs: dict[str, Column]) -> Column:
        """The metric `key` at `at` for every account; `inputs` are the input columns then."""
        n, metric = len(self.ids), self.known[key]
        if key in CRM_PAST:
            values, reasons = CRM_PAST[key](inputs, n, at)
        else:
            tables, linked = self.tables()
            past = self.past[metric.system]
            values, reasons = past.metrics[key](tables[metric.system], at) if key in past.metrics else \
                past.with_inputs[key](tables[metric.system], at, inputs)
            values = values.copy()
            reasons = np.full(n, None, dtype=object) if reasons is None else reasons.astype(object)
            away = ~linked[metric.system]
            values[away] = np.nan if values.dtype != object else None
            reasons[away] = self.unmatched[metric.system]
        if reasons is None:
            reasons = np.full(n, None, dtype=object)
        if metric.type != "number":
            values = values.astype(object)
        return Column(values, np.full(n, None, dtype=object), reasons)


def load_tables(store: Store, ids: np.ndarray, linked: Linked | None = None
                ) -> tuple[dict[str, Tables], dict[str, np.ndarray]]:
    """(system -> its tables, system -> which accounts have a matched record of it) for every source
    with a column-wise past; `linked(system, object)`: its links, when the caller reads them too."""
    linked_of: Linked = linked or store.linked
    position = {account_id: i for i, account_id in enumerate(ids.tolist())}
    tables: dict[str, Tables] = {}
    linked_to: dict[str, np.ndarray] = {}
    for plugin in registry.plugins():
        owner = linked_of(plugin.system, plugin.identity.obj)
        mask = np.zeros(len(ids), dtype=bool)
        mask[[position[a] for a in set(owner.values()) if a in position]] = True
        linked_to[plugin.system] = mask
        if plugin.past is not None:
            tables[plugin.system] = Tables(len(ids), _tables(store, plugin, owner, position, linked_of))
    return tables, linked_to


def _tables(store: Store, plugin: SourcePlugin, owner: dict[str, int],
            position: dict[int, int], linked: Linked) -> dict[str, Records]:
    assert plugin.past is not None
    by_object: dict[str, dict[str, Table]] = defaultdict(dict)
    for name, table in plugin.past.tables.items():
        by_object[table.obj][name] = table
    belongs = {b.obj: b for b in plugin.belongs}
    out: dict[str, Records] = {}
    for obj, named in by_object.items():
        via: str | None = None  # the matched object: by its own id; else through its parent's
        link = owner
        if obj != plugin.identity.obj:
            if obj not in belongs:
                raise RuntimeError(f"{plugin.system} table of {obj!r}: the object is neither matched nor belongs")
            rule = belongs[obj]
            via = rule.via
            link = owner if rule.parent == plugin.identity.obj else linked(plugin.system, rule.parent)
        made = {name: _Many(table) if table.columns_of is not None else _Rows(table) for name, table in named.items()}
        for rid, rec in store.records(plugin.system, obj):
            account_id = link.get(rid if via is None else str(rec.get(via) or ""))
            at = position.get(account_id) if account_id is not None else None
            if at is None:
                continue
            for name, table in named.items():
                made[name].add(at, table.columns_of(rec) if table.columns_of is not None else table.rows(rec))
        for name in named:
            out[name] = made[name].records()
    return out


class _Chunked:
    """A table's arrays made CHUNK rows at a time, then joined a column at a time: neither its rows as
    Python objects nor its chunks and their join are all held at once."""

    CHUNK = 100_000  # rows

    def __init__(self, table: Table):
        self.table = table
        self.parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self._clear()

    def _clear(self) -> None:
        self.size = 0

    def _chunk(self) -> None:
        raise NotImplementedError

    def records(self) -> Records:
        self._chunk()
        if not self.parts:
            return Records(np.zeros(0, dtype=np.int64), _arrays(self.table, [[] for _ in self.table.columns]))
        if len(self.parts) == 1:
            return Records(*self.parts.pop())
        account = np.concatenate([a for a, _c in self.parts])
        joined: dict[str, np.ndarray] = {}
        for c in self.table.columns:  # a column's chunks let go as soon as it is joined: not every column twice
            joined[c] = np.concatenate([cols.pop(c) for _a, cols in self.parts])
        self.parts.clear()
        return Records(account, joined)


class _Rows(_Chunked):
    """A table whose records give rows (tuples in the table's column order)."""

    def _clear(self) -> None:
        self.at: list[int] = []
        self.rows: list[tuple] = []  # type: ignore[type-arg]
        self.size = 0

    def add(self, at: int, made: list[tuple]) -> None:  # type: ignore[type-arg]
        if not made:
            return
        self.rows += made
        self.at += [at] * len(made)
        self.size += len(made)
        if self.size >= self.CHUNK:
            self._chunk()

    def _chunk(self) -> None:
        if not self.size:
            return
        self.parts.append((np.array(self.at, dtype=np.int64), _columns(self.table, self.rows)))
        self._clear()


class _Many(_Chunked):
    """A many-rows table (usage series): a record's first column is a list (its rows); a column it
    gives as one value (a float, or None: NaN) holds it on each of its rows, repeated in numpy.
    Millions of rows as Python floats would not fit."""

    def _clear(self) -> None:
        self.at: list[int] = []
        self.sizes: list[int] = []
        self.made: list[list[Any]] = []  # each record's columns
        self.size = 0

    def add(self, at: int, made: list[Any]) -> None:
        size = len(made[0]) if made else 0
        if not size:
            return
        self.at.append(at)
        self.sizes.append(size)
        self.made.append(made)
        self.size += size
        if self.size >= self.CHUNK:
            self._chunk()

    def _chunk(self) -> None:
        if not self.size:
            return
        sizes = np.array(self.sizes, dtype=np.int64)
        columns = {name: _one_column(kind, list(given), sizes) for (name, kind), given in
                   zip(self.table.columns.items(), zip(*self.made, strict=True), strict=True)}
        self.parts.append((np.repeat(np.array(self.at, dtype=np.int64), sizes), columns))
        self._clear()


def _one_column(kind: type, given: list[Any], sizes: np.ndarray) -> np.ndarray:
    """One column of a chunk: each record's list of values, or one value for all its rows."""
    lists = [isinstance(g, list) for g in given]
    if kind is float and not any(lists):
        return np.repeat(np.array([np.nan if g is None else g for g in given], dtype=float), sizes)
    if kind is float and all(lists) and all(len(g) == size for g, size in zip(given, sizes.tolist(), strict=True)):
        # every record's list as long as its rows: read straight into the array (None: NaN), no list of them all
        return np.fromiter(itertools.chain.from_iterable(given), float, int(sizes.sum()))
    flat: list[Any] = []
    for values, size, listed in zip(given, sizes.tolist(), lists, strict=True):
        flat += values if listed else [values] * size
    if kind is float:
        return np.array(flat, dtype=float)
    return np.array(["" if v is None else str(v) for v in flat], dtype=str)


def _arrays(table: Table, values: list[list]) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """Each column's values (float: None is NaN; text: None is '') as arrays."""
    return {name: np.array(column, dtype=float) if kind is float else
            np.array(["" if v is None else str(v) for v in column], dtype=str)
            for (name, kind), column in zip(table.columns.items(), values, strict=True)}


def _columns(table: Table, rows: list[tuple]) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """Rows (tuples in the table's column order) as its columns."""
    return _arrays(table, [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in table.columns])
