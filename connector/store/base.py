"""What every area of the store stands on: the connection and all-or-nothing transactions."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils

from ..times import now_iso

INPUTS_CHANGES = "inputs.changes"  # the meta key counting the writes that changed what scoring reads


def utcnow() -> str:
    return now_iso()


class Area:
    """The state each area's methods use; `Store` (connector/store/__init__.py) sets it on open."""

    path: Path
    origin: Path  # the store a preview copy was made of
    readonly: bool
    locked: bool  # set by RunLock while this process holds the store's run lock
    scratch: tempfile.TemporaryDirectory[str] | None  # a preview copy's folder
    conn: sqlite3.Connection
    db: sqlite_utils.Database

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a crash inside leaves the store as it was before."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def _untriggered(self, prefix: str) -> Iterator[None]:
        """Inside the transaction under way: the triggers named `prefix`... lifted while a bulk write
        runs, put back as they were before it commits. A trigger runs once per row: it doubles the cost
        of writing a million score rows (6 -> 12 s). The writer does itself what they would have done;
        nobody else writes meanwhile (one writer at a time: this transaction), and a rollback puts them
        back too."""
        assert self.conn.in_transaction, "triggers are lifted only inside a transaction"
        triggers = self.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name GLOB ? || '*'",
                                     (prefix,)).fetchall()
        for name, _sql in triggers:
            self.conn.execute(f'DROP TRIGGER "{name}"')
        yield
        for _name, sql in triggers:
            self.conn.execute(sql)

    def _inputs_changed(self, moments: Iterable[tuple[str, str, str]] = ()) -> None:
        """Inside a write to what scoring reads: one change counted, and the (area, name, at) moments
        its values or results took effect recorded (what the `*_moments` triggers do, where lifted)."""
        self.conn.executemany("INSERT OR IGNORE INTO moments VALUES (?, ?, ?)", moments)
        self.conn.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (INPUTS_CHANGES,))

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one moment of the store: in the transaction under way, else in a
        read transaction of their own."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")


def _encoded(data: dict[str, Any]) -> str:
    """A record as stored: orjson (fast, keys sorted), else json for what orjson refuses (integers
    past 64 bits, keys that are not strings)."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(data, sort_keys=True, ensure_ascii=False)


def _decoded(data: str) -> Any:
    """A stored record: orjson (fast), else json for what orjson refuses (NaN, integers past 64 bits)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
