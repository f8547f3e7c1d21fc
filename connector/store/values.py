"""Metric values: the current value of every name per account, its history, and columns of them."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .base import Area, utcnow
from .packed import pack, unpack


@dataclass
class Column:
    """One stored name's current values, aligned to the store's account order."""

    values: np.ndarray  # float64 (NaN = N/A) or object (None = N/A)
    since: np.ndarray  # object: ISO timestamp the value took effect, None when absent (read-only if not asked for)
    na_reason: np.ndarray  # object: why the source had no value, None when it had one


_IN_BULK = 10_000  # new or changed values of a name past which they are written by one statement each


class Values(Area):
    def set_values(
        self, rows: Iterable[tuple[int, str, Any] | tuple[int, str, Any, str | None]], now: str | None = None,
        partial: bool = False,
    ) -> int:
        """Record (account_id, name, value[, na_reason]) observations; returns how many changed.

        A value equal to the stored one only refreshes seen_at; a changed value
        (None included) starts a new `since` and is appended to metric_history.
        `partial`: a few accounts of each name (an incremental measure): only theirs are read to compare.
        """
        by_name: dict[str, list[tuple[int, str, Any] | tuple[int, str, Any, str | None]]] = {}
        for row in rows:
            by_name.setdefault(row[1], []).append(row)
        return self.set_value_columns(by_name.items(), now, partial)

    def set_value_columns(
        self, columns: Iterable[tuple[str, Iterable[tuple[int, str, Any] | tuple[int, str, Any, str | None]]]],
        now: str | None = None, partial: bool = False,
    ) -> int:
        """`set_values` of one name after the other: (name, its rows), each name once. A name's rows
        are made only when its turn comes, so a full measure holds one name's rows, not every
        name's (at 100k accounts and 25 names, 2.5 million tuples)."""
        now = now or utcnow()
        changed = 0
        moments: list[tuple[str, str, str]] = []
        touched = False
        with self.transaction(), self._untriggered("value_"):  # the copies' logs and the moments are kept here
            copies = {n for (n,) in self.conn.execute("SELECT name FROM value_columns")}
            for name, rows in columns:  # one name at a time: memory stays one column wide
                by_account = {r[1]: r for r in map(_value_row, rows)}  # the last one of an account counts
                current = self._current_values(name, list(by_account) if partial else None)
                new, moved, explained = [], [], []
                for account_id, r in by_account.items():
                    was = current.get(account_id)
                    if was is None:
                        new.append(r)
                    elif was[0] != r[2] or was[1] != r[3]:
                        moved.append(r)
                    elif was[2] != r[4]:
                        explained.append(r)
                seen = [a for a in by_account if a in current]
                if not partial and len(seen) == len(current):  # the whole column was observed (a full measure)
                    self.conn.execute("UPDATE metric_values SET seen_at = ? WHERE name = ?", (now, name))
                else:
                    self.conn.executemany(
                        "UPDATE metric_values SET seen_at = ? WHERE name = ? AND account_id = ?",
                        ((now, name, account_id) for account_id in seen),
                    )
                if len(new) >= _IN_BULK and all(r[2] is None or math.isfinite(r[2]) for r in new):
                    self.conn.execute(  # a whole column at once (a first measure): one JSON array, read in C
                        "INSERT INTO metric_values SELECT ?, value ->> 0, value ->> 1, value ->> 2, ?, ?, value ->> 3 "
                        "FROM json_each(?)", (name, now, now, orjson.dumps([r[1:] for r in new]).decode()))
                else:
                    self.conn.executemany(  # a new account's value, N/A or not, starts its history
                        "INSERT INTO metric_values VALUES (?, ?, ?, ?, ?, ?, ?)",
                        ((n, a, num, text, now, now, reason) for n, a, num, text, reason in new))
                self.conn.executemany(
                    "UPDATE metric_values SET num = ?, text = ?, since = ?, na_reason = ? WHERE name = ? AND account_id = ?",
                    ((num, text, now, reason, n, a) for n, a, num, text, reason in moved))
                self.conn.executemany(  # the same value (or N/A), another reason: no new history
                    "UPDATE metric_values SET na_reason = ? WHERE name = ? AND account_id = ?",
                    ((reason, n, a) for n, a, _num, _text, reason in explained))
                if len(new) + len(moved) >= _IN_BULK:  # copied in SQLite: every value that took effect now
                    self.conn.execute(
                        """INSERT INTO metric_history (name, account_id, since, num, text)
                           SELECT name, account_id, since, num, text FROM metric_values WHERE name = ? AND since = ?
                           ON CONFLICT DO UPDATE SET num = excluded.num, text = excluded.text""", (name, now))
                else:
                    self.conn.executemany(
                        """INSERT INTO metric_history (name, account_id, since, num, text) VALUES (?, ?, ?, ?, ?)
                           ON CONFLICT DO UPDATE SET num = excluded.num, text = excluded.text""",
                        ((n, a, now, num, text) for n, a, num, text, _reason in itertools.chain(new, moved)))
                if name in copies:  # what the triggers do: the rows that differ from the copy now
                    self.conn.executemany("INSERT OR IGNORE INTO value_changes VALUES (?, ?)",
                                          ((name, r[1]) for r in itertools.chain(new, moved, explained)))
                changed += len(new) + len(moved)
                touched = touched or bool(new or moved or explained)
                if new or moved:
                    moments.append(("value", name, now))
            if touched:
                self._inputs_changed(moments)
        return changed

    def _current_values(self, name: str, accounts: list[int] | None = None
                        ) -> dict[int, tuple[float | None, str | None, str | None]]:
        sql, args = "SELECT account_id, num, text, na_reason FROM metric_values WHERE name = ?", [name]
        if accounts is not None:
            sql, args = sql + " AND account_id IN (SELECT value FROM json_each(?))", [name, json.dumps(accounts)]
        return {a: (num, text, reason) for a, num, text, reason in self.conn.execute(sql, args)}

    def load_column(self, name: str, ids: np.ndarray, text: bool, with_since: bool = True) -> Column:
        """The current values of one stored name for the given accounts (N/A where absent).

        Read from the name's columnar copy (`value_columns`, one blob), made
        from its rows when there is none and the store may be written. `since`
        (when each value took effect) is filled only when asked for: age rules
        need it.
        """
        stored = self._stored_column(name)
        at, keep = _positions(ids, stored["account_id"])
        num, texts, reasons_of = stored["num"], stored["text"], stored["na_reason"]
        n = len(ids)
        values = np.full(n, None, dtype=object) if text else np.full(n, np.nan)
        reasons = np.full(n, None, dtype=object)
        if text:
            shown = texts.copy()
            numbers = np.flatnonzero((texts == None) & ~np.isnan(num))  # noqa: E711
            shown[numbers] = [_text_of(v) for v in num[numbers].tolist()]
            values[at] = shown[keep]
            reasons[at] = reasons_of[keep]
        else:
            shown = num.copy()
            null = np.isnan(num)
            written = np.flatnonzero(null & (texts != None))  # noqa: E711
            shown[written] = [_num_of(None, t) for t in texts[written].tolist()]
            values[at] = shown[keep]
            why = np.full(len(num), None, dtype=object)
            why[null] = reasons_of[null]
            why[why == ""] = None
            unexplained = written[why[written] == None]  # noqa: E711
            why[unexplained] = [f"not a number: {t!r}" for t in texts[unexplained].tolist()]
            reasons[at] = why[keep]
        if with_since:
            since = np.full(n, None, dtype=object)
            since[at] = stored["since"][keep]
        else:  # unread: one None seen n times (read-only), not n pointers (a 1M-account frame: 160 MB)
            since = np.broadcast_to(np.array(None, dtype=object), (n,))
        return Column(values, since, reasons)

    def _stored_column(self, name: str) -> dict[str, np.ndarray]:
        """Every current row of a name as columns (account_id ascending, num with NaN for NULL, text,
        since, na_reason): its columnar copy with the rows changed since (`value_changes`) read
        anew, else all its rows. A store that may be written gets a new copy when it had none, or
        when more than a twentieth of its rows changed since."""
        with self._snapshot():  # the copy and its log as of one moment
            row = self.conn.execute("SELECT columns FROM value_columns WHERE name = ?", (name,)).fetchone()
            if row is None:
                columns, changed = _columns(self.conn.execute(f"{_ROWS} ORDER BY account_id", (name,)).fetchall()), -1
            else:
                columns = unpack(row[0])
                logged = [a for (a,) in self.conn.execute("SELECT account_id FROM value_changes WHERE name = ?", (name,))]
                fresh = self.conn.execute(
                    f"{_ROWS} AND account_id IN (SELECT value FROM json_each(?)) ORDER BY account_id",
                    (name, json.dumps(logged))).fetchall() if logged else []
                ids = np.array(logged, dtype=np.int64)
                columns, changed = _patched(columns, ids, _columns(fresh)), len(ids)
        if not self.readonly and (changed < 0 or changed * 20 > len(columns["account_id"])):
            try:
                blob = pack(columns)
            except TypeError:  # a text orjson refuses (a lone surrogate): read from the rows each time
                return columns
            with nullcontext() if self.conn.in_transaction else self.transaction():
                self.conn.execute("INSERT OR REPLACE INTO value_columns VALUES (?, ?)", (name, blob))
                self.conn.execute("DELETE FROM value_changes WHERE name = ?", (name,))
        return columns

    def value_history(self, name: str, ids: np.ndarray, text: bool) -> ValueHistory:
        """A metric's whole history, for many `history_column` lookups (the rescore's dates)."""
        rows = self.conn.execute(
            "SELECT account_id, num, text, since FROM metric_history WHERE name = ? ORDER BY account_id, since",
            (name,)).fetchall()
        return ValueHistory(ids, rows, text)

    def history_column(
        self, name: str, ids: np.ndarray, text: bool, before: str, non_null: bool = False, only: bool = False
    ) -> Column:
        """Each account's value as it stood at `before` (or its last non-N/A one, if asked);
        `only`: the history of just the accounts `ids` is read (a few of many), not the name's."""
        n = len(ids)
        values = np.full(n, None, dtype=object) if text else np.full(n, np.nan)
        since = np.full(n, None, dtype=object)
        condition = "AND (num IS NOT NULL OR text IS NOT NULL)" if non_null else ""
        args: tuple[Any, ...] = (name, before)
        if only:
            condition += " AND account_id IN (SELECT value FROM json_each(?))"
            args += (json.dumps(ids.tolist()),)
        rows = self.conn.execute(
            f"""SELECT account_id, num, text, max(since) FROM metric_history
                WHERE name = ? AND since <= ? {condition} GROUP BY account_id""", args).fetchall()
        if rows:
            at, kept = _aligned(ids, rows)
            _fill(values, at, kept, text)
            since[at] = [r[3] for r in kept]
        return Column(values, since, np.full(n, None, dtype=object))


