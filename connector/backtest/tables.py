"""Every source's records as arrays (its `Past.tables`), aligned to the accounts being rebuilt, so a
catalogue metric at a past date is a few array operations over all accounts instead of a loop over
each account's records. Records are matched to accounts by the same rules `metrics.gather` follows:
a source's matched object through its links, the objects that belong to it through their parent."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..sources import registry
from ..sources.base import Records, SourcePlugin, Table, Tables
from ..store import Store


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
        for rid, rec in store.records(plugin.system, obj):
            account_id = link.get(rid if via is None else str(rec.get(via) or ""))
            at = position.get(account_id) if account_id is not None else None
            if at is None:
                continue
            for name, table in named.items():
                made = table.rows(rec)
                rows[name] += made
                accounts[name] += [at] * len(made)
        for name, table in named.items():
            out[name] = Records(np.array(accounts[name], dtype=np.int64), _columns(table, rows[name]))
    return out


def _columns(table: Table, rows: list[tuple]) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    columns = {}
    values = list(zip(*rows, strict=True)) if rows else [() for _ in table.columns]
    for (name, kind), column in zip(table.columns.items(), values, strict=True):
        if kind is float:
            columns[name] = np.array(column, dtype=float)
        else:
            columns[name] = np.array(["" if v is None else str(v) for v in column], dtype=str)
    return columns
