"""Accounts and what belongs to them: links to external records, the raw records, cursors, match issues."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NotFound
from .base import _decoded, _encoded, utcnow
from .changes import Changes


@dataclass
class MatchCounts:
    accounts: dict[str, int]  # system -> live accounts its records made
    links: dict[tuple[str, str], int]  # (system, matched_by, every "domain X" as "domain") -> links


class Accounts(Changes):
    def upsert_accounts(self, rows: Iterable[dict[str, Any]], now: str | None = None) -> None:
        """Insert or update accounts by key (name, domain); `updated_at` moves only when one changed
        (a match of an unchanged org writes nothing)."""
        now = now or utcnow()
        stored = {key: (name, domain) for key, name, domain in self.conn.execute("SELECT key, name, domain FROM accounts")}
        rows = [r for r in rows if stored.get(r["key"], ()) != (r.get("name"), r.get("domain"))]  # only what differs
        with self.transaction():
            self.conn.executemany(
                """INSERT INTO accounts (key, name, domain, created_at, updated_at)
                   VALUES (:key, :name, :domain, :now, :now)
                   ON CONFLICT(key) DO UPDATE SET name = excluded.name,
                     domain = excluded.domain, updated_at = excluded.updated_at
                   WHERE accounts.name IS NOT excluded.name OR accounts.domain IS NOT excluded.domain""",
                ({"key": r["key"], "name": r.get("name"), "domain": r.get("domain"), "now": now} for r in rows),
            )

    def keep_accounts(self, keys: Iterable[str], now: str | None = None) -> None:
        """The accounts with these keys are live (again, where they were deleted); every other is deleted at `now`."""
        now = now or utcnow()
        live = set(keys)
        with self.transaction():  # found in one read of the accounts: a match of an unchanged org writes nothing
            stored = self.conn.execute("SELECT id, key, deleted_at IS NOT NULL FROM accounts").fetchall()
            gone = [(now, a) for a, key, deleted in stored if not deleted and key not in live]
            revived = [a for a, key, deleted in stored if deleted and key in live]
            self.conn.executemany("UPDATE accounts SET deleted_at = ? WHERE id = ?", gone)
            self._queue_accounts(revived)  # measured again: their values stood still while they were deleted
            self.conn.executemany("UPDATE accounts SET deleted_at = NULL WHERE id = ?", ((a,) for a in revived))

    def live_accounts(self) -> dict[int, tuple[str, str | None]]:
        """id -> (key, name) of every live account."""
        return {r[0]: (r[1], r[2]) for r in self.conn.execute("SELECT id, key, name FROM accounts WHERE deleted_at IS NULL")}

    def live_account_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM accounts WHERE deleted_at IS NULL").fetchone()[0])

    def account_ids(self) -> np.ndarray:
        """Ids of live accounts, ascending: the row order of every scoring column."""
        rows = self.conn.execute("SELECT id FROM accounts WHERE deleted_at IS NULL ORDER BY id")
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def account_keys(self) -> dict[str, int]:
        return {k: i for i, k in self.conn.execute("SELECT id, key FROM accounts")}

    def find_account(self, ref: str) -> dict[str, Any]:
        """An account by id, key, external id or exact name."""
        queries = [
            ("SELECT * FROM accounts WHERE key = ?", ref),
            ("SELECT a.* FROM accounts a JOIN account_links l ON l.account_id = a.id WHERE l.external_id = ?", ref),
            ("SELECT * FROM accounts WHERE name = ? COLLATE NOCASE", ref),
        ]
        if ref.isdigit():
            queries.insert(0, ("SELECT * FROM accounts WHERE id = ?", int(ref)))
        for sql, arg in queries:
            rows = list(self.db.query(sql, [arg]))
            if len(rows) == 1:
                return rows[0]
            if len(rows) > 1:
                raise NotFound(f"'{ref}' names {len(rows)} accounts; use the account key or id")
        raise NotFound(f"no account '{ref}' (tried id, key, external id and name)")

    def links(self, account_id: int) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT system, object, external_id, matched_by FROM account_links WHERE account_id = ? ORDER BY system", [account_id]))

    def link(self, rows: Iterable[tuple[str, str, str, int, str]], now: str | None = None) -> None:
        """Record (system, object, external_id, account_id, matched_by) links."""
        now = now or utcnow()
        with self.transaction():
            self.conn.executemany(
                """INSERT INTO account_links VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT(system, object, external_id) DO UPDATE SET
                     account_id = excluded.account_id, matched_by = excluded.matched_by,
                     linked_at = excluded.linked_at""",
                ((*r, now) for r in rows),
            )

    def replace_links(self, rows: Iterable[tuple[str, str, str, int, str]], now: str | None = None) -> int:
        """Make (system, object, external_id, account_id, matched_by) the complete set of links.

        Unchanged links keep their linked_at; returns how many links are new or changed.
        """
        incoming = {(system, obj, ext): (account_id, by) for system, obj, ext, account_id, by in rows}
        existing = {(system, obj, ext): (account_id, by) for system, obj, ext, account_id, by in self.conn.execute(
            "SELECT system, object, external_id, account_id, matched_by FROM account_links")}
        return self._relink(existing, incoming, now or utcnow())

    def replace_links_of(self, system: str, obj: str, ids: list[str],
                         rows: Iterable[tuple[str, str, str, int, str]], now: str | None = None) -> int:
        """`replace_links` for the records `ids` of one system object alone: their links become
        those of `rows` (each one of them); every other link stays as it is."""
        incoming = {(s, o, e): (account_id, by) for s, o, e, account_id, by in rows}
        existing: dict[tuple[str, str, str], tuple[int, str]] = {}
        for start in range(0, len(ids), 50_000):
            existing.update(((system, obj, e), (account_id, by)) for e, account_id, by in self.conn.execute(
                "SELECT external_id, account_id, matched_by FROM account_links WHERE system = ? AND object = ? "
                "AND external_id IN (SELECT value FROM json_each(?))", (system, obj, json.dumps(ids[start:start + 50_000]))))
        return self._relink(existing, incoming, now or utcnow())

    def _relink(self, existing: dict[tuple[str, str, str], tuple[int, str]],
                incoming: dict[tuple[str, str, str], tuple[int, str]], now: str) -> int:
        """The stored links `existing` made `incoming`: only what differs is written (an unchanged
        match touches nothing); returns how many links are new or changed."""
        changed = [(*key, *link, now) for key, link in incoming.items() if existing.get(key) != link]
        gone = [key for key in existing if key not in incoming]
        with self.transaction():  # the accounts a record left or joined are measured again
            self._queue_accounts({c[3] for c in changed} | {existing[k][0] for k in gone}
                                 | {existing[c[:3]][0] for c in changed if c[:3] in existing})
            self._queue_links([c[:3] for c in changed if existing.get(c[:3], (None,))[0] != c[3]] + gone)
            self.conn.executemany("DELETE FROM account_links WHERE system = ? AND object = ? AND external_id = ?", gone)
            self.conn.executemany(
                """INSERT INTO account_links VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (system, object, external_id) DO UPDATE SET account_id = excluded.account_id,
                     matched_by = excluded.matched_by, linked_at = excluded.linked_at""", changed)
        return len(changed)

    def link_keys(self) -> dict[tuple[str, str], str]:
        """(system, external id) -> the key of the account it is linked to, for every link."""
        return {(s, e): k for s, e, k in self.conn.execute(
            "SELECT l.system, l.external_id, a.key FROM account_links l JOIN accounts a ON a.id = l.account_id")}

    def live_domains(self) -> list[tuple[str, str]]:
        """(key, domain) of every live account with a domain."""
        return self.conn.execute("SELECT key, domain FROM accounts WHERE deleted_at IS NULL AND domain IS NOT NULL "
                                 "AND domain != ''").fetchall()

    def linked(self, system: str, obj: str, accounts: Iterable[int] | None = None) -> dict[str, int]:
        """external_id -> account_id for one system object (linked to one of `accounts`, if given)."""
        if accounts is None:
            return dict(self.conn.execute(
                "SELECT external_id, account_id FROM account_links WHERE system = ? AND object = ?", (system, obj)))
        return dict(self.conn.execute(
            "SELECT external_id, account_id FROM account_links WHERE system = ? AND object = ? "
            "AND account_id IN (SELECT value FROM json_each(?))", (system, obj, json.dumps(list(accounts)))))

    def external_ids(self) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {}
        for account_id, system, obj, ext in self.conn.execute(
            "SELECT account_id, system, object, external_id FROM account_links ORDER BY linked_at"
        ):
            out.setdefault(account_id, {})[f"{system}_{obj}".lower()] = ext
        return out

    def crm_targets(self, system: str, obj: str, account_ids: list[int]) -> dict[int, tuple[str, dict[str, Any]]]:
        """account_id -> (external id, stored data) of the live CRM record linked to it (the first linked)."""
        out: dict[int, tuple[str, dict[str, Any]]] = {}
        rows = self.conn.execute(
            """SELECT l.account_id, l.external_id, r.data FROM account_links l
               JOIN records r ON r.system = l.system AND r.object = l.object AND r.id = l.external_id AND r.deleted = 0
               WHERE l.system = ? AND l.object = ? AND l.account_id IN (SELECT value FROM json_each(?))
               ORDER BY l.linked_at, l.external_id""",
            (system, obj, json.dumps(account_ids)),
        )
        for account_id, external_id, data in rows:
            out.setdefault(account_id, (external_id, json.loads(data)))
        return out

    def put_records(
        self, system: str, obj: str, rows: Iterable[tuple[str, dict[str, Any], str | None, bool]],
        now: str | None = None, cursor: tuple[str, str | None] | None = None, via: str | None = None,
        ignored: frozenset[str] = frozenset(), planned: frozenset[str] | None = None,
        matched: Callable[[dict[str, Any]], Any] | None = None, alone: bool = False,
    ) -> int:
        """Upsert (id, data, modified, deleted) records of one system object; returns the count.

        `cursor` (stream, value) is saved in the same transaction: a cursor never
        moves past data that is not committed. The records are queued for the next
        measure (connector/store/changes.py), with the parent their `via` field
        named before and names now (a ticket's organization); a record whose
        fields differ from the stored ones only in `ignored` (stamps, healthsync's
        own output fields) is not. A CRM's written object (`planned`: its stamps) is
        queued for the next plan too. The match is marked stale when what `matched`
        gives of a record (what matching reads; not given: all of it) changes; of
        records matched `alone` (usage keys), the record is queued for the match instead.
        """
        now = now or utcnow()
        rows = list(rows)
        with self.transaction():
            if cursor is not None:
                self.set_cursor(system, cursor[0], cursor[1], now)
            self._queue_records(system, obj, rows, via, ignored, planned, matched, alone)
            cur = self.conn.executemany(
                """INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (system, object, id) DO UPDATE SET data = excluded.data,
                     modified = excluded.modified, deleted = excluded.deleted,
                     pulled_at = excluded.pulled_at""",
                (
                    (system, obj, rid, _encoded(data), modified, int(deleted), now)
                    for rid, data, modified, deleted in rows
                ),
            )
        return cur.rowcount

    def records(self, system: str, obj: str, include_deleted: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, data) of one system object's stored records, in id order."""
        sql = "SELECT id, data FROM records WHERE system = ? AND object = ?"
        if not include_deleted:
            sql += " AND deleted = 0"
        for rid, data in self.conn.execute(sql + " ORDER BY id", (system, obj)):
            yield rid, _decoded(data)

    def record_ids(self, system: str, obj: str) -> list[str]:
        """Ids of one system object's live records, in id order."""
        return [rid for (rid,) in self.conn.execute(
            "SELECT id FROM records WHERE system = ? AND object = ? AND deleted = 0 ORDER BY id", (system, obj))]

    def records_by_id(self, system: str, obj: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored (live) records of one system object with these ids (absent ones left out)."""
        out: dict[str, dict[str, Any]] = {}
        wanted = list(ids)
        for start in range(0, len(wanted), 50_000):
            rows = self.conn.execute(
                "SELECT id, data FROM records WHERE system = ? AND object = ? AND deleted = 0 "
                "AND id IN (SELECT value FROM json_each(?))",
                (system, obj, json.dumps(wanted[start:start + 50_000])))
            out.update((rid, _decoded(data)) for rid, data in rows)
        return out

    def record_fields(self, system: str, obj: str, fields: list[str],
                      ids: list[str] | None = None) -> Iterator[tuple[str, list[Any]]]:
        """(id, each field's value: None where the record has none) of one system object's live
        records (with `ids`, sorted: only those), in id order, each record decoded and let go
        (orjson decodes a record faster than SQLite's JSON functions take a field out of it)."""
        sql = "SELECT id, data FROM records WHERE system = ? AND object = ? AND deleted = 0"
        if ids is None:
            chunks: Iterable[tuple[Any, ...]] = [(system, obj)]
        else:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            chunks = ((system, obj, json.dumps(ids[start:start + 50_000])) for start in range(0, len(ids), 50_000))
        for args in chunks:  # sorted ids: chunk after chunk stays in id order
            for rid, data in self.conn.execute(sql + " ORDER BY id", args):
                if not fields:  # the ids alone (which accounts have a record): nothing decoded
                    yield rid, []
                    continue
                record = _decoded(data)
                yield rid, [record.get(f) for f in fields]

    def record_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(system, object) -> (live records, deleted records)."""
        rows = self.conn.execute(
            "SELECT system, object, sum(deleted = 0), sum(deleted) FROM records GROUP BY system, object"
        )
        return {(s, o): (int(live), int(dead)) for s, o, live, dead in rows}

    def cursor(self, system: str, stream: str) -> str | None:
        row = self.conn.execute("SELECT value FROM cursors WHERE system = ? AND stream = ?", (system, stream)).fetchone()
        return row[0] if row else None

    def set_cursor(self, system: str, stream: str, value: str | None, now: str | None = None) -> None:
        """Called inside the transaction that committed the data the cursor covers."""
        self.conn.execute(
            """INSERT INTO cursors VALUES (?, ?, ?, ?)
               ON CONFLICT (system, stream) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
            (system, stream, value, now or utcnow()),
        )

    def replace_match_issues(self, rows: Iterable[tuple[str, str, str, str, str, list[str] | None]]) -> None:
        """Replace all (system, object, external_id, kind, detail, candidates) match issues."""
        with self.transaction():
            self.conn.execute("DELETE FROM match_issues")
            self._insert_match_issues(rows)

    def replace_match_issues_of(self, system: str, obj: str, ids: list[str],
                                rows: Iterable[tuple[str, str, str, str, str, list[str] | None]]) -> None:
        """`replace_match_issues` for the records `ids` of one system object alone."""
        with self.transaction():
            for start in range(0, len(ids), 50_000):
                self.conn.execute("DELETE FROM match_issues WHERE system = ? AND object = ? "
                                  "AND external_id IN (SELECT value FROM json_each(?))",
                                  (system, obj, json.dumps(ids[start:start + 50_000])))
            self._insert_match_issues(rows)

    def _insert_match_issues(self, rows: Iterable[tuple[str, str, str, str, str, list[str] | None]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO match_issues VALUES (?, ?, ?, ?, ?, ?)",
            ((s, o, e, k, d, json.dumps(c) if c is not None else None) for s, o, e, k, d, c in rows),
        )

    def match_issues(self, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM match_issues"
        args: list[Any] = []
        if kind:
            sql += " WHERE kind = ?"
            args.append(kind)
        sql += " ORDER BY kind, system, object, external_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return list(self.db.query(sql, args))

    def match_counts(self) -> MatchCounts:
        """The live accounts each system's records made (by key prefix), and the links per (system,
        how matched): what the last match found."""
        accounts = dict(self.conn.execute(
            "SELECT substr(key, 1, instr(key, ':') - 1), count(*) FROM accounts "
            "WHERE deleted_at IS NULL AND instr(key, ':') > 0 GROUP BY 1"))
        links = {(s, by): n for s, by, n in self.conn.execute(  # "domain acme.com" counted as "domain": one group, not one a domain
            "SELECT system, CASE WHEN matched_by LIKE 'domain %' THEN 'domain' ELSE matched_by END AS kind, count(*) "
            "FROM account_links GROUP BY system, kind")}
        return MatchCounts(accounts, links)

    def match_issue_counts(self) -> list[tuple[str, str, str, int]]:
        """(system, object, kind, records) of the match issues."""
        return [(s, o, k, int(n)) for s, o, k, n in self.conn.execute(
            "SELECT system, object, kind, count(*) FROM match_issues GROUP BY system, object, kind "
            "ORDER BY system, object, kind"
        )]