class ValueHistory:
    """One metric's whole history for the accounts `ids`, read once; `at(before)` gives each
    account's value as it stood then, as `history_column` would, without another query."""

    def __init__(self, ids: np.ndarray, rows: list[Any], text: bool):
        self.n, self.text = len(ids), text
        at, kept = _aligned(ids, rows)
        self.position = at
        self.since = np.array([r[3] for r in kept], dtype=str)
        self.values = np.full(len(kept), None, dtype=object) if text else np.full(len(kept), np.nan)
        _fill(self.values, np.arange(len(kept)), kept, text)
        self.present = np.array([r[1] is not None or r[2] is not None for r in kept], dtype=bool)

    def at(self, before: str, non_null: bool = False) -> Column:
        values = np.full(self.n, None, dtype=object) if self.text else np.full(self.n, np.nan)
        since = np.full(self.n, None, dtype=object)
        rows = np.flatnonzero((self.since <= before) & (self.present if non_null else True))
        if len(rows):  # rows are ordered by account, then since: the last of each account's run
            last = rows[np.r_[self.position[rows][1:] != self.position[rows][:-1], True]]
            values[self.position[last]] = self.values[last]
            since[self.position[last]] = self.since[last].tolist()
        return Column(values, since, np.full(self.n, None, dtype=object))


