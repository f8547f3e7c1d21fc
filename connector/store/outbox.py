"""The outbox of planned CRM changes and the alert deliveries: one sending protocol for both
(taken rows are marked sent before the request goes out, then settled or released)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .base import Area, _decoded, utcnow

SETTLE_CHUNK = 2000  # written records settled at a time (decoded, then stored)
ReadConnection = sqlite3.Connection  # what Store.watch gives an observer thread


class Outbox(Area):
    def written(self, system: str, obj: str, records: list[str] | None = None) -> dict[tuple[str, str], str | None]:
        """(record id, field) -> the value healthsync last wrote there (canonical text); of `records` only, if given."""
        sql, args = "SELECT record_id, field, value FROM written WHERE system = ? AND object = ?", [system, obj]
        if records is not None:
            sql, args = sql + " AND record_id IN (SELECT value FROM json_each(?))", [*args, json.dumps(records)]
        return {(r, f): v for r, f, v in self.conn.execute(sql, args)}

    def replace_outbox(self, rows: Iterable[tuple[Any, ...]], systems: list[str]) -> None:
        """The plan: every change not yet written is replaced by these, in one transaction.

        rows: (run_id, system, object, record_id, account_id, fields, before, drift, planned_at).
        Rows still marked sent belong to a run that crashed mid-batch (the next pull sees what
        landed), so only the holder of the run lock (or a private preview copy) may replace them.
        """
        if not self.locked:
            raise StoreError("the outbox is replaced only under the store's run lock (a batch may be in flight)")
        with self.transaction():
            self.conn.execute(
                "DELETE FROM outbox WHERE status != 'done' AND system IN (SELECT value FROM json_each(?))",
                (json.dumps(systems),),
            )
            self.conn.executemany(
                """INSERT INTO outbox (run_id, system, object, record_id, account_id, fields, before, drift,
                     status, planned_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)""",
                ((*r, r[-1]) for r in rows),
            )

    def open_changes(self, system: str) -> int:
        """Changes of this CRM still to send (pending or to retry)."""
        row = self.conn.execute(
            "SELECT count(*) FROM outbox WHERE system = ? AND status IN ('pending', 'retry')", (system,)
        ).fetchone()
        return int(row[0])

    def take_batch(self, system: str, size: int) -> list[dict[str, Any]]:
        """The next changes to send (id, record_id, fields decoded, attempts: what sending and settling
        them reads; a bulk job's 100,000 whole rows held about 200 MB), marked sent (committed) before
        the request goes out. The fields are decoded once, here, for both (orjson shares their keys)."""
        with self.transaction():
            rows = list(self.db.query(
                "SELECT id, record_id, fields, attempts FROM outbox WHERE system = ? AND status IN ('pending', 'retry') "
                "ORDER BY attempts, id LIMIT ?",
                [system, size],
            ))
            for row in rows:
                row["fields"] = _decoded(row["fields"])
            return self._mark_sent("outbox", rows)

    def release_batch(self, ids: list[int]) -> None:
        """A batch that was not sent after all (quota stop, error before an answer) is pending again."""
        self._release_sent("outbox", ids)

    # The outbox and alert_deliveries share one sending protocol: rows taken are marked sent (with one
    # more attempt) in the transaction that selects them; rows not sent after all go back to pending.
    def _mark_sent(self, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.conn.executemany(
            f"UPDATE {table} SET status = 'sent', attempts = attempts + 1, updated_at = ? WHERE id = ?",
            ((utcnow(), r["id"]) for r in rows),
        )
        for r in rows:
            r["attempts"] += 1
        return rows

    def _release_sent(self, table: str, ids: list[int]) -> None:
        with self.transaction():
            self.conn.executemany(
                f"UPDATE {table} SET status = 'pending', attempts = attempts - 1 WHERE id = ? AND status = 'sent'",
                ((i,) for i in ids),
            )

    def settle_batch(
        self, system: str, obj: str, outcome: list[tuple[int, str, str | None]],
        written: Iterable[tuple[str, dict[str, str | None], dict[str, Any]]],
    ) -> None:
        """Record each change's outcome; remember written values and that the CRM now holds them.

        `written` (record id, canonical values, raw values) is read SETTLE_CHUNK records at a time,
        all in the one transaction: a bulk job's 100,000 records are never decoded at once.
        """
        now = utcnow()
        with self.transaction():
            self.conn.executemany(
                "UPDATE outbox SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                ((status, error, now, oid) for oid, status, error in outcome),
            )
            records = iter(written)
            while chunk := list(islice(records, SETTLE_CHUNK)):
                self._settle_written(system, obj, chunk, now)

    def _settle_written(self, system: str, obj: str, chunk: list[tuple[str, dict[str, str | None], dict[str, Any]]],
                        now: str) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO written VALUES (?, ?, ?, ?, ?, ?)",
            ((system, obj, rid, f, v, now) for rid, fields, _raw in chunk for f, v in fields.items()),
        )
        for rid, _fields, raw in chunk:
            row = self.conn.execute(
                "SELECT data FROM records WHERE system = ? AND object = ? AND id = ?", (system, obj, rid)
            ).fetchone()
            if row:
                data = {**json.loads(row[0]), **raw}
                self.conn.execute(
                    "UPDATE records SET data = ? WHERE system = ? AND object = ? AND id = ?",
                    (json.dumps(data, sort_keys=True, ensure_ascii=False), system, obj, rid),
                )

    def outbox(self, status: str | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        sql = """SELECT o.*, a.key AS account_key, a.name AS account_name FROM outbox o
                 JOIN accounts a ON a.id = o.account_id WHERE 1"""
        args: list[Any] = []
        if status:
            sql += " AND o.status = ?"
            args.append(status)
        if run_id is not None:
            sql += " AND o.run_id = ?"
            args.append(run_id)
        return list(self.db.query(sql + " ORDER BY o.system, o.id", args))

    def open_deliveries(self, kind: str | None = None) -> int:
        """Deliveries still to send (pending or to retry), of one kind or all."""
        sql = "SELECT count(*) FROM alert_deliveries WHERE status IN ('pending', 'retry')"
        args: tuple[Any, ...] = ()
        if kind:
            sql, args = sql + " AND kind = ?", (kind,)
        return int(self.conn.execute(sql, args).fetchone()[0])

    def requeue_unconfirmed_deliveries(self, max_attempts: int) -> int:
        """Deliveries a crashed run left `sent` (their answer never read): to send again, or failed when out of attempts."""
        with self.transaction():
            self.conn.execute(
                """UPDATE alert_deliveries SET status = 'failed', updated_at = ?,
                     error = 'unconfirmed: the run sending it stopped before the answer, ' || attempts || ' attempt(s)'
                   WHERE status = 'sent' AND attempts >= ?""",
                (utcnow(), max_attempts),
            )
            return self.conn.execute(
                """UPDATE alert_deliveries SET status = 'retry', updated_at = ?,
                     error = 'unconfirmed: the run sending it stopped before the answer'
                   WHERE status = 'sent'""",
                (utcnow(),),
            ).rowcount

    def take_deliveries(self, kind: str, size: int, tried: Iterable[int] = ()) -> list[dict[str, Any]]:
        """The next deliveries of one kind (none of `tried`: already attempted by this run), marked sent
        (committed) before the request goes out."""
        with self.transaction():
            rows = list(self.db.query(
                """SELECT d.*, a.alert, a.account_id FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
                   WHERE d.kind = ? AND d.status IN ('pending', 'retry')
                     AND d.id NOT IN (SELECT value FROM json_each(?)) ORDER BY d.attempts, d.id LIMIT ?""",
                [kind, json.dumps(sorted(tried)), size],
            ))
            return self._mark_sent("alert_deliveries", rows)

    def release_deliveries(self, ids: list[int]) -> None:
        """Deliveries that were not sent after all (quota stop, stop request) are pending again."""
        self._release_sent("alert_deliveries", ids)

    def settle_deliveries(self, outcome: list[tuple[int, str, str | None, str | None]]) -> None:
        """(delivery id, status, error, external id) for each delivery of a request."""
        now = utcnow()
        with self.transaction():
            self.conn.executemany(
                "UPDATE alert_deliveries SET status = ?, error = ?, external_id = coalesce(?, external_id), "
                "updated_at = ? WHERE id = ?",
                ((status, error, external, now, did) for did, status, error, external in outcome),
            )

    def open_targets(self, kind: str) -> list[str]:
        """The distinct targets of a kind's open deliveries (webhooks: the URL variables)."""
        rows = self.conn.execute(
            "SELECT DISTINCT target FROM alert_deliveries WHERE kind = ? AND status IN ('pending', 'retry') "
            "ORDER BY target", (kind,))
        return [r[0] for r in rows]

    def skip_deliveries(self, kind: str, why: str, target: str | None = None, status: str = "skipped") -> int:
        """Open deliveries of a kind (or of one target) that cannot be sent here: skipped (no credentials,
        no URL) or failed (a URL that is not usable), with the reason."""
        sql = ("UPDATE alert_deliveries SET status = ?, error = ?, updated_at = ? "
               "WHERE kind = ? AND status IN ('pending', 'retry')")
        args: list[Any] = [status, why, utcnow(), kind]
        if target is not None:
            sql, args = sql + " AND target = ?", [*args, target]
        with self.transaction():
            return self.conn.execute(sql, args).rowcount

    # ------------------------------------------------------------ observing a run from another thread

    @staticmethod
    @contextmanager
    def watch(path: str | Path) -> Iterator[ReadConnection]:
        """A read-only connection of its own to the store at `path`, for a thread that observes a run
        (the progress bars): it never writes, and gives up waiting for a busy store after a second."""
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1, check_same_thread=False)
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    def run_outbox_counts(conn: ReadConnection, run_id: int) -> list[tuple[str, str, int]]:
        """(system, status, count) of one run's outbox rows, read through `conn` (Store.watch);
        none while the store is busy or not yet migrated (an observer tries again later)."""
        try:
            return conn.execute(
                "SELECT system, status, count(*) FROM outbox WHERE run_id = ? GROUP BY system, status", (run_id,)
            ).fetchall()
        except sqlite3.Error:
            return []
