"""What changed since the last measure: the records stored and the accounts re-linked since, and
when each account's values next move with time alone. The measure step (connector/metrics.py)
measures only those accounts; without a measure state (a new store, other mappings) it measures all.
The same for the plan (connector/writeback.py): the CRM records stored or re-linked since the last
plan, and the accounts whose scores changed. And for the scores, whether anything they read
changed since the last (`inputs_changes`, `moved_between`; connector/scoring/standing.py).

Records are queued in the transaction that stores them, with the parent they had and the parent
they have (a ticket moved to another organization changes both accounts); links in the one that
changes them. The queue is emptied in the transaction that records what the measure found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from ..times import moment_of
from .base import INPUTS_CHANGES, Area, _decoded

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STATE = "measure.state"
_PLAN = "plan.state"
_MATCH = "match.state"
_STALE = "match.stale"
Matched = Callable[[dict[str, Any]], Any]  # what matching reads of a record (None: nothing)


def _literal(name: str) -> str:
    """A system, object or field name written into SQL (partial indexes need literals): names only."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain name: {name!r}")
    return name


def _matched(matched: Matched, record: tuple[dict[str, Any], int] | None) -> Any:
    """What matching reads of a stored (data, deleted) record; a deleted or absent one is nothing."""
    return None if record is None or record[1] else matched(record[0])


def _same(old: dict[str, Any], new: dict[str, Any], ignored: frozenset[str], loose: bool = False) -> bool:
    """The same record but for the `ignored` fields (`loose`: values the same in another spelling
    are the same: 91.0 and '91.0', one moment in two formats, None and '', as the plan compares)."""
    if not ignored and not loose:
        return old == new
    keys = (old.keys() | new.keys()) - ignored
    return all(old.get(k) == new.get(k) or (loose and _spelled(old.get(k)) == _spelled(new.get(k))) for k in keys)


