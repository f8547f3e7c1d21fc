"""Runs and the run lock: one row per healthsync run, and the lock a run holds on the store."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .base import Area, utcnow


class Runs(Area):
    def start_run(self, command: str, now: str | None = None) -> int:
        cur = self.conn.execute(
            "INSERT INTO runs (command, started_at, status) VALUES (?, ?, 'running')", (command, now or utcnow())
        )
        return int(cur.lastrowid or 0)

    def finish_run(
        self, run_id: int, status: str, exit_code: int, counts: dict[str, Any], error: str | None = None,
        api_calls: dict[str, Any] | None = None, details: dict[str, Any] | None = None,
    ) -> None:
        self.conn.execute(
            """UPDATE runs SET finished_at = ?, status = ?, exit_code = ?, counts = ?, error = ?,
                 api_calls = ?, details = ? WHERE id = ?""",
            (
                utcnow(), status, exit_code, json.dumps(counts, sort_keys=True), error,
                json.dumps(api_calls, sort_keys=True) if api_calls is not None else None,
                json.dumps(details, sort_keys=True) if details is not None else None, run_id,
            ),
        )

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", [limit]))

    def run(self, run_id: int) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
        return rows[0] if rows else None

    def last_run(self) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM runs ORDER BY id DESC LIMIT 1"))
        return rows[0] if rows else None

    # ------------------------------------------------------------ the run lock

    def lock_holder(self, name: str) -> tuple[str, int, int | None, str, str] | None:
        """(host, pid, run_id, acquired_at, heartbeat_at) of the lock `name`, or None when nobody holds it."""
        row = self.conn.execute(
            "SELECT host, pid, run_id, acquired_at, heartbeat_at FROM locks WHERE name = ?", (name,)).fetchone()
        return row if row else None

    def abandon_run(self, run_id: int) -> None:
        """A run whose process ended without finishing (its lock is being taken over) is `abandoned`."""
        self.conn.execute(
            "UPDATE runs SET status = 'abandoned', finished_at = coalesce(finished_at, ?), "
            "error = coalesce(error, 'the process ended without finishing (crash or kill); "
            "its lock was taken over') WHERE id = ? AND status = 'running'",
            (utcnow(), run_id))

    def take_lock(self, name: str, token: str, host: str, pid: int, run_id: int | None) -> None:
        """Hold the lock `name` (replacing whoever held it), its heartbeat now."""
        now = utcnow()
        self.conn.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (name, token, host, pid, run_id, now, now))

    def attach_lock(self, name: str, token: str, run_id: int) -> None:
        """Name the run that holds the lock."""
        self.conn.execute("UPDATE locks SET run_id = ? WHERE name = ? AND token = ?", (run_id, name, token))

    def drop_lock(self, name: str, token: str) -> None:
        self.conn.execute("DELETE FROM locks WHERE name = ? AND token = ?", (name, token))

    @contextmanager
    def heartbeat(self, name: str, token: str) -> Iterator[Callable[[], None]]:
        """`with store.heartbeat(name, token) as beat:` each `beat()` freshens the lock's heartbeat, through
        a connection of its own (a heartbeat thread does not share the store's), closed at the end."""
        conn = sqlite3.connect(self.path, timeout=30)

        def beat() -> None:
            conn.execute("UPDATE locks SET heartbeat_at = ? WHERE name = ? AND token = ?", (utcnow(), name, token))
            conn.commit()

        try:
            yield beat
        finally:
            conn.close()