def _positions(ids: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions in `ids` (sorted) of `found`, and which of `found` are there at all."""
    at = np.searchsorted(ids, found)
    at_clipped = np.minimum(at, max(len(ids) - 1, 0))
    keep = (at < len(ids)) & (ids[at_clipped] == found) if len(ids) else np.zeros(len(found), bool)
    return at[keep], keep


def _aligned(ids: np.ndarray, rows: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Positions in `ids` of rows keyed by account id (first column), and those rows."""
    at, keep = _positions(ids, np.fromiter((r[0] for r in rows), np.int64, len(rows)))
    return at, (rows if keep.all() else [rows[i] for i in np.flatnonzero(keep)])


def _fill(values: np.ndarray, at: np.ndarray, rows: list[Any], text: bool) -> None:
    """Put (account_id, num, text, ...) rows' values into a column, as text or as numbers."""
    if text:
        values[at] = [r[2] if r[2] is not None else _text_of(r[1]) for r in rows]
    else:
        values[at] = np.array([_num_of(r[1], r[2]) for r in rows], dtype=float)


_ROWS = "SELECT account_id, num, text, since, na_reason FROM metric_values WHERE name = ?"


def _columns(rows: list[tuple[Any, ...]]) -> dict[str, np.ndarray]:
    """`_ROWS` rows as the columns of a copy."""
    account_id, num, text, since, reason = zip(*rows, strict=True) if rows else ((),) * 5
    return {"account_id": np.array(account_id, dtype=np.int64), "num": np.array(num, dtype=float),
            "text": _objects(text), "since": _objects(since), "na_reason": _objects(reason)}


def _patched(columns: dict[str, np.ndarray], changed: np.ndarray, fresh: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy's columns with the accounts `changed` since replaced by their rows now (`fresh`; an
    account with none now is gone), in account order."""
    if not len(changed):
        return columns
    kept = ~np.isin(columns["account_id"], changed)
    merged = {k: np.concatenate([v[kept], fresh[k]]) for k, v in columns.items()}
    order = np.argsort(merged["account_id"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def _objects(items: tuple[Any, ...]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _value_row(row: tuple[Any, ...]) -> tuple[str, int, float | None, str | None, str | None]:
    account_id, name, value = row[0], row[1], row[2]
    reason = row[3] if len(row) > 3 else None
    if value is None:
        return name, account_id, None, None, reason or None
    if isinstance(value, bool):
        return name, account_id, float(value), None, None
    if isinstance(value, int | float):
        if value != value:  # NaN
            return name, account_id, None, None, reason or "not a number"
        return name, account_id, float(value), None, None
    return name, account_id, None, str(value), None


def _num_of(num: float | None, text: str | None) -> float:
    if num is not None:
        return float(num)
    if text is None:
        return np.nan
    try:
        return float(text)
    except ValueError:
        return np.nan


def _text_of(num: float | None) -> str | None:
    if num is None:
        return None
    return str(int(num)) if float(num).is_integer() else repr(float(num))
