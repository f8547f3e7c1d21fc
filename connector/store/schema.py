"""The schema: its migrations, its version, and the checks that a path is (or may become) a healthsync store.

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
  snapshot_series a rebuilt score history (`rescore`): its mappings version, dates and assumptions
  score_snapshots one rebuilt date of one score: every account's columns in one blob
  outcome_events  the outcome events rescore found, reused by backtest while records are unchanged
  measure_queue   records stored since the last measure (with the parent they had and have)
  measure_accounts accounts whose links changed since the last measure
  measure_until   when each account's metric values next move with time alone, its part of the totals
  plan_queue      CRM records stored or re-linked since the last plan
  match_queue     records of a source matched alone (usage keys) stored since the last match
  plan_accounts   accounts whose scores changed since the last plan
  value_columns   the current values of a name as one blob (columnar copy), value_changes the rows since
  score_columns   a score's last results as one blob (columnar copy)
  moments         when each name's values and each score's results took effect (what time-based reads cross)
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreError
from .base import INPUTS_CHANGES, Area

DEFAULT_PATH = "healthsync.db"

_MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
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
    # 7: rebuilt score history (`rescore`): one series per mappings version and schedule, never the live one
    """
    CREATE TABLE IF NOT EXISTS snapshot_series (
        id INTEGER PRIMARY KEY,
        mappings_version TEXT NOT NULL,
        first TEXT NOT NULL,
        last TEXT NOT NULL,
        every_days INTEGER NOT NULL,
        built_at TEXT NOT NULL,
        assumptions TEXT NOT NULL DEFAULT '[]',
        UNIQUE (mappings_version, first, last, every_days)
    );
    CREATE TABLE IF NOT EXISTS score_snapshots (
        series INTEGER NOT NULL REFERENCES snapshot_series(id) ON DELETE CASCADE,
        as_of TEXT NOT NULL,
        score TEXT NOT NULL,
        accounts INTEGER NOT NULL,
        columns BLOB NOT NULL,
        PRIMARY KEY (series, score, as_of)
    );
    """,
    # 8: the outcome events rescore found, for backtest to reuse while the records and outcomes are unchanged
    """
    CREATE TABLE IF NOT EXISTS outcome_events (
        fingerprint TEXT PRIMARY KEY,
        built_at TEXT NOT NULL,
        events TEXT NOT NULL
    );
    """,
    # 9: usage rows kept as one series per (entry, key) instead of a record per row
    lambda conn: _usage_series(conn),
    # 10: what changed since the last measure (records, links), and when each account's values move with time
    """
    CREATE TABLE IF NOT EXISTS measure_queue (
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        id TEXT NOT NULL,
        parent TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (system, object, id, parent)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS measure_accounts (
        account_id INTEGER PRIMARY KEY
    );
    CREATE TABLE IF NOT EXISTS measure_until (
        account_id INTEGER PRIMARY KEY,
        until REAL,
        totals TEXT
    );
    CREATE INDEX IF NOT EXISTS measure_until_when ON measure_until(until) WHERE until IS NOT NULL;
    """,
    # 11: what changed since the last plan (CRM records, links, scores)
    """
    CREATE TABLE IF NOT EXISTS plan_queue (
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (system, object, id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS plan_accounts (
        account_id INTEGER PRIMARY KEY
    );
    """,
    # 12: columnar copies of the current values of a name and of a score's results, one blob each
    lambda conn: _columnar(conn),
    # 13: what the last scores read, to know when they still stand: the moments values and results took
    # effect, and a count of the changes to what scoring reads
    lambda conn: _moments(conn),
    # 14: the records of a source matched alone (usage keys) stored since the last match: only they are attached again
    """
    CREATE TABLE IF NOT EXISTS match_queue (
        system TEXT NOT NULL,
        object TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (system, object, id)
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def _usage_series(conn: sqlite3.Connection) -> None:
    """Each usage entry's stored rows (one record each, schema 8) as the series of their key: the
    same values and N/A reasons, timestamps as epoch seconds. The cursors stay: nothing is re-read."""
    from datetime import datetime

    grouped: dict[tuple[str, str], list[tuple[float, dict, str]]] = {}  # type: ignore[type-arg]
    for data, pulled_at in conn.execute("SELECT data, pulled_at FROM records WHERE system = 'usage' AND object = 'rows' "
                                        "AND deleted = 0 ORDER BY id"):
        rec = json.loads(data)
        try:
            stamp = datetime.fromisoformat(str(rec.get("at")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        grouped.setdefault((str(rec.get("source")), str(rec.get("ref"))), []).append((stamp, rec, pulled_at))
    for (entry, ref), rows in grouped.items():
        rows.sort(key=lambda r: r[0])
        columns = list(dict.fromkeys(c for _s, rec, _p in rows for c in rec if c not in ("source", "ref", "at", "na")))
        na_columns = list(dict.fromkeys(c for _s, rec, _p in rows for c in (rec.get("na") or {})))
        series: dict = {"source": entry, "ref": ref, "at": [s for s, _r, _p in rows],  # type: ignore[type-arg]
                        "values": {c: [rec.get(c) for _s, rec, _p in rows] for c in columns}}
        if na_columns:
            series["na"] = {c: [(rec.get("na") or {}).get(c) for _s, rec, _p in rows] for c in na_columns}
        conn.execute("INSERT OR REPLACE INTO records VALUES ('usage', 'series', ?, ?, ?, 0, ?)",
                     (f"{entry}|{ref}", json.dumps(series, sort_keys=True), rows[-1][1].get("at"),
                      max(p for _s, _r, p in rows)))
    conn.execute("DELETE FROM records WHERE system = 'usage' AND object = 'rows'")


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


def _columnar(conn: sqlite3.Connection) -> None:
    """Migration 12: `value_columns` and `value_changes`, `score_columns`. Triggers keep them true
    whoever writes (but the value and score writers, which lift them for their own bulk writes and
    do the same themselves: `Area._untriggered`): a value row that changes while its name has a copy logs its account in
    `value_changes` (the copy plus those rows is the name's current values); a score row that
    changes drops its score's copy."""
    conn.execute("CREATE TABLE IF NOT EXISTS value_columns (name TEXT PRIMARY KEY, columns BLOB NOT NULL)")
    conn.execute("""CREATE TABLE IF NOT EXISTS value_changes (name TEXT NOT NULL, account_id INTEGER NOT NULL,
                    PRIMARY KEY (name, account_id)) WITHOUT ROWID""")
    conn.execute("CREATE TABLE IF NOT EXISTS score_columns (score TEXT PRIMARY KEY, columns BLOB NOT NULL)")

    def logged(row: str) -> str:
        return (f"INSERT OR IGNORE INTO value_changes SELECT {row}.name, {row}.account_id "
                f"WHERE EXISTS (SELECT 1 FROM value_columns WHERE name = {row}.name);")

    for event, rows in (("INSERT", ["NEW"]), ("UPDATE OF name, account_id, num, text, since, na_reason", ["OLD", "NEW"]),
                        ("DELETE", ["OLD"])):
        conn.execute(f"""CREATE TRIGGER IF NOT EXISTS value_columns_{event.split()[0].lower()} AFTER {event}
                         ON metric_values BEGIN {' '.join(logged(r) for r in rows)} END""")
    for event, rows in (("INSERT", "NEW.score"), ("UPDATE", "OLD.score, NEW.score"), ("DELETE", "OLD.score")):
        conn.execute(f"""CREATE TRIGGER IF NOT EXISTS score_columns_{event.lower()} AFTER {event} ON scores
                         BEGIN DELETE FROM score_columns WHERE score IN ({rows}); END""")


def _moments(conn: sqlite3.Connection) -> None:
    """Migration 13: `moments` and the meta count `inputs.changes`, which the last scores are checked
    against (connector/scoring/standing.py). A moment is a `since` of a name's values or a `scored_at`
    of a score's history: a read as of "N days ago" gives another answer only when one lies between
    the last score's N days ago and now's. Every write to what scoring reads (values, live accounts,
    overrides, score rows) counts one change. Triggers do both whoever writes (but the value and score
    writers, which lift them for their bulk writes and do the same themselves: `Area._untriggered`)."""
    conn.execute("""CREATE TABLE IF NOT EXISTS moments (area TEXT NOT NULL, name TEXT NOT NULL, at TEXT NOT NULL,
                    PRIMARY KEY (area, name, at)) WITHOUT ROWID""")
    conn.execute("INSERT OR IGNORE INTO moments SELECT DISTINCT 'value', name, since FROM metric_history")
    conn.execute("INSERT OR IGNORE INTO moments SELECT DISTINCT 'value', name, since FROM metric_values")
    conn.execute("INSERT OR IGNORE INTO moments SELECT DISTINCT 'score', score, scored_at FROM score_history")
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, '0')", (INPUTS_CHANGES,))
    counted = f"UPDATE meta SET value = value + 1 WHERE key = '{INPUTS_CHANGES}';"
    for prefix, table, events, moment in (
        ("value_moments", "metric_values", ("INSERT", "UPDATE OF name, account_id, num, text, since, na_reason", "DELETE"),
         "INSERT OR IGNORE INTO moments VALUES ('value', NEW.name, NEW.since);"),
        ("value_moments_history", "metric_history", ("INSERT", "UPDATE", "DELETE"),
         "INSERT OR IGNORE INTO moments VALUES ('value', NEW.name, NEW.since);"),
        ("score_moments", "score_history", ("INSERT", "UPDATE", "DELETE"),
         "INSERT OR IGNORE INTO moments VALUES ('score', NEW.score, NEW.scored_at);"),
        ("score_moments_rows", "scores", ("INSERT", "UPDATE", "DELETE"), ""),
        ("account_moments", "accounts", ("INSERT", "UPDATE OF deleted_at", "DELETE"), ""),
        ("override_moments", "overrides", ("INSERT", "UPDATE", "DELETE"), ""),
    ):
        for event in events:
            kind = event.split()[0]
            conn.execute(f"""CREATE TRIGGER IF NOT EXISTS {prefix}_{kind.lower()} AFTER {event} ON {table}
                             BEGIN {moment if kind != "DELETE" else ""} {counted} END""")


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class Schema(Area):
    """The schema version and migrations of an open store, and its meta facts."""

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
                step = _MIGRATIONS[version]
                if callable(step):  # a migration that rewrites data
                    step(self.conn)
                else:
                    for statement in _split_sql(step):
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {version + 1}")
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version + 1),)
                )

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
