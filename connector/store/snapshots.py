"""Rebuilt score history (`healthsync rescore`): series of snapshots, kept apart from the live
scores and their history, each tagged with the mappings version that produced it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .base import Area, utcnow

SnapshotRow = tuple[str, str, int, bytes]  # (as_of, score, accounts, the columns: one .npz blob)
# each date has one row per score and one under the score '' with the date's metric values; a
# series made before that layout (no '' rows) is not offered, so `backtest` rebuilds it


class Snapshots(Area):
    def save_series(self, version: str, first: str, last: str, every_days: int, rows: Iterable[SnapshotRow],
                    assumptions: list[str]) -> int:
        """Replace the series of this mappings version and schedule with `rows`; returns its id."""
        with self.transaction():
            self.conn.execute(
                "DELETE FROM snapshot_series WHERE mappings_version = ? AND first = ? AND last = ? AND every_days = ?",
                (version, first, last, every_days))
            self.conn.execute("DELETE FROM score_snapshots WHERE series NOT IN (SELECT id FROM snapshot_series)")
            series = self.conn.execute(
                "INSERT INTO snapshot_series (mappings_version, first, last, every_days, built_at, assumptions) "
                "VALUES (?, ?, ?, ?, ?, ?)", (version, first, last, every_days, utcnow(), json.dumps(assumptions))
            ).lastrowid
            self.conn.executemany("INSERT INTO score_snapshots VALUES (?, ?, ?, ?, ?)",
                                  ((series, *row) for row in rows))
        return int(series or 0)

    def series_list(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            """SELECT s.id, s.mappings_version, s.first, s.last, s.every_days, s.built_at, s.assumptions,
                      (SELECT count(DISTINCT as_of) FROM score_snapshots WHERE series = s.id) AS dates
               FROM snapshot_series s ORDER BY s.built_at DESC, s.id DESC""")
        names = [d[0] for d in rows.description]
        return [dict(zip(names, r, strict=True)) for r in rows]

    def latest_series(self, version: str) -> dict[str, Any] | None:
        """The newest series built with this mappings version, or None."""
        for s in self.series_list():
            if s["mappings_version"] == version and self.conn.execute(
                    "SELECT 1 FROM score_snapshots WHERE series = ? AND score = '' LIMIT 1", (s["id"],)).fetchone():
                return s
        return None

    def snapshots(self, series: int, score: str) -> list[tuple[str, bytes]]:
        """(as_of, columns blob) of one score in a series, oldest first."""
        rows = self.conn.execute(
            "SELECT as_of, columns FROM score_snapshots WHERE series = ? AND score = ? ORDER BY as_of", (series, score))
        return [(r[0], bytes(r[1])) for r in rows]

    # ------------------------------------------------------------ outcome events

    def records_state(self, pairs: list[tuple[str, str]]) -> list[list[Any]]:
        """Per (system, object): live and deleted records and the latest pull, which change with any
        record pulled or deleted (what cached outcome events are keyed by)."""
        return [[system, obj, *self.conn.execute(
            "SELECT sum(deleted = 0), sum(deleted), max(pulled_at) FROM records WHERE system = ? AND object = ?",
            (system, obj)).fetchone()] for system, obj in pairs]

    def save_events(self, fingerprint: str, events: str) -> None:
        """Keep these outcome events (JSON) as the only cached ones."""
        with self.transaction():
            self.conn.execute("DELETE FROM outcome_events")
            self.conn.execute("INSERT INTO outcome_events VALUES (?, ?, ?)", (fingerprint, utcnow(), events))

    def cached_events(self, fingerprint: str) -> str | None:
        row = self.conn.execute("SELECT events FROM outcome_events WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return row[0] if row else None