def _spelled(value: Any) -> Any:
    """One spelling of a CRM value: a number as a float, a moment as epoch seconds, '' as None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value
    try:
        return float(value)
    except ValueError:
        pass
    moment = moment_of(value)
    return moment.timestamp() if moment is not None else value


def _parent_sql(via: str) -> str:
    return f"""CAST(json_extract(data, '$."{_literal(via)}"') AS TEXT)"""


class Changes(Area):
    def inputs_changes(self) -> int:
        """How many writes changed what scoring reads (values, live accounts, overrides, score rows):
        the last scores still stand only while it is what it was after them."""
        return int(self.meta(INPUTS_CHANGES) or 0)

    def moved_between(self, area: str, name: str, after: str, upto: str) -> bool:
        """Whether a moment of `name` lies after `after` and at or before `upto`: a `since` of its
        values (area "value"), a `scored_at` of its score history ("score")."""
        return self.conn.execute("SELECT 1 FROM moments WHERE area = ? AND name = ? AND at > ? AND at <= ? LIMIT 1",
                                 (area, name, after, upto)).fetchone() is not None

    def measure_state(self) -> str | None:
        """What the last measure measured with (its mappings, its names); None: no measure yet."""
        return self.meta(_STATE)

    def _queue_records(self, system: str, obj: str, rows: list[tuple[str, dict[str, Any], str | None, bool]],
                       via: str | None, ignored: frozenset[str] = frozenset(),
                       planned: frozenset[str] | None = None, matched: Matched | None = None,
                       alone: bool = False) -> None:
        """Inside the transaction storing these (id, data, modified, deleted) records, before they are
        stored: queue each one that changes for the measure (but for `ignored` fields), with the
        parent it had and the one it will have; for a CRM's written object (`planned`: the fields
        to ignore there, its stamps), for the plan; and mark the match stale when what matching
        reads of a record changes (`matched`: that part of a record, None for an object matching
        never reads; not given: any change); `alone`: records matched alone (usage keys, which no
        other record's match reads), queued for the next match to attach only them instead. Only
        once a measure (plan, match) state exists: a store's first one does everything anyway."""
        measuring = self.meta(_STATE) is not None
        planning = planned is not None and self.meta(_PLAN) is not None
        matching = self.meta(_MATCH) is not None and self.meta(_STALE) is None
        if not rows or not (measuring or planning or matching):
            return
        stored: dict[str, tuple[dict[str, Any], int]] = {}
        for start in range(0, len(rows), 50_000):
            stored.update((rid, (_decoded(data), deleted)) for rid, data, deleted in self.conn.execute(
                "SELECT id, data, deleted FROM records WHERE system = ? AND object = ? "
                "AND id IN (SELECT value FROM json_each(?))",
                (system, obj, json.dumps([r[0] for r in rows[start:start + 50_000]]))))
        queued: set[tuple[str, str]] = set()
        to_plan: list[str] = []
        to_match: list[str] = []
        stale = False
        for rid, data, _modified, deleted in rows:
            old = stored.get(rid)
            kept = old is not None and old[1] == int(deleted)
            if matching and not stale:
                differs = not (kept and old[0] == data) if matched is None else \
                    _matched(matched, old) != _matched(matched, (data, int(deleted)))  # type: ignore[index]
                if differs and alone:
                    to_match.append(rid)
                else:
                    stale = differs
            if planning and not (kept and _same(old[0], data, planned or frozenset(), loose=True)):  # type: ignore[index]
                to_plan.append(rid)
            if not measuring or (kept and _same(old[0], data, ignored)):  # type: ignore[index]
                continue
            parents = {"" if via is None or data.get(via) is None else str(data[via])}
            if old is not None and via is not None and old[0].get(via) is not None:
                parents.add(str(old[0][via]))
            queued.update((rid, p) for p in parents)
        self.conn.executemany("INSERT OR IGNORE INTO measure_queue VALUES (?, ?, ?, ?)",
                              ((system, obj, rid, p) for rid, p in queued))
        self.conn.executemany("INSERT OR IGNORE INTO plan_queue VALUES (?, ?, ?)", ((system, obj, rid) for rid in to_plan))
        self.conn.executemany("INSERT OR IGNORE INTO match_queue VALUES (?, ?, ?)", ((system, obj, rid) for rid in to_match))
        if stale:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (_STALE,))

    def match_due(self, state: str) -> bool:
        """Whether matching may give something else than the last match (made with `state`): what
        it reads of a record changed since, or it was made with other mappings, or never."""
        return (self.meta(_MATCH) != state or self.meta(_STALE) is not None
                or self.conn.execute("SELECT 1 FROM match_queue LIMIT 1").fetchone() is not None)

    def match_queued(self, state: str) -> dict[tuple[str, str], list[str]] | None:
        """(system, object) -> ids of the records matched alone stored since the last match, when
        only they changed since it was made with `state` (then only they need attaching again);
        None when anything else changed, or nothing."""
        if self.meta(_MATCH) != state or self.meta(_STALE) is not None:
            return None
        out: dict[tuple[str, str], list[str]] = {}
        for system, obj, rid in self.conn.execute("SELECT system, object, id FROM match_queue ORDER BY system, object, id"):
            out.setdefault((system, obj), []).append(rid)
        return out or None

    def matched(self, state: str) -> None:
        """After a match is saved: it was made with `state`, over the records as stored."""
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_MATCH, state))
            self.conn.execute("DELETE FROM meta WHERE key = ?", (_STALE,))
            self.conn.execute("DELETE FROM match_queue")

    def _queue_accounts(self, account_ids: Iterable[int]) -> None:
        """Inside the transaction changing their links: these accounts are measured again."""
        if self.meta(_STATE) is None:
            return
        self.conn.executemany("INSERT OR IGNORE INTO measure_accounts VALUES (?)", ((a,) for a in account_ids))

    def _queue_links(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Inside the transaction changing them: records linked to another account (or none) are
        planned again."""
        if self.meta(_PLAN) is None:
            return
        self.conn.executemany("INSERT OR IGNORE INTO plan_queue VALUES (?, ?, ?)", keys)

    def _queue_scored_accounts(self, account_ids: list[int]) -> None:
        """Inside the transaction writing scores: the accounts whose score row changes or goes are
        planned again."""
        if self.meta(_PLAN) is None:
            return
        self.conn.executemany("INSERT OR IGNORE INTO plan_accounts VALUES (?)", ((a,) for a in account_ids))

    def plan_state(self) -> str | None:
        """What the last plan planned with; None: no plan yet (or one of only some systems)."""
        return self.meta(_PLAN)

    def records_to_plan(self, system: str, obj: str) -> list[str]:
        """Ids of one CRM object's records to plan again: stored or re-linked since the last plan,
        linked to an account whose scores changed, or with a change not yet written."""
        rows = self.conn.execute(
            """SELECT id FROM plan_queue WHERE system = :s AND object = :o
               UNION SELECT l.external_id FROM plan_accounts p JOIN account_links l
                 ON l.account_id = p.account_id AND l.system = :s AND l.object = :o
               UNION SELECT record_id FROM outbox WHERE system = :s AND object = :o AND status != 'done'
               ORDER BY 1""", {"s": system, "o": obj})
        return [r for (r,) in rows]

    def planned(self, state: str) -> None:
        """Record a plan of every CRM: the state it planned with, and an empty queue."""
        with self.transaction():
            self.conn.execute("DELETE FROM plan_queue")
            self.conn.execute("DELETE FROM plan_accounts")
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_PLAN, state))

    def changed_accounts(self, now: float, belongs: Iterable[tuple[str, str, str]]) -> set[int]:
        """Live accounts to measure again at `now` (epoch seconds): those owning a queued record
        (directly, or through the parent it had or has: `belongs` gives (system, object, the parent
        object)), those re-linked, those whose values move with time by now, and those never measured."""
        found: set[int] = set()
        queries = [
            ("""SELECT l.account_id FROM measure_queue q JOIN account_links l
                ON l.system = q.system AND l.object = q.object AND l.external_id = q.id""", ()),
            ("SELECT account_id FROM measure_accounts", ()),
            ("SELECT account_id FROM measure_until WHERE until IS NOT NULL AND until <= ?", (now,)),
            ("""SELECT id FROM accounts WHERE deleted_at IS NULL
                AND id NOT IN (SELECT account_id FROM measure_until)""", ()),
        ]
        queries += [("""SELECT l.account_id FROM measure_queue q JOIN account_links l
                        ON l.system = q.system AND l.object = ? AND l.external_id = q.parent
                        WHERE q.system = ? AND q.object = ? AND q.parent != ''""", (parent, system, obj))
                    for system, obj, parent in belongs]
        for sql, args in queries:
            found.update(a for (a,) in self.conn.execute(sql, args))
        live = {a for (a,) in self.conn.execute("SELECT id FROM accounts WHERE deleted_at IS NULL")}
        return found & live

    def queued(self) -> int:
        """Records and accounts waiting to be measured again."""
        return sum(int(self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                   for t in ("measure_queue", "measure_accounts"))

    def records_of_parents(self, system: str, obj: str, via: str, parents: list[str]) -> list[tuple[str, Any]]:
        """(id, data) of the live records of one object whose `via` field names one of `parents`,
        through an index on that field (made on first use)."""
        where = f"system = '{_literal(system)}' AND object = '{_literal(obj)}'"
        index = f"records_parent_{system}_{obj}"
        self.conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON records({_parent_sql(via)}) WHERE {where}")
        out: list[tuple[str, Any]] = []
        for start in range(0, len(parents), 50_000):
            rows = self.conn.execute(
                f"""SELECT id, data FROM records INDEXED BY {index} WHERE {where} AND deleted = 0
                    AND {_parent_sql(via)} IN (SELECT value FROM json_each(?)) ORDER BY id""",
                (json.dumps(parents[start:start + 50_000]),))
            out += [(rid, _decoded(data)) for rid, data in rows]
        out.sort(key=lambda r: r[0])
        return out

    def measured(self, until: Iterable[tuple[int, float | None, str | None]], state: str, at: str,
                 inputs_move: float | None, everything: bool) -> None:
        """Record a measure: for each account measured, when its values move next and its part of the
        totals (JSON: metric -> [unit, value]); `everything`: these are all the accounts. Then the
        state it measured with, the moment it measured at (`at`, ISO), when the metrics from CRM
        inputs alone next move with time (`inputs_move`, epoch seconds), and an empty queue."""
        with self.transaction():
            if everything:
                self.conn.execute("DELETE FROM measure_until")
            self.conn.executemany("INSERT OR REPLACE INTO measure_until VALUES (?, ?, ?)", until)
            self.conn.execute("DELETE FROM measure_queue")
            self.conn.execute("DELETE FROM measure_accounts")
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_STATE, state))
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('measure.at', ?)", (at,))
            self.conn.execute("DELETE FROM meta WHERE key = 'measure.inputs_move'")
            if inputs_move is not None:  # when the metrics from CRM inputs alone move with time
                self.conn.execute("INSERT INTO meta VALUES ('measure.inputs_move', ?)", (repr(inputs_move),))

    def measured_totals(self) -> dict[str, dict[str, float]]:
        """metric -> unit -> the sum over live accounts of their last measured parts (MRR per currency)."""
        out: dict[str, dict[str, float]] = {}
        for key, unit, value in self.conn.execute(
                """SELECT t.key, json_extract(t.value, '$[0]'), sum(json_extract(t.value, '$[1]'))
                   FROM measure_until m JOIN accounts a ON a.id = m.account_id, json_each(m.totals) t
                   WHERE m.totals IS NOT NULL AND a.deleted_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2"""):
            out.setdefault(key, {})[unit] = round(value, 2)
        return out
