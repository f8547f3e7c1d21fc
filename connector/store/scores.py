"""Scores: the current results, their history, CSM overrides and the overrides' audit trail."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NotFound
from .base import utcnow
from .changes import Changes
from .packed import pack, unpack
from .values import _positions

ScoreRow = sqlite3.Row  # a current result, read by column name (`row["value"]`): lighter than a dict


@dataclass
class ScoreTable:
    """One named score's results as the store keeps them: a column per `scores` column, one row per
    account (`ids` ascending). Numbers are floats (NaN for NULL) but `override_id` (-1 for none); texts
    are object arrays; `groups` holds each sub-score's column, `model_version` is one for all."""

    ids: np.ndarray
    version: str
    columns: dict[str, np.ndarray]  # every _SCORE_COLUMNS name but model_version and groups
    groups: dict[str, np.ndarray]

    def rows(self, index: np.ndarray | None = None) -> Iterator[tuple[Any, ...]]:
        """The store rows (account_id, *_SCORE_COLUMNS) of all accounts, or of the rows `index` names."""
        def pick(values: np.ndarray) -> np.ndarray:
            return values if index is None else values[index]

        n = len(pick(self.ids))
        groups_json = _groups_json({g: pick(v) for g, v in self.groups.items()}) if self.groups else itertools.repeat("{}", n)
        columns: list[Iterable[Any]] = []
        for name in _SCORE_COLUMNS:
            if name == "model_version":
                columns.append(itertools.repeat(self.version, n))
            elif name == "groups":
                columns.append(groups_json)
            elif name == "override_id":
                columns.append([None if o < 0 else o for o in pick(self.columns[name]).tolist()])
            elif name in _NUMBERS:
                columns.append(_floats(pick(self.columns[name])))
            else:
                columns.append(pick(self.columns[name]).tolist())
        return iter(zip(pick(self.ids).tolist(), *columns, strict=True))

    def packed(self) -> bytes:
        """The table as one blob (`score_columns`)."""
        return pack({"account_id": self.ids, "model_version": np.array([self.version], dtype=object),
                     "groups": np.array(list(self.groups), dtype=object), **self.columns,
                     **{_GROUP + g: v for g, v in self.groups.items()}})

    def changes(self, previous: dict[str, np.ndarray] | None) -> TableChanges | None:
        """How this table differs from `previous` (the copy of the rows stored); None when there is
        none, or its sub-scores are others (then every row is read and compared)."""
        if previous is None or previous["groups"].tolist() != list(self.groups):
            return None
        before = previous["account_id"]
        at, found = _positions(before, self.ids)
        moved, history = ~found, ~found
        kept = np.flatnonzero(found)
        for name, values in itertools.chain(self.columns.items(), ((_GROUP + g, v) for g, v in self.groups.items())):
            new, old = values[kept], previous[name][at]
            if new.dtype == np.float64 and name.startswith(_GROUP):  # stored as JSON text: -0.0 is not 0.0 there
                differs = (new.view(np.int64) != old.view(np.int64)) & ~(np.isnan(new) & np.isnan(old))
            elif new.dtype == np.float64:  # equal as the stored REAL columns compare (-0.0 is 0.0), N/A to N/A too
                differs = (new != old) & ~(np.isnan(new) & np.isnan(old))
            else:
                differs = new != old
            moved[kept[differs]] = True
            if name in ("value", "status"):
                history[kept[differs]] = True
        versioned = previous["model_version"].tolist() != [self.version]
        return TableChanges(np.flatnonzero(moved), np.flatnonzero(history),
                            np.flatnonzero(found & ~moved) if versioned else np.zeros(0, dtype=np.int64),
                            np.setdiff1d(before, self.ids, assume_unique=True))


@dataclass
class TableChanges:
    """What writing a score table changes in the rows stored (positions in the table, ids gone)."""

    moved: np.ndarray  # rows new or with another result: written, scored now
    history: np.ndarray  # rows new or with another value or status: appended to score_history
    versioned: np.ndarray  # rows with the same result under another model version: only that is updated
    gone: np.ndarray  # account ids stored and not in the table: deleted

    def __bool__(self) -> bool:
        return bool(len(self.moved) or len(self.versioned) or len(self.gone))


