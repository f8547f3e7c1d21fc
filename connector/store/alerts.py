"""Alerts: each alert's rule and per-account state, and the alerts that fired (with their deliveries)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .base import Area, utcnow


class Alerts(Area):
    def alert_rules(self) -> dict[str, dict[str, str]]:
        """alert -> its condition, baseline_at and evaluated_at: the alerts evaluated (and recorded) before."""
        return {r["alert"]: r for r in self.db.query("SELECT * FROM alert_rules")}

    def alert_state(self, alert: str) -> dict[int, tuple[int, Any]]:
        """account_id -> (active 0/1, last value seen) for one alert."""
        rows = self.conn.execute("SELECT account_id, active, value FROM alert_state WHERE alert = ?", (alert,))
        return {a: (active, value) for a, active, value in rows}

    def record_alerts(
        self,
        rules: list[tuple[str, str, str, str]],
        restarted: list[str],
        states: list[tuple[str, int, int, str, Any]],
        fired: list[tuple[tuple[Any, ...], Callable[[int], list[tuple[Any, ...]]]]],
        keep: list[str],
    ) -> list[int]:
        """Save one evaluation of the alerts, all or nothing; returns the ids of the fired alerts.

        rules: (alert, condition, baseline_at, evaluated_at); restarted: alerts whose
        condition changed (their state is dropped first); states: (alert, account_id,
        active, since, value) rows that changed (`since` is kept when `active` did not
        change); fired: ((run_id, alert, score, account_id, fired_at, detail_json),
        deliveries(alert_id) -> [(action, kind, target, payload_json, status, error)]);
        keep: the alerts in the mappings (the rules and state of any other are removed).
        """
        now = utcnow()
        ids: list[int] = []
        with self.transaction():
            stale = json.dumps(keep)
            self.conn.execute("DELETE FROM alert_rules WHERE alert NOT IN (SELECT value FROM json_each(?))", (stale,))
            self.conn.execute("DELETE FROM alert_state WHERE alert NOT IN (SELECT value FROM json_each(?))", (stale,))
            self.conn.executemany("DELETE FROM alert_state WHERE alert = ?", ((a,) for a in restarted))
            self.conn.executemany("INSERT OR REPLACE INTO alert_rules VALUES (?, ?, ?, ?)", rules)
            self.conn.executemany(
                """INSERT INTO alert_state VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (alert, account_id) DO UPDATE SET
                     since = CASE WHEN alert_state.active = excluded.active THEN alert_state.since ELSE excluded.since END,
                     active = excluded.active, value = excluded.value""",
                states,
            )
            for row, deliveries in fired:
                cur = self.conn.execute(
                    "INSERT INTO alerts (run_id, alert, score, account_id, fired_at, detail) VALUES (?, ?, ?, ?, ?, ?)", row
                )
                alert_id = int(cur.lastrowid or 0)
                ids.append(alert_id)
                self.conn.executemany(
                    """INSERT INTO alert_deliveries (alert_id, action, kind, target, payload, status, error, updated_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    ((alert_id, *d, now) for d in deliveries(alert_id)),
                )
        return ids

    def fired_alerts(self, limit: int = 50, alert_id: int | None = None) -> list[dict[str, Any]]:
        """The latest fired alerts, newest first, each with its account and its deliveries."""
        where, args = ("WHERE a.id = ?", [alert_id]) if alert_id is not None else ("", [])
        rows = list(self.db.query(
            f"""SELECT a.*, c.key AS account_key, c.name AS account_name FROM alerts a
                JOIN accounts c ON c.id = a.account_id {where} ORDER BY a.id DESC LIMIT ?""",
            [*args, limit],
        ))
        by_alert: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
        if rows:
            for d in self.db.query(
                "SELECT * FROM alert_deliveries WHERE alert_id IN (SELECT value FROM json_each(?)) ORDER BY id",
                [json.dumps(list(by_alert))],
            ):
                by_alert[d["alert_id"]].append(d)
        for r in rows:
            r["deliveries"] = by_alert[r["id"]]
        return rows
