"""The local SQLite store: schema, migrations, and the queries the steps need.

Tables (docs/store.md describes every column):
  meta            schema version and store facts
  accounts        one row per customer account healthsync knows
  account_links   which external record (system, object, id) belongs to which account
  metric_values   the current value of every input and catalogue metric per account
  metric_history  every value each account held, and since when (appended on change)
  scores          the current score per account and named score
  score_history   every score value per account, appended when it changes
  overrides       CSM overrides of a score or status, with reason and expiry
  override_audit  who set, replaced, expired or cleared which override, when
  cursors         per-system incremental sync positions
  records         the raw records pulled from each system (only the mapped fields)
  match_issues    records that matched no account, or more than one
  outbox          planned CRM changes, saved before the first write, with each one's outcome
  written         the value healthsync last wrote to each CRM output field (drift detection)
  runs            one row per healthsync run, with counts and API calls
  locks           the lock a run holds on the store (one run at a time), with its heartbeat
  alert_rules     each alert's watched condition and when its baseline was taken
  alert_state     per alert and account: whether the condition holds, since when, the last value seen
  alerts          each alert that fired, with what triggered it
  alert_deliveries each action of a fired alert (webhook, CRM task): what is sent, and its outcome
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from .errors import NotFound, StoreError

DEFAULT_PATH = "healthsync.db"

_MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        name TEXT,
        domain TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE TABLE account_links (
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        external_id TEXT NOT NULL,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        matched_by TEXT NOT NULL,
        linked_at TEXT NOT NULL,
        PRIMARY KEY (system, object, external_id)
    );
    CREATE INDEX account_links_account ON account_links(account_id);
    CREATE TABLE metric_values (
        name TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        num REAL,
        text TEXT,
        since TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        na_reason TEXT,
        PRIMARY KEY (name, account_id)
    ) WITHOUT ROWID;
    CREATE TABLE metric_history (
        name TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        since TEXT NOT NULL,
        num REAL,
        text TEXT,
        PRIMARY KEY (name, account_id, since)
    ) WITHOUT ROWID;
    CREATE TABLE scores (
        score TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        model TEXT,
        model_version TEXT NOT NULL,
        computed REAL,
        value REAL,
        status_computed TEXT,
        status TEXT,
        grade TEXT,
        override_id INTEGER,
        trend REAL,
        trend_direction TEXT,
        coverage REAL,
        points_to_next REAL,
        drivers TEXT,
        groups TEXT,
        na_reason TEXT,
        scored_at TEXT NOT NULL,
        PRIMARY KEY (score, account_id)
    ) WITHOUT ROWID;
    CREATE TABLE score_history (
        score TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        scored_at TEXT NOT NULL,
        value REAL,
        status TEXT,
        model_version TEXT NOT NULL,
        PRIMARY KEY (score, account_id, scored_at)
    ) WITHOUT ROWID;
    CREATE TABLE overrides (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        score TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('status', 'score')),
        value TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (length(trim(reason)) > 0),
        source TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        ended_at TEXT,
        ended_reason TEXT
    );
    CREATE INDEX overrides_active ON overrides(score, account_id) WHERE ended_at IS NULL;
    CREATE TABLE override_audit (
        id INTEGER PRIMARY KEY,
        override_id INTEGER NOT NULL REFERENCES overrides(id),
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT
    );
    CREATE TABLE cursors (
        system TEXT NOT NULL,
        stream TEXT NOT NULL,
        value TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (system, stream)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL,
        exit_code INTEGER,
        counts TEXT,
        api_calls TEXT,
        error TEXT
    );
    """,
    # 2: the pull step: raw records and what identity matching could not resolve
    """
    CREATE TABLE records (
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        id TEXT NOT NULL,
        data TEXT NOT NULL,
        modified TEXT,
        deleted INTEGER NOT NULL DEFAULT 0,
        pulled_at TEXT NOT NULL,
        PRIMARY KEY (system, object, id)
    ) WITHOUT ROWID;
    CREATE TABLE match_issues (
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        external_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('unmatched', 'conflict')),
        detail TEXT NOT NULL,
        candidates TEXT,
        PRIMARY KEY (system, object, external_id)
    );
    ALTER TABLE runs ADD COLUMN details TEXT;
    """,
    # 3: the push step: the outbox of planned CRM changes, and what healthsync last wrote
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        run_id INTEGER,
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        record_id TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        fields TEXT NOT NULL,
        before TEXT NOT NULL,
        drift TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'done', 'retry', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        planned_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX outbox_open ON outbox(system, object, record_id) WHERE status != 'done';
    CREATE INDEX outbox_status ON outbox(system, status);
    CREATE TABLE written (
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        record_id TEXT NOT NULL,
        field TEXT NOT NULL,
        value TEXT,
        written_at TEXT NOT NULL,
        PRIMARY KEY (system, object, record_id, field)
    ) WITHOUT ROWID;
    """,
    # 4: one run at a time: the lock a run holds while it works, kept alive by a heartbeat
    """
    CREATE TABLE locks (
        name TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        run_id INTEGER,
        acquired_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL
    );
    """,
    # 5: alerts: the condition each alert watches per account, what fired, and each action's delivery
    """
    CREATE TABLE alert_rules (
        alert TEXT PRIMARY KEY,
        condition TEXT NOT NULL,
        baseline_at TEXT NOT NULL,
        evaluated_at TEXT NOT NULL
    );
    CREATE TABLE alert_state (
        alert TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        active INTEGER NOT NULL CHECK (active IN (0, 1)),
        since TEXT NOT NULL,
        value,
        PRIMARY KEY (alert, account_id)
    ) WITHOUT ROWID;
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        run_id INTEGER,
        alert TEXT NOT NULL,
        score TEXT NOT NULL,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        fired_at TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX alerts_account ON alerts(account_id, alert);
    CREATE TABLE alert_deliveries (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        action INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('webhook', 'salesforce_task', 'hubspot_task')),
        target TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'done', 'retry', 'failed', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        external_id TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX alert_deliveries_open ON alert_deliveries(kind, status);
    -- the CRM records stored so far lack their owner (OwnerId, hubspot_owner_id), whom alert tasks
    -- are assigned to: the next pull of each CRM reads every record again, once
    DELETE FROM cursors WHERE system IN ('salesforce', 'hubspot');
    """,
    # 6: coverage is a percent (0-100) everywhere, as the CRM field shows it; it was a share (0-1)
    """
    UPDATE scores SET coverage = round(coverage * 100, 1) WHERE coverage IS NOT NULL;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path or os.environ.get("HEALTHSYNC_DB") or DEFAULT_PATH)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_path(path: Path, create: bool) -> bool:
    """Refuse what cannot be a store; True when there is nothing there yet (a new store, if `create`)."""
    if path.is_dir():
        raise StoreError(f"the store {path} is a folder: give --db (or HEALTHSYNC_DB) a file path, "
                         f"e.g. {path / DEFAULT_PATH}")
    if not path.exists() or path.stat().st_size == 0:
        if not create:
            raise StoreError(f"there is no healthsync store at {path}: check --db (or HEALTHSYNC_DB), "
                             "or create it with `healthsync pull` or `healthsync run`")
        if not path.parent.exists():
            raise StoreError(f"the folder for the store {path} does not exist: create it, or give --db another path")
        return True
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"the store {path} cannot be read: {exc.strerror or exc}") from exc
    if header != _SQLITE_HEADER:
        raise StoreError(f"{path} is not a SQLite database, so not a healthsync store: "
                         "give --db (or HEALTHSYNC_DB) the path of a healthsync store, or a new file")
    return False


