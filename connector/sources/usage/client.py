"""Product usage where it lives: rows from a SQL database (any SQLAlchemy URL) or CSV / Parquet
files (read with DuckDB), each naming an account by a key, a moment, and metric columns.

What is stored (the store's `records`, system "usage"):
* `series`: one per (source entry, key): its rows' timestamps and metric values as arrays, and
  why any value is N/A (connector/sources/usage/rows.py);
* `keys`: one per distinct key, matched to accounts like any linked record (explicit id, then
  domain); unmatched and conflicting keys go to `match_issues`;
* `files`: one per file a drop took (by the hash of its content), so a file is read once.

Rows are checked as they come (column-wise, a page at a time): a key that is empty, a timestamp that is missing, unparseable or
without a zone (unless the entry says `timestamp_zone: UTC`), a second row for the same key and
timestamp — the row is left out and counted; a value that is not a number is N/A with its reason
and counted. A query that fails, or that does not return a declared column, stops the source
with the mappings line to fix (exit 2). The database URL is a secret: it never reaches a log or
an error.

The cursor of a SQL entry is the latest timestamp stored; `:since` is bound to it (minus
`reread_days`), and it is committed only with the last page, so a run stopped half way reads
those rows again (a row at a stored key and timestamp replaces it). A file drop's cursor is the list of file hashes taken.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, Problem
from ...http import SettingsError, redact, setting
from ...times import parse_iso
from ..base import Page, PullStats, Read, Row, SourceSetup, Stream
from .rows import Collected, merged
from .settings import FileDrop, Rows, SqlQuery

if TYPE_CHECKING:
    from ...config.datasources import MappedSource
    from ...config.mappings import Mappings

SYSTEM = "usage"
PAGE = 5_000
log = logging.getLogger("healthsync")


class UsageSource:
    CREDENTIALS = "the variables the mappings' `sources:` name in url_env (USAGE_DATABASE_URL in the shipped ones)"
    system = SYSTEM

    def __init__(self, ctx: SourceSetup):
        self.ctx = ctx
        self.field_types: dict[str, dict[str, Any]] = {}  # not a CRM: no output fields
        self.rows_returned: dict[str, int] = {}  # entry -> rows the last read returned (tests, benchmarks)

    @classmethod
    def from_env(cls, ctx: SourceSetup) -> UsageSource | None:
        """A client when the mappings have usage entries and every database URL they name is set."""
        entries = _entries(ctx.mappings) if ctx.mappings is not None else []
        if not entries or any(isinstance(e.settings, SqlQuery) and not _secret_url(ctx.env, e.settings.url_env)
                              for e in entries):
            return None
        return cls(ctx)

    def ping(self) -> None:
        return None

    # ------------------------------------------------------------ checks

    def check(self, mappings: Mappings) -> list[Problem]:
        """Every entry's settings, and its columns: a query run with no rows, the header of a drop's
        newest file (each new file is checked again as a pull reads it)."""
        problems: list[Problem] = []
        for entry in _entries(mappings):
            try:
                if isinstance(entry.settings, SqlQuery):
                    with _connect(self.ctx.env, mappings, entry) as conn:
                        returned = _columns_of(conn, mappings, entry, limit=0)
                    _require(mappings, entry, returned)
                else:  # the newest file stands for the drop: each new file is checked as it is read
                    paths = _files(mappings, entry)
                    if paths:
                        newest = max(paths, key=lambda p: (p.stat().st_mtime, p.name))
                        _require(mappings, entry, _file_columns(newest, entry.settings))
            except ConfigError as err:
                problems += err.problems
        return problems

    def streams(self, mappings: Mappings) -> list[Stream]:
        out = []
        for entry in _entries(mappings):
            if isinstance(entry.settings, SqlQuery):
                out.append(Stream(entry.name, "series", f"SQL {entry.settings.url_env}", key="id",
                                  cursor_field=entry.settings.timestamp, paginator="fetchmany"))
            else:
                out.append(Stream(entry.name, "series", f"files {entry.settings.path}", key="id",
                                  cursor_field="file hashes", paginator="one file a page"))
        return out

    def read(self, stream: Stream, mappings: Mappings, at: Read) -> Iterator[Page]:
        entry = mappings.sources[stream.name]
        collected = Collected(entry.name, entry.settings)
        if isinstance(entry.settings, SqlQuery):
            yield from self._query(entry, mappings, at, collected)
        else:
            yield from self._drop(entry, mappings, at, collected)
        self.rows_returned[entry.name] = collected.count
        for note in collected.notes():
            log.warning("usage %s", note)
            at.stats.notes.append(note)

    def finish(self, stats: PullStats) -> None:
        return None

    # ------------------------------------------------------------ SQL

    def _query(self, entry: MappedSource, mappings: Mappings, at: Read, collected: Collected) -> Iterator[Page]:
        spec: SqlQuery = entry.settings
        since = _since(at.cursor, spec)
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        with _connect(self.ctx.env, mappings, entry) as conn:
            try:
                with executed(conn, spec.query, since) as (names, result, fetch):
                    _require(mappings, entry, names)
                    whole = at.limit is None and _add_arrays(collected, conn, result, names)
                    while not whole and (at.limit is None or collected.count < at.limit):
                        batch = fetch(PAGE if at.limit is None else min(PAGE, at.limit - collected.count))
                        if not batch:
                            break
                        collected.add(names, batch)
            except (DBAPIError, SQLAlchemyError, conn.dialect.dbapi.Error) as exc:  # as it runs, or as its rows come
                raise _query_error(mappings, entry, exc) from None
        yield from _stored(entry, collected)
        cursor = max(filter(None, (collected.latest, at.cursor)), key=parse_iso, default=None)
        yield Page([], cursor=cursor)  # the cursor moves only once every row is stored

    # ------------------------------------------------------------ files

    def _drop(self, entry: MappedSource, mappings: Mappings, at: Read, collected: Collected) -> Iterator[Page]:
        taken: list[str] = json.loads(at.cursor) if at.cursor else []
        files: list[Row] = []
        for path in _files(mappings, entry):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in taken or (at.limit is not None and collected.count >= at.limit):
                continue
            names, rows = _file_rows(path, entry.settings)
            _require(mappings, entry, names)
            if at.limit is not None:
                rows = rows[: max(0, at.limit - collected.count)]
            before = collected.count
            collected.add(names, rows)
            taken.append(digest)
            files.append((digest, {"path": str(path), "sha256": digest, "rows": collected.count - before,
                                   "read_at": at.run_started}, at.run_started, False))
        yield from _stored(entry, collected)
        if files:  # the hashes move only with every file's rows stored
            yield Page(files, cursor=json.dumps(sorted(taken)), obj="files")


def _stored(entry: MappedSource, collected: Collected) -> Iterator[Page]:
    """The keys, then the series (merged over the stored ones), a few thousand records a page."""
    refs = collected.finish()
    for start in range(0, len(refs), PAGE):
        yield Page([(ref, {"id": ref, "kind": ref.split(":", 1)[0], "key": ref.split(":", 1)[1]}, None, False)
                    for ref in refs[start:start + PAGE]], obj="keys", counted_as="keys")
    for chunk in collected.series(PAGE):
        yield Page([s.row(entry.name) for s in chunk], counted_as="rows", count=sum(len(s.at) for s in chunk),
                   merge=merged)


@contextmanager
def executed(conn: Any, query: str, since: datetime) -> Iterator[tuple[list[str], Any, Any]]:
    """(column names, the result, its fetchmany(n)) of the admin's query, streamed: PostgreSQL's
    rows as the server makes them (`_Streamed`), elsewhere through a server-side cursor where the
    dialect has one. A stream not read to its end is cancelled when this exits."""
    streamed = _Streamed.of(conn, query, since)
    if streamed is not None:
        with streamed:
            yield streamed.names, streamed, streamed.fetchmany
        return
    result = conn.execution_options(stream_results=True).execute(_sql(query), {"since": since})
    yield list(result.keys()), result, fetcher(conn, result)


class _Streamed:
    """A PostgreSQL query's rows through psycopg's `stream()` in libpq's chunked mode (libpq 17+):
    the server runs its ordinary plan, parallel workers included, and sends rows as it makes them,
    which are checked here while it makes the next ones. A server-side cursor (DECLARE) gets no
    parallel plan and hands out rows only when asked: the benchmark's 10M-event query took 44 to
    46 s that way, 26 to 30 s streamed, checking included (docs/usage.md)."""

    def __init__(self, raw: Any, sql: str, params: dict[str, Any], size: int):
        self.cursor = raw.cursor()
        self.stream = self.cursor.stream(sql, params, size=size)
        first = list(itertools.islice(self.stream, size))  # the columns are known once rows come
        self.names = [d.name for d in self.cursor.description or []]
        self.rows = itertools.chain(first, self.stream)

    @classmethod
    def of(cls, conn: Any, query: str, since: datetime) -> _Streamed | None:
        if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
            return None
        import psycopg

        if psycopg.pq.version() < 170000:  # no chunked mode: one result per row would cost more than it saves
            return None
        raw = conn.connection.driver_connection
        compiled = _sql(query).compile(dialect=conn.dialect)
        return cls(raw, compiled.string, compiled.construct_params({"since": since}), PAGE)

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        return list(itertools.islice(self.rows, n))

    def __enter__(self) -> _Streamed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()  # psycopg cancels a query whose rows were not all read
        self.cursor.close()


def fetcher(conn: Any, result: Any) -> Any:
    """fetchmany(n) of a result: the driver's own rows (tuples) where nothing sits between (DuckDB,
    SQLite), as SQLAlchemy's Row objects cost more than the rest; a server-side cursor (PostgreSQL)
    is read through SQLAlchemy, which may hold rows it fetched ahead."""
    direct = not conn.dialect.supports_server_side_cursors and getattr(result, "cursor", None) is not None
    return result.cursor.fetchmany if direct else result.fetchmany


def _arrays(conn: Any, result: Any, names: list[str]) -> tuple[list[Any], list[str]] | None:
    """The whole result as arrays, a column each, with the database's type names, where the driver
    gives them (DuckDB's fetchnumpy: half the time of its tuples, and no Python object per number);
    None elsewhere, or when two columns share a name."""
    cursor = getattr(result, "cursor", None)
    if conn.dialect.name != "duckdb" or cursor is None or len({n.lower() for n in names}) < len(names):
        return None
    types = [str(d[1]) for d in cursor.description]
    fetched = cursor.fetchnumpy()
    return [fetched[n] for n in names], types


def _add_arrays(collected: Collected, conn: Any, result: Any, names: list[str]) -> bool:
    """Check the whole result as arrays, a slice of its rows at a time, where the driver gives
    arrays; False (nothing read) where it does not. The fetched arrays go when this returns."""
    arrays = _arrays(conn, result, names)
    if arrays is None:
        return False
    columns, types = arrays
    for start in range(0, len(columns[0]), 40 * PAGE):  # its Python values (the keys) a slice at a time
        collected.add_columns(names, [c[start:start + 40 * PAGE] for c in columns], types)
    return True


def _entries(mappings: Mappings) -> list[MappedSource]:
    return [e for e in mappings.sources.values() if e.system == SYSTEM]


_BIND = re.compile(r"(?<![:\w\\]):(?!since\b)(\w+)")


def _sql(query: str) -> Any:
    """The admin's query as SQLAlchemy text with `:since` its only bind: any other `:word` (the
    colons in a literal '00:00:00', a named parameter the query does not mean) is kept as written."""
    from sqlalchemy import text

    return text(_BIND.sub(lambda m: "\\:" + m.group(1), query))


def _since(cursor: str | None, spec: SqlQuery) -> datetime:
    if cursor:
        return parse_iso(cursor) - timedelta(days=spec.reread_days)
    if spec.backfill_days:
        return datetime.now(UTC) - timedelta(days=spec.backfill_days)
    return datetime(1970, 1, 1, tzinfo=UTC)


class _connect:
    """A connection to an entry's database; its URL read from the environment and kept secret."""

    def __init__(self, env: Any, mappings: Mappings, entry: MappedSource):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        spec: SqlQuery = entry.settings
        url = _secret_url(env, spec.url_env)
        if not url:
            raise SettingsError(f"usage source '{entry.name}' ({mappings.located.where(('sources', entry.name))[0]}) "
                                f"reads its database from {spec.url_env}, which is not set")
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise SettingsError(f"{spec.url_env} is not a SQLAlchemy URL (dialect+driver://user:password@host/db)") from None
        try:
            self.engine = create_engine(parsed, pool_pre_ping=False)
        except NoSuchModuleError:
            raise SettingsError(f"{spec.url_env}: no SQLAlchemy dialect {parsed.drivername!r} is installed "
                                "(pip install healthsync[snowflake] or [bigquery] for those warehouses)") from None
        if parsed.drivername.startswith("duckdb"):
            from sqlalchemy import event

            event.listen(self.engine, "connect", lambda dbapi, _record: _embedded(dbapi, parsed.query))
        self.entry, self.mappings = entry, mappings

    def __enter__(self) -> Any:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        try:
            self.conn = self.engine.connect()
        except (DBAPIError, SQLAlchemyError) as exc:
            raise SettingsError(redact(f"usage source '{self.entry.name}': cannot connect to the database in "
                                       f"{self.entry.settings.url_env}: {_first_line(exc)}")) from None
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.engine.dispose()


