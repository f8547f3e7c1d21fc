"""Catalogue metrics for every account at once: each source's records as arrays (its `Past.tables`),
aligned to the accounts being measured, so a metric at a moment (now, for the measure step; a past
date, for `rescore`) is a few array operations over all accounts instead of a loop over each
account's records. Records are matched to accounts by the same rules `metrics.gather` follows: a
source's matched object through its links, the objects that belong to it through their parent.

Each source's column-wise metrics give exactly what their per-account `compute` gives
(tests/test_past_columns.py); a metric without one is computed account by account."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import numpy as np

from .catalogue import CRM_PAST, catalogue
from .sources import registry
from .sources.base import Records, SourcePlugin, Table, Tables
from .store import Column, Store


class Columnwise:
    """The catalogue metrics that have a column-wise form, for the accounts `ids` (in that order)."""

    def __init__(self, store: Store, ids: np.ndarray):
        self.store, self.ids = store, ids
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
            self._tables = load_tables(self.store, self.ids)
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


def load_tables(store: Store, ids: np.ndarray) -> tuple[dict[str, Tables], dict[str, np.ndarray]]:
    """(system -> its tables, system -> which accounts have a matched record of it) for every source
    with a column-wise past."""
    position = {account_id: i for i, account_id in enumerate(ids.tolist())}
    tables: dict[str, Tables] = {}
    linked: dict[str, np.ndarray] = {}
    for plugin in registry.plugins():
        owner = store.linked(plugin.system, plugin.identity.obj)
        mask = np.zeros(len(ids), dtype=bool)
        mask[[position[a] for a in set(owner.values()) if a in position]] = True
        linked[plugin.system] = mask
        if plugin.past is not None:
            tables[plugin.system] = Tables(len(ids), _tables(store, plugin, owner, position))
    return tables, linked


def _tables(store: Store, plugin: SourcePlugin, owner: dict[str, int],
            position: dict[int, int]) -> dict[str, Records]:
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
            link = owner if rule.parent == plugin.identity.obj else store.linked(plugin.system, rule.parent)
        accounts: dict[str, list[int]] = {name: [] for name in named}
        rows: dict[str, list[tuple]] = {name: [] for name in named}  # type: ignore[type-arg]
        arrays: dict[str, list[list]] = {name: [[] for _ in t.columns] for name, t in named.items()}  # type: ignore[type-arg]
        parts: dict[str, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {name: [] for name in named}
        for rid, rec in store.records(plugin.system, obj):
            account_id = link.get(rid if via is None else str(rec.get(via) or ""))
            at = position.get(account_id) if account_id is not None else None
            if at is None:
                continue
            for name, table in named.items():
                if table.columns_of is not None:
                    made = table.columns_of(rec)
                    for into, values in zip(arrays[name], made, strict=True):
                        into += values
                    accounts[name] += [at] * (len(made[0]) if made else 0)
                    if len(accounts[name]) >= _CHUNK:  # as arrays now: millions of rows as Python floats would not fit
                        parts[name].append((np.array(accounts[name], dtype=np.int64), _arrays(table, arrays[name])))
                        accounts[name], arrays[name] = [], [[] for _ in table.columns]
                else:
                    made = table.rows(rec)
                    rows[name] += made
                    accounts[name] += [at] * len(made)
        for name, table in named.items():
            if table.columns_of is None:
                out[name] = Records(np.array(accounts[name], dtype=np.int64), _columns(table, rows[name]))
                continue
            chunks = [*parts[name], (np.array(accounts[name], dtype=np.int64), _arrays(table, arrays[name]))]
            out[name] = Records(np.concatenate([a for a, _c in chunks]),
                                {c: np.concatenate([cols[c] for _a, cols in chunks]) for c in table.columns})
    return out


_CHUNK = 100_000  # rows of a many-rows table (usage series) made into arrays at a time


def _arrays(table: Table, values: list[list]) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """Each column's values (float: None is NaN; text: None is '') as arrays."""
    return {name: np.array(column, dtype=float) if kind is float else
            np.array(["" if v is None else str(v) for v in column], dtype=str)
            for (name, kind), column in zip(table.columns.items(), values, strict=True)}


def _columns(table: Table, rows: list[tuple]) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """Rows (tuples in the table's column order) as its columns."""
    return _arrays(table, [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in table.columns])