def _check_healthsync(conn: sqlite3.Connection, path: Path) -> None:
    """A SQLite file is a healthsync store when its meta table records a schema version (every
    migration writes it), of a schema this healthsync knows (PRAGMA user_version); an empty one is new."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} cannot be read as a SQLite database ({exc}): give --db another path") from exc
    if not tables:
        return
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables else None
    except sqlite3.DatabaseError:  # a table named meta of another shape
        row = None
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if row is None:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(f"{path} is a SQLite database of another application (tables {shown}), not a "
                         "healthsync store: it was left untouched; give --db another path")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} has schema version {version}, newer than this healthsync understands "
                         f"({SCHEMA_VERSION}); upgrade healthsync or use another --db")


@dataclass
class Column:
    """One stored name's current values, aligned to the store's account order."""

    values: np.ndarray  # float64 (NaN = N/A) or object (None = N/A)
    since: np.ndarray  # object: ISO timestamp the value took effect, None when absent
    na_reason: np.ndarray  # object: why the source had no value, None when it had one


class Store:
    """A healthsync SQLite database, migrated to the current schema on open.

    `Store(path)` opens a store to write, creating it where nothing is yet
    (`create=False`: it must exist); `Store(path, readonly=True)` opens an
    existing one for reading only: its bytes are never changed (an older
    schema is read through a migrated private copy). Every mode refuses, with
    a StoreError naming the path and untouched, a folder, a file that is not
    SQLite, a SQLite file another application made, and a newer schema.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, readonly: bool = False, create: bool = True):
        self.path = self.origin = resolve_path(path)  # origin: the store a preview copy was made of
        self.readonly = readonly
        self.locked = False  # set by RunLock while this process holds the store's run lock
        self.scratch: tempfile.TemporaryDirectory[str] | None = None  # a preview copy's folder
        fresh = _check_path(self.path, create and not readonly)
        if readonly:
            self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                        isolation_level=None, timeout=30)
        else:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db = sqlite_utils.Database(self.conn)
        try:
            if not fresh:
                _check_healthsync(self.conn, self.path)
            if readonly and self.schema_version < SCHEMA_VERSION:
                original = self.conn  # an older store is read through a migrated private copy
                try:
                    self._copy_of(original)
                finally:
                    original.close()
            elif not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except BaseException:
            self.close()
            raise

    def preview(self) -> Store:
        """A private copy of this store, in a temporary folder removed on close, that a preview
        (`plan`, `run --dry-run`) may pull, score and plan into: this store never changes."""
        copy = Store.__new__(Store)
        copy.origin = self.origin
        copy._copy_of(self.conn)
        return copy

    @classmethod
    def preview_of(cls, path: str | os.PathLike[str] | None = None) -> Store:
        """A private copy of the store at `path` (read only), or a new empty one where none is yet."""
        target = resolve_path(path)
        if target.exists() and not target.is_dir() and target.stat().st_size:
            with cls(target, readonly=True) as store:
                return store.preview()
        _check_path(target, create=True)  # a folder, or a missing folder, is still refused
        copy = cls.__new__(cls)
        copy.origin = target
        with closing(sqlite3.connect(":memory:")) as empty:
            copy._copy_of(empty)
        return copy

    def _copy_of(self, source: sqlite3.Connection) -> None:
        """Become a migrated copy of `source` in a temporary folder (nobody else sees it: no lock to take)."""
        self.scratch = tempfile.TemporaryDirectory(prefix="healthsync-preview-")
        self.path = Path(self.scratch.name) / "preview.db"
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db = sqlite_utils.Database(self.conn)
        self.readonly, self.locked = False, True
        try:
            source.backup(self.conn)
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.conn.close()
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ schema

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.origin} has schema version {current}, newer than this healthsync "
                f"understands ({SCHEMA_VERSION}); upgrade healthsync or use another --db"
            )
        for version in range(current, SCHEMA_VERSION):
            with self.transaction():
                for statement in _split_sql(_MIGRATIONS[version]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {version + 1}")
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version + 1),)
                )

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

    # ------------------------------------------------------------ accounts

    def upsert_accounts(self, rows: Iterable[dict[str, Any]], now: str | None = None) -> None:
        """Insert or update accounts by key (name, domain)."""
        now = now or utcnow()
        with self.transaction():
            self.conn.executemany(
                """INSERT INTO accounts (key, name, domain, created_at, updated_at)
                   VALUES (:key, :name, :domain, :now, :now)
                   ON CONFLICT(key) DO UPDATE SET name = excluded.name,
                     domain = excluded.domain, updated_at = excluded.updated_at""",
                ({"key": r["key"], "name": r.get("name"), "domain": r.get("domain"), "now": now} for r in rows),
            )

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
        now = now or utcnow()
        with self.transaction():
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming_links (system TEXT, object TEXT, external_id TEXT, "
                "account_id INTEGER, matched_by TEXT, PRIMARY KEY (system, object, external_id))"
            )
            self.conn.execute("DELETE FROM incoming_links")
            self.conn.executemany("INSERT OR REPLACE INTO incoming_links VALUES (?, ?, ?, ?, ?)", rows)
            self.conn.execute(
                """DELETE FROM account_links WHERE NOT EXISTS (SELECT 1 FROM incoming_links i
                   WHERE i.system = account_links.system AND i.object = account_links.object
                     AND i.external_id = account_links.external_id)"""
            )
            changed = self.conn.execute(
                """INSERT INTO account_links SELECT i.*, ? FROM incoming_links i
                   LEFT JOIN account_links l USING (system, object, external_id)
                   WHERE l.account_id IS NULL OR l.account_id != i.account_id OR l.matched_by != i.matched_by
                   ON CONFLICT (system, object, external_id) DO UPDATE SET account_id = excluded.account_id,
                     matched_by = excluded.matched_by, linked_at = excluded.linked_at""",
                (now,),
            ).rowcount
            self.conn.execute("DELETE FROM incoming_links")
        return changed

    def linked(self, system: str, obj: str) -> dict[str, int]:
        """external_id -> account_id for one system object."""
        rows = self.conn.execute(
            "SELECT external_id, account_id FROM account_links WHERE system = ? AND object = ?", (system, obj)
        )
        return dict(rows)

    # ------------------------------------------------------------ metric values

    def set_values(
        self, rows: Iterable[tuple[int, str, Any] | tuple[int, str, Any, str | None]], now: str | None = None
    ) -> int:
        """Record (account_id, name, value[, na_reason]) observations; returns how many changed.

        A value equal to the stored one only refreshes seen_at; a changed value
        (None included) starts a new `since` and is appended to metric_history.
        """
        now = now or utcnow()
        by_name: dict[str, list[tuple[str, int, float | None, str | None, str | None]]] = {}
        for row in rows:
            value_row = _value_row(row)
            by_name.setdefault(value_row[0], []).append(value_row)
        fresh: list[tuple[str, int, float | None, str | None, str | None]] = []
        with self.transaction():
            for name, observed in by_name.items():  # one name at a time: memory stays one column wide
                current = self._current_values(name)
                fresh += [r for r in observed if current.get(r[1]) != r[2:]]
                seen = [r[1] for r in observed if r[1] in current]
                if len(set(seen)) == len(current):  # the whole column was observed (the measure step's case)
                    self.conn.execute("UPDATE metric_values SET seen_at = ? WHERE name = ?", (now, name))
                else:
                    self.conn.executemany(
                        "UPDATE metric_values SET seen_at = ? WHERE name = ? AND account_id = ?",
                        ((now, name, account_id) for account_id in seen),
                    )
            if not fresh:
                return 0
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming (name TEXT, account_id INTEGER, num REAL, text TEXT, na_reason TEXT, PRIMARY KEY (name, account_id))"
            )
            self.conn.execute("DELETE FROM incoming")
            self.conn.executemany("INSERT OR REPLACE INTO incoming VALUES (?, ?, ?, ?, ?)", fresh)
            changed = self.conn.execute(
                """INSERT INTO metric_history (name, account_id, since, num, text)
                   SELECT i.name, i.account_id, ?, i.num, i.text FROM incoming i
                   LEFT JOIN metric_values v ON v.name = i.name AND v.account_id = i.account_id
                   WHERE v.account_id IS NULL OR v.num IS NOT i.num OR v.text IS NOT i.text
                   ON CONFLICT DO UPDATE SET num = excluded.num, text = excluded.text""",
                (now,),
            ).rowcount
            self.conn.execute(
                """INSERT INTO metric_values (name, account_id, num, text, since, seen_at, na_reason)
                   SELECT name, account_id, num, text, :now, :now, na_reason FROM incoming WHERE true
                   ON CONFLICT (name, account_id) DO UPDATE SET
                     since = CASE WHEN metric_values.num IS excluded.num AND metric_values.text IS excluded.text
                                  THEN metric_values.since ELSE excluded.since END,
                     num = excluded.num, text = excluded.text,
                     seen_at = excluded.seen_at, na_reason = excluded.na_reason""",
                {"now": now},
            )
            self.conn.execute("DELETE FROM incoming")
        return changed

    def _current_values(self, name: str) -> dict[int, tuple[float | None, str | None, str | None]]:
        rows = self.conn.execute("SELECT account_id, num, text, na_reason FROM metric_values WHERE name = ?", (name,))
        return {a: (num, text, reason) for a, num, text, reason in rows}

    def load_column(self, name: str, ids: np.ndarray, text: bool, with_since: bool = True) -> Column:
        """The current values of one stored name for the given accounts (N/A where absent).

        `since` (when each value took effect) is read only when asked for: age
        rules need it, and for other names it would double the load time.
        """
        n = len(ids)
        values = np.full(n, None, dtype=object) if text else np.full(n, np.nan)
        since = np.full(n, None, dtype=object)
        reasons = np.full(n, None, dtype=object)
        if not text:
            # the hot path: plain numbers straight into a float array, no per-row Python calls
            cur = self.conn.execute(
                "SELECT account_id, num FROM metric_values WHERE name = ? AND num IS NOT NULL", (name,)
            )
            flat = np.fromiter(itertools.chain.from_iterable(cur), dtype=float)
            at, keep = _positions(ids, flat[0::2].astype(np.int64))
            values[at] = flat[1::2][keep]
        rows = self.conn.execute(
            "SELECT account_id, num, text, na_reason FROM metric_values WHERE name = ?"
            + ("" if text else " AND num IS NULL"),
            (name,),
        ).fetchall()
        if rows:
            at, kept = _aligned(ids, rows)
            _fill(values, at, kept, text)
            if text:
                reasons[at] = [r[3] for r in kept]
            else:
                reasons[at] = [r[3] or (f"not a number: {r[2]!r}" if r[2] is not None else None) for r in kept]
        found = (
            self.conn.execute("SELECT account_id, since FROM metric_values WHERE name = ?", (name,)).fetchall()
            if with_since
            else []
        )
        if found:
            at, keep = _positions(ids, np.fromiter((r[0] for r in found), np.int64, len(found)))
            since[at] = np.array([r[1] for r in found], dtype=object)[keep]
        return Column(values, since, reasons)

    def history_column(
        self, name: str, ids: np.ndarray, text: bool, before: str, non_null: bool = False
    ) -> Column:
        """Each account's value as it stood at `before` (or its last non-N/A one, if asked)."""
        n = len(ids)
        values = np.full(n, None, dtype=object) if text else np.full(n, np.nan)
        since = np.full(n, None, dtype=object)
        condition = "AND (num IS NOT NULL OR text IS NOT NULL)" if non_null else ""
        rows = self.conn.execute(
            f"""SELECT account_id, num, text, max(since) FROM metric_history
                WHERE name = ? AND since <= ? {condition} GROUP BY account_id""",
            (name, before),
        ).fetchall()
        if rows:
            at, kept = _aligned(ids, rows)
            _fill(values, at, kept, text)
            since[at] = [r[3] for r in kept]
        return Column(values, since, np.full(n, None, dtype=object))

    # ------------------------------------------------------------ scores

    def write_scores(self, score: str, rows: Iterable[tuple[Any, ...]], scored_at: str) -> int:
        """Save one named score's results; only rows that differ are written. Returns how many.

        rows: (account_id, model, model_version, computed, value, status_computed,
        status, grade, override_id, trend, trend_direction, coverage,
        points_to_next, drivers, groups_json, na_reason). `scored_at` is kept
        from the previous row when nothing in it changed, so it says when the
        result last changed; changed values and statuses go to score_history.
        """
        compared = " OR ".join(f"s.{c} IS NOT n.{c}" for c in _SCORE_COLUMNS)
        # a new mappings version that leaves the result as it was is recorded, but is no new result:
        # the row keeps its scored_at (else every record's scored-at field would be rewritten)
        result_moved = " OR ".join(f"s.{c} IS NOT n.{c}" for c in _SCORE_COLUMNS if c != "model_version")
        columns = ", ".join(f"n.{c}" for c in ("score", "account_id", *_SCORE_COLUMNS))
        with self.transaction():
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS new_scores AS SELECT * FROM scores WHERE 0")
            self.conn.execute("DELETE FROM new_scores")
            self.conn.executemany(
                "INSERT INTO new_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((score, *r, scored_at) for r in rows),
            )
            self.conn.execute(
                """INSERT OR REPLACE INTO score_history (score, account_id, scored_at, value, status, model_version)
                   SELECT n.score, n.account_id, n.scored_at, n.value, n.status, n.model_version
                   FROM new_scores n LEFT JOIN scores s ON s.score = n.score AND s.account_id = n.account_id
                   WHERE s.account_id IS NULL OR s.value IS NOT n.value OR s.status IS NOT n.status"""
            )
            changed = self.conn.execute(
                f"""INSERT OR REPLACE INTO scores
                    SELECT {columns},
                           CASE WHEN s.account_id IS NULL OR {result_moved} THEN n.scored_at ELSE s.scored_at END
                    FROM new_scores n LEFT JOIN scores s ON s.score = n.score AND s.account_id = n.account_id
                    WHERE s.account_id IS NULL OR {compared}"""
            ).rowcount
            self.conn.execute(
                """DELETE FROM scores WHERE score = ? AND account_id NOT IN (SELECT account_id FROM new_scores)""",
                (score,),
            )
            self.conn.execute("DELETE FROM new_scores")
        return changed

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

    def current_scores(self, score: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE s.score = ?", [score]) if score else ("", [])
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

    def external_ids(self) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {}
        for account_id, system, obj, ext in self.conn.execute(
            "SELECT account_id, system, object, external_id FROM account_links ORDER BY linked_at"
        ):
            out.setdefault(account_id, {})[f"{system}_{obj}".lower()] = ext
        return out

    # ------------------------------------------------------------ overrides

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

    # ------------------------------------------------------------ raw records

    def put_records(
        self, system: str, obj: str, rows: Iterable[tuple[str, dict[str, Any], str | None, bool]],
        now: str | None = None, cursor: tuple[str, str | None] | None = None,
    ) -> int:
        """Upsert (id, data, modified, deleted) records of one system object; returns the count.

        `cursor` (stream, value) is saved in the same transaction: a cursor never
        moves past data that is not committed.
        """
        now = now or utcnow()
        with self.transaction():
            if cursor is not None:
                self.set_cursor(system, cursor[0], cursor[1], now)
            cur = self.conn.executemany(
                """INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (system, object, id) DO UPDATE SET data = excluded.data,
                     modified = excluded.modified, deleted = excluded.deleted,
                     pulled_at = excluded.pulled_at""",
                (
                    (system, obj, rid, json.dumps(data, sort_keys=True, ensure_ascii=False), modified, int(deleted), now)
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
            yield rid, json.loads(data)

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
            self.conn.executemany(
                "INSERT OR REPLACE INTO match_issues VALUES (?, ?, ?, ?, ?, ?)",
                ((s, o, e, k, d, json.dumps(c) if c is not None else None) for s, o, e, k, d, c in rows),
            )

    def match_issues(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM match_issues"
        args: list[Any] = []
        if kind:
            sql += " WHERE kind = ?"
            args.append(kind)
        return list(self.db.query(sql + " ORDER BY kind, system, object, external_id", args))

    # ------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------ outbox

    def written(self, system: str, obj: str) -> dict[tuple[str, str], str | None]:
        """(record id, field) -> the value healthsync last wrote there (canonical text)."""
        rows = self.conn.execute(
            "SELECT record_id, field, value FROM written WHERE system = ? AND object = ?", (system, obj)
        )
        return {(r, f): v for r, f, v in rows}

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
        """The next changes to send, marked sent (committed) before the request goes out."""
        with self.transaction():
            rows = list(self.db.query(
                "SELECT * FROM outbox WHERE system = ? AND status IN ('pending', 'retry') ORDER BY attempts, id LIMIT ?",
                [system, size],
            ))
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
        written: list[tuple[str, dict[str, str | None], dict[str, Any]]],
    ) -> None:
        """Record each change's outcome; remember written values and that the CRM now holds them."""
        now = utcnow()
        with self.transaction():
            self.conn.executemany(
                "UPDATE outbox SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                ((status, error, now, oid) for oid, status, error in outcome),
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO written VALUES (?, ?, ?, ?, ?, ?)",
                ((system, obj, rid, f, v, now) for rid, fields, _raw in written for f, v in fields.items()),
            )
            for rid, _fields, raw in written:
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

    # ------------------------------------------------------------ alerts

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

    # ------------------------------------------------------------ runs

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


_SCORE_COLUMNS = (
    "model", "model_version", "computed", "value", "status_computed", "status", "grade", "override_id",
    "trend", "trend_direction", "coverage", "points_to_next", "drivers", "groups", "na_reason",
)


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


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