DUCKDB_MEMORY = "256MB"


def _embedded(conn: Any, query: Any) -> None:
    """DuckDB runs inside healthsync: no progress bar on stdout (a job's log), and a memory limit
    (its default is 80% of the machine) past which a big aggregation spills to a temp folder.
    `?memory_limit=2GB` or `?temp_directory=/path` in the URL say otherwise."""
    conn.execute("SET enable_progress_bar = false")
    if "memory_limit" not in query:
        conn.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    if "temp_directory" not in query:
        spill = Path(tempfile.gettempdir()) / "healthsync-duckdb"
        conn.execute(f"SET temp_directory = '{spill}'")


def _secret_url(env: Any, variable: str) -> str | None:
    """The URL in `variable`, registered as a secret, and its password on its own too (a driver's
    message may quote it without the rest of the URL)."""
    url = setting(env, variable, secret=True)
    if url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            password = make_url(url).password
        except ArgumentError:
            password = None
        if password:
            redact.add(str(password))
    return url


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return redact(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__)


def _query_error(mappings: Mappings, entry: MappedSource, exc: BaseException) -> ConfigError:
    return ConfigError([mappings.located.problem(("sources", entry.name, "query"),
                                                 f"the query failed: {_first_line(exc)}",
                                                 "run it in the database's own client with :since replaced")],
                       title="a usage query failed")


