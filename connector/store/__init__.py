"""The local SQLite store: the only room of healthsync that speaks SQL, one module per area.

  schema.py    migrations, schema version, the checks that a path is a healthsync store, meta facts
  accounts.py  accounts, account links, raw records, cursors, match issues
  changes.py   what changed since the last measure: queued records and accounts, when values move
  values.py    metric values and their history, loaded as columns (`Column`)
  scores.py    scores and their history, overrides and their audit
  packed.py    columns packed into one blob: the columnar copies of values and scores
  outbox.py    the outbox of CRM changes and the alert deliveries (one sending protocol)
  alerts.py    alert rules, per-account alert state, fired alerts
  runs.py      runs and the run lock
  snapshots.py rebuilt score history (`rescore`), apart from the live scores

Each area is a mixin of `Store`, which owns the connection, the open modes, preview copies
and transactions (base.py). docs/store.md describes every table and column.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import sqlite_utils

from .accounts import Accounts
from .alerts import Alerts
from .base import utcnow
from .changes import Changes
from .outbox import Outbox, ReadConnection
from .runs import Runs
from .schema import (
    _MIGRATIONS,
    DEFAULT_PATH,
    SCHEMA_VERSION,
    Schema,
    _check_healthsync,
    _check_path,
    _split_sql,
    resolve_path,
)
from .scores import ScoreRow, Scores, ScoreTable
from .snapshots import Snapshots
from .values import Column, Values

__all__ = [
    "DEFAULT_PATH", "SCHEMA_VERSION", "_MIGRATIONS", "Column", "ReadConnection", "ScoreRow", "ScoreTable", "Store", "_split_sql", "resolve_path", "utcnow",
]


class Store(Schema, Accounts, Values, Scores, Outbox, Changes, Alerts, Runs, Snapshots):
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
                # 16 MB of pages (its RSS is in every step): a 100k full run peaked at 809 against 869 MB with
                # 64 MB, and the 1M-account score writes took no longer (benchmarks/score_bench.py: 14.7 against 15.0 s)
                self.conn.execute("PRAGMA cache_size=-16384")
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