class Scores(Changes):
    def write_scores(self, score: str, rows: Iterable[tuple[Any, ...]], scored_at: str) -> int:
        """Save one named score's results; only rows that differ are written. Returns how many.

        rows: (account_id, model, model_version, computed, value, status_computed,
        status, grade, override_id, trend, trend_direction, coverage,
        points_to_next, drivers, groups_json, na_reason). `scored_at` is kept
        from the previous row when nothing in it changed, so it says when the
        result last changed; changed values and statuses go to score_history.
        The stored rows are read once and compared here: a rescore with nothing
        changed writes nothing.
        """
        return self._write_rows(score, rows, scored_at)

    def write_score_table(self, score: str, table: ScoreTable, scored_at: str) -> int:
        """`write_scores` of a whole table, compared column by column with the columnar copy of the
        last one written (`score_columns`, true to the rows: any other write drops it): no stored row
        is read, only the rows that differ are written, and the copy is replaced. Without a copy (a
        first score, other sub-scores), every row is read and compared."""
        row = self.conn.execute("SELECT columns FROM score_columns WHERE score = ?", (score,)).fetchone()
        changes = table.changes(unpack(row[0]) if row else None)
        if changes is not None and not changes:
            return 0  # the copy, and so the stored rows, are this table already
        try:
            copy: bytes | None = table.packed()
        except TypeError:  # a text orjson refuses: no copy, the next write compares every row
            copy = None
        if changes is None or copy is None:
            return self._write_rows(score, table.rows(), scored_at, copy)
        return self._write_changes(score, table, changes, scored_at, copy)

    def _write_changes(self, score: str, table: ScoreTable, changes: TableChanges, scored_at: str, copy: bytes) -> int:
        """What `_write_rows` would do for these changes, from the columns: the moved rows written
        with `scored_at`, the model version of the others updated (their scored_at kept), history
        appended, the gone deleted."""
        history = [(score, a, scored_at, v, s, table.version) for a, v, s in zip(
            table.ids[changes.history].tolist(), _floats(table.columns["value"][changes.history]),
            table.columns["status"][changes.history].tolist(), strict=True)]
        touched = [*table.ids[changes.moved].tolist(), *table.ids[changes.versioned].tolist(), *changes.gone.tolist()]
        with self.transaction(), self._untriggered("score_"):  # the copy and the moments are kept here, not row by row
            self._queue_scored_accounts(touched)  # their CRM records are planned again
            if len(changes.versioned):  # every row: the moved ones are replaced below
                self.conn.execute("UPDATE scores SET model_version = ? WHERE score = ?", (table.version, score))
            self.conn.executemany(_HISTORY_SQL, history)
            self.conn.executemany(
                _SCORES_SQL,
                ((score, *r, scored_at) for r in table.rows(changes.moved)))
            self.conn.executemany("DELETE FROM scores WHERE score = ? AND account_id = ?",
                                  ((score, a) for a in changes.gone.tolist()))
            self.conn.execute("INSERT OR REPLACE INTO score_columns VALUES (?, ?)", (score, copy))
            self._inputs_changed([("score", score, scored_at)] if history else [])
        return len(touched) - len(changes.gone)

    def _write_rows(self, score: str, rows: Iterable[tuple[Any, ...]], scored_at: str, copy: bytes | None = None) -> int:
        """`rows` compared with every stored row of the score and written where they differ; a stored
        one not among them is deleted; `copy` saved with them."""
        current = {r[0]: r[1:] for r in self.conn.execute(
            f"SELECT account_id, {', '.join(_SCORE_COLUMNS)}, scored_at FROM scores WHERE score = ?", (score,))}
        version = _SCORE_COLUMNS.index("model_version")
        value, status = 1 + _SCORE_COLUMNS.index("value"), 1 + _SCORE_COLUMNS.index("status")
        changed: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        seen: set[int] = set()
        for given in rows:
            row = tuple(given)
            account_id = row[0]
            seen.add(account_id)
            was = current.get(account_id)
            if was is not None and was[:-1] == row[1:]:
                continue
            # a new mappings version that leaves the result as it was is recorded, but is no new result:
            # the row keeps its scored_at (else every record's scored-at field would be rewritten)
            moved = was is None or any(a != b for k, (a, b) in enumerate(zip(was[:-1], row[1:], strict=True))
                                       if k != version)
            changed.append((score, *row, scored_at if moved else was[-1]))
            if was is None or was[value - 1] != row[value] or was[status - 1] != row[status]:
                history.append((score, account_id, scored_at, row[value], row[status], row[1 + version]))
        gone = [a for a in current if a not in seen]
        with self.transaction(), self._untriggered("score_"):  # the copy and the moments are kept here, not row by row
            self._queue_scored_accounts([c[1] for c in changed] + gone)  # their CRM records are planned again
            self.conn.executemany(_HISTORY_SQL, history)
            self.conn.executemany(
                _SCORES_SQL, changed)
            self.conn.executemany("DELETE FROM scores WHERE score = ? AND account_id = ?", ((score, a) for a in gone))
            if copy is not None:
                self.conn.execute("INSERT OR REPLACE INTO score_columns VALUES (?, ?)", (score, copy))
            elif changed or gone:  # what the triggers do: a copy no longer true is dropped
                self.conn.execute("DELETE FROM score_columns WHERE score = ?", (score,))
            if changed or gone:
                self._inputs_changed([("score", score, scored_at)] if history else [])
        return len(changed)

    def score_as_of(self, score: str, ids: np.ndarray, before: str) -> np.ndarray:
        """Each account's score value as it stood at `before` (NaN when unknown)."""
        out = np.full(len(ids), np.nan)
        rows = self.conn.execute(
            """SELECT account_id, value, max(scored_at) FROM score_history
               WHERE score = ? AND scored_at <= ? GROUP BY account_id""",
            (score, before),
        ).fetchall()
        if rows:
            at, keep = _positions(ids, np.fromiter((r[0] for r in rows), np.int64, len(rows)))
            vals = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float)
            out[at] = vals[keep]
        return out

    def score_names(self) -> list[str]:
        """The named scores the store holds current scores of."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT score FROM scores ORDER BY score")]

    def current_scores(self, score: str | None = None, accounts: list[int] | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE s.score = ?", [score]) if score else ("WHERE 1", [])
        if accounts is not None:  # just these accounts' (an incremental plan)
            where, args = where + " AND s.account_id IN (SELECT value FROM json_each(?))", [*args, json.dumps(accounts)]
        return list(
            self.db.query(
                f"""SELECT a.key AS account_key, a.name AS account_name, s.*
                    FROM scores s JOIN accounts a ON a.id = s.account_id {where}
                    ORDER BY s.score, a.key""",
                args,
            )
        )

    def score_of(self, score: str, account_id: int) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM scores WHERE score = ? AND account_id = ?", [score, account_id]))
        return rows[0] if rows else None

    def score_peaks(self, score: str, start: str, end: str) -> dict[int, tuple[float, str]]:
        """account_id -> (the highest value held between start and end, since when): the value held
        at `start` and every value taken after it."""
        rows = self.conn.execute(
            """SELECT account_id, max(value), scored_at FROM (
                 SELECT account_id, value, max(scored_at) AS scored_at FROM score_history
                   WHERE score = :score AND scored_at <= :start GROUP BY account_id
                 UNION ALL
                 SELECT account_id, value, scored_at FROM score_history
                   WHERE score = :score AND scored_at > :start AND scored_at <= :end)
               WHERE value IS NOT NULL GROUP BY account_id""",
            {"score": score, "start": start, "end": end},
        )
        return {a: (float(v), at) for a, v, at in rows}

    def scores_before(self, score: str, account_ids: list[int], at: str) -> dict[int, tuple[float | None, str | None]]:
        """account_id -> (value, status) each account's score held at `at`, from the score history."""
        rows = self.conn.execute(
            """SELECT account_id, value, status, max(scored_at) FROM score_history
               WHERE score = ? AND scored_at <= ? AND account_id IN (SELECT value FROM json_each(?))
               GROUP BY account_id""",
            (score, at, json.dumps(account_ids)),
        )
        return {a: (v, st) for a, v, st, _at in rows}

    def score_results(self, score: str) -> dict[int, ScoreRow]:
        """account_id -> the value, status, model, groups and drivers of its current result for `score`,
        read by name (`row["value"]`). Rows, not dicts: the alerts hold every account's (a 100k run,
        two scores: about 70 MB less)."""
        cursor = self.conn.cursor()
        cursor.row_factory = sqlite3.Row
        rows = cursor.execute("SELECT account_id, value, status, model, groups, drivers FROM scores WHERE score = ?", (score,))
        return {r[0]: r for r in rows}

    # what the report shows of each score

    def score_versions(self) -> dict[str, int]:
        """model_version of the stored scores -> rows, most rows first."""
        return dict(self.conn.execute(
            "SELECT model_version, count(*) FROM scores GROUP BY model_version ORDER BY count(*) DESC"
        ).fetchall())

    def score_spread(self, score: str, insufficient: str) -> list[tuple[Any, ...]]:
        """(model, value, status, accounts, sum of coverage, accounts with a coverage, accounts with no value
        because of too little coverage: an na_reason starting with `insufficient`) per model, value and status."""
        return self.conn.execute(
            """SELECT model, value, status, count(*), sum(coverage), count(coverage),
                      sum(value IS NULL AND na_reason LIKE ? || '%') FROM scores
               WHERE score = ? AND model IS NOT NULL GROUP BY model, value, status""",
            (insufficient, score),
        ).fetchall()

    def unscored_reasons(self, score: str, insufficient: str, thin: str) -> dict[str, int]:
        """Why accounts have no value for `score`: reason -> accounts, every na_reason starting with
        `insufficient` counted as the one reason `thin`; most accounts first."""
        rows = self.conn.execute(
            """SELECT CASE WHEN na_reason LIKE ? || '%' THEN ? ELSE coalesce(na_reason, 'no value') END, count(*)
               FROM scores WHERE score = ? AND value IS NULL GROUP BY 1 ORDER BY 2 DESC""",
            (insufficient, thin, score),
        )
        return {reason: int(n) for reason, n in rows}

    def group_values(self, score: str, names: list[str]) -> list[tuple[Any, ...]]:
        """(model, each named group's sub-score) of every scored account with a model."""
        columns = ", ".join("json_extract(groups, ?)" for _ in names)
        return self.conn.execute(
            f"SELECT model, {columns} FROM scores WHERE score = ? AND model IS NOT NULL",
            [*(f'$."{name}"' for name in names), score],
        ).fetchall()

    def score_values(self, score: str) -> tuple[np.ndarray, np.ndarray]:
        """(account ids ascending, value) of the accounts that have a value for this score."""
        cursor = self.conn.execute(
            "SELECT account_id, value FROM scores WHERE score = ? AND value IS NOT NULL ORDER BY account_id",
            (score,),
        )
        flat = np.fromiter(itertools.chain.from_iterable(cursor), dtype=float)
        return flat[0::2].astype(np.int64), flat[1::2]

    def score_accounts(self, score: str, account_ids: list[int]) -> list[tuple[int, str, str | None, str | None, str | None]]:
        """(account_id, key, name, model, status now) of a handful of accounts' current `score` results."""
        return self.conn.execute(
            """SELECT s.account_id, a.key, a.name, s.model, s.status FROM scores s
               JOIN accounts a ON a.id = s.account_id
               WHERE s.score = ? AND s.account_id IN (SELECT value FROM json_each(?))""",
            (score, json.dumps(account_ids)),
        ).fetchall()

    def active_overrides(self, score: str, at: str) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT * FROM overrides WHERE score = ? AND ended_at IS NULL AND expires_at > ? ORDER BY id",
                [score, at],
            )
        )

    def overrides(self, include_ended: bool = False) -> list[dict[str, Any]]:
        where = "" if include_ended else "WHERE o.ended_at IS NULL"
        return list(
            self.db.query(
                f"SELECT o.*, a.key AS account_key, a.name AS account_name FROM overrides o JOIN accounts a ON a.id = o.account_id {where} ORDER BY o.id"
            )
        )

    def audit(self, override_id: int | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE override_id = ?", [override_id]) if override_id else ("", [])
        return list(self.db.query(f"SELECT * FROM override_audit {where} ORDER BY id", args))

    def set_override(
        self,
        account_id: int,
        score: str,
        kind: str,
        value: str,
        reason: str,
        expires_at: str,
        source: str,
        actor: str,
        now: str | None = None,
    ) -> int:
        """Start an override, ending (and auditing) any active one for the same score."""
        now = now or utcnow()
        with self.transaction():
            for (old_id,) in self.conn.execute(
                "SELECT id FROM overrides WHERE account_id = ? AND score = ? AND ended_at IS NULL",
                (account_id, score),
            ).fetchall():
                self._end_override(old_id, now, "superseded", actor, {"by": "new override"})
            cur = self.conn.execute(
                """INSERT INTO overrides (account_id, score, kind, value, reason, source, set_by, set_at, expires_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (account_id, score, kind, value, reason, source, actor, now, expires_at),
            )
            new_id = int(cur.lastrowid or 0)
            self._audit(new_id, now, "set", actor, {"kind": kind, "value": value, "reason": reason, "expires_at": expires_at, "source": source})
        return new_id

    def end_override(self, override_id: int, why: str, actor: str, now: str | None = None) -> None:
        now = now or utcnow()
        with self.transaction():
            row = self.conn.execute("SELECT ended_at FROM overrides WHERE id = ?", (override_id,)).fetchone()
            if row is None:
                raise NotFound(f"no override #{override_id}")
            if row[0] is not None:
                raise NotFound(f"override #{override_id} already ended at {row[0]}")
            self._end_override(override_id, now, why, actor, {})

    def expire_overrides(self, now: str) -> int:
        """End overrides whose expiry has passed, with an audit entry each."""
        with self.transaction():
            ids = [r[0] for r in self.conn.execute(
                "SELECT id FROM overrides WHERE ended_at IS NULL AND expires_at <= ?", (now,)
            ).fetchall()]
            for override_id in ids:
                self._end_override(override_id, now, "expired", "healthsync", {})
        return len(ids)

    def _end_override(self, override_id: int, now: str, why: str, actor: str, detail: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE overrides SET ended_at = ?, ended_reason = ? WHERE id = ?", (now, why, override_id)
        )
        self._audit(override_id, now, why, actor, detail)

    def _audit(self, override_id: int, now: str, action: str, actor: str, detail: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT INTO override_audit (override_id, at, action, actor, detail) VALUES (?, ?, ?, ?, ?)",
            (override_id, now, action, actor, json.dumps(detail, sort_keys=True)),
        )


_SCORE_COLUMNS = (
    "model", "model_version", "computed", "value", "status_computed", "status", "grade", "override_id",
    "trend", "trend_direction", "coverage", "points_to_next", "drivers", "groups", "na_reason",
)
_NUMBERS = frozenset({"computed", "value", "trend", "coverage", "points_to_next"})
_GROUP = "group:"  # prefix of a sub-score's column in a score table's blob
_SCORES_SQL = f"INSERT OR REPLACE INTO scores VALUES ({', '.join('?' * (3 + len(_SCORE_COLUMNS)))})"
_HISTORY_SQL = """INSERT OR REPLACE INTO score_history (score, account_id, scored_at, value, status, model_version)
                  VALUES (?, ?, ?, ?, ?, ?)"""


def _groups_json(groups: dict[str, np.ndarray]) -> Iterator[str]:
    """Each row's sub-scores as the JSON text `json.dumps({name: value or None, ...})` makes, a
    template filled per row (a json.dumps of a dict per row took 7 of the 28 s of writing 1M rows)."""
    template = "{" + ", ".join(json.dumps(g).replace("%", "%%") + ": %s" for g in groups) + "}"
    texts = [_reprs(values) for values in groups.values()]
    return (template % row for row in zip(*texts, strict=True))


def _reprs(values: np.ndarray) -> list[str]:
    """Each float as JSON text (`repr`, "null" for NaN), made once per distinct value: sub-scores
    have 2 decimals, so a million rows hold a few thousand (distinct by their bits: -0.0 is not 0.0)."""
    distinct, where = np.unique(np.ascontiguousarray(values, dtype=np.float64).view(np.int64), return_inverse=True)
    texts = np.array(["null" if v != v else repr(v) for v in distinct.view(np.float64).tolist()], dtype=object)
    return texts[where.reshape(-1)].tolist()


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]