def _columns_of(conn: Any, mappings: Mappings, entry: MappedSource, limit: int) -> list[str]:
    """The columns the query returns, run so that it returns at most `limit` rows."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    query = entry.settings.query.strip().rstrip(";")
    try:
        result = conn.execute(_sql(f"SELECT * FROM ({query}) AS healthsync_check LIMIT {int(limit)}"),
                              {"since": datetime(1970, 1, 1, tzinfo=UTC)})
        return list(result.keys())
    except (DBAPIError, SQLAlchemyError) as exc:
        raise _query_error(mappings, entry, exc) from None


def _require(mappings: Mappings, entry: MappedSource, returned: list[str]) -> None:
    spec: Rows = entry.settings
    have = {c.lower() for c in returned}
    problems = []
    for path, column in ((("key", "column"), spec.key.column), (("timestamp",), spec.timestamp),
                         *((("columns", c), c) for c in spec.columns)):
        if column.lower() not in have:
            problems.append(mappings.located.problem(
                ("sources", entry.name, *path), f"the {'query' if isinstance(spec, SqlQuery) else 'file'} returns no "
                f"column '{column}'", f"it returns: {', '.join(returned) or 'no columns'}"))
    if problems:
        raise ConfigError(problems, title=f"usage source '{entry.name}' does not return its columns")


def _files(mappings: Mappings, entry: MappedSource) -> list[Path]:
    spec: FileDrop = entry.settings
    base = Path(spec.path) if Path(spec.path).is_absolute() else mappings.root / spec.path
    if base.is_dir():
        found = [p for p in base.iterdir() if p.suffix.lower() in (".csv", ".parquet")]
    else:
        found = [Path(p) for p in glob.glob(str(base))]
    return sorted(p for p in found if p.is_file())


def _relation(path: Path, spec: FileDrop) -> tuple[str, list[str]]:
    kind = spec.format or ("parquet" if path.suffix.lower() == ".parquet" else "csv")
    if kind == "parquet":
        return "SELECT * FROM read_parquet(?)", [str(path)]
    return "SELECT * FROM read_csv(?, header = true, all_varchar = true)", [str(path)]


def _duck() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    _embedded(con, {})
    return con


def _file_columns(path: Path, spec: FileDrop) -> list[str]:
    sql, params = _relation(path, spec)
    con = _duck()
    try:
        return [d[0] for d in con.execute(sql + " LIMIT 0", params).description]
    except Exception as exc:  # duckdb's own errors: a file that is not CSV / Parquet
        raise SettingsError(f"{path}: cannot be read as {spec.format or path.suffix.lstrip('.')}: {_first_line(exc)}") from None
    finally:
        con.close()


def _file_rows(path: Path, spec: FileDrop) -> tuple[list[str], list[tuple[Any, ...]]]:
    sql, params = _relation(path, spec)
    con = _duck()
    try:
        result = con.execute(sql, params)
        return [d[0] for d in result.description], result.fetchall()
    except Exception as exc:
        raise SettingsError(f"{path}: cannot be read: {_first_line(exc)}") from None
    finally:
        con.close()
