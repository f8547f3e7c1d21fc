"""Product usage where it lives: rows from a SQL database (any SQLAlchemy URL) or CSV / Parquet
files (read with DuckDB), each naming an account by a key, a moment, and metric columns.

What is stored (the store's `records`, system "usage"):
* `rows`: one per (source entry, key, timestamp): the metric values, and why any is N/A;
* `keys`: one per distinct key, matched to accounts like any linked record (explicit id, then
  domain); unmatched and conflicting keys go to `match_issues`;
* `files`: one per file a drop took (by the hash of its content), so a file is read once.

Rows are checked as they come: a key that is empty, a timestamp that is missing, unparseable or
without a zone (unless the entry says `timestamp_zone: UTC`), a second row for the same key and
timestamp — the row is left out and counted; a value that is not a number is N/A with its reason
and counted. A query that fails, or that does not return a declared column, stops the source
with the mappings line to fix (exit 2). The database URL is a secret: it never reaches a log or
an error.

The cursor of a SQL entry is the latest timestamp stored; `:since` is bound to it (minus
`reread_days`), and it is committed only with the last page, so a run stopped half way reads
those rows again (they are upserted by id). A file drop's cursor is the list of file hashes taken.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, Problem
from ...http import SettingsError, redact, setting
from ...times import iso, parse_iso
from ..base import Page, PullStats, Read, Row, SourceSetup, Stream
from .settings import FileDrop, Rows, SqlQuery

if TYPE_CHECKING:
    from ...config.datasources import MappedSource
    from ...config.mappings import Mappings

SYSTEM = "usage"
PAGE = 5_000
log = logging.getLogger("healthsync")


def key_id(kind: str, key: str) -> str:
    return f"{kind}:{key}"


class RowCheck:
    """Turns raw result rows into stored rows, counting what was wrong and where."""

    def __init__(self, name: str, spec: Rows):
        self.name, self.spec = name, spec
        self.seen: set[tuple[str, str]] = set()
        self.problems: dict[str, list[str]] = {}  # reason -> the first examples
        self.counts: dict[str, int] = {}  # reason -> rows
        self.count = 0
        self.latest: str | None = None

    def _bad(self, reason: str, example: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.problems.setdefault(reason, [])
        if len(examples) < 3:
            examples.append(example)

    def row(self, values: dict[str, Any]) -> tuple[Row, str] | None:
        """(the stored row, its key's id), or None for a row left out (and counted)."""
        self.count += 1
        where = f"row {self.count}"
        raw_key = values.get(self.spec.key.column)
        key = "" if raw_key is None else str(raw_key).strip()
        if not key:
            self._bad(f"no {self.spec.key.column} (the key): row left out", where)
            return None
        where = f"row {self.count} ({self.spec.key.column} {key[:60]!r})"
        moment, problem = self.moment(values.get(self.spec.timestamp))
        if moment is None:
            self._bad(f"{self.spec.timestamp} {problem}: row left out", where)
            return None
        at = iso(moment)
        if (key, at) in self.seen:
            self._bad(f"a second row for the same {self.spec.key.column} and {self.spec.timestamp}: left out",
                      f"{where} at {at}")
            return None
        self.seen.add((key, at))
        ref = key_id(self.spec.key.kind, key)
        data: dict[str, Any] = {"source": self.name, "ref": ref, "at": at}
        reasons: dict[str, str] = {}
        for column in self.spec.columns:
            value, why = _number(values.get(column))
            data[column] = value
            if why:
                reasons[column] = why
                self._bad(f"{column} {why.split(':')[0]}: N/A", f"{where} at {at}: {why}")
        if reasons:
            data["na"] = reasons
        if self.latest is None or at > self.latest:
            self.latest = at
        return (f"{self.name}|{ref}|{at}", data, at, False), ref

    def moment(self, value: Any) -> tuple[datetime | None, str]:
        if value is None or value == "":
            return None, "is empty"
        if isinstance(value, datetime):
            if value.tzinfo is None:
                if self.spec.timestamp_zone != "UTC":
                    return None, f"{value.isoformat()} has no time zone (say `timestamp_zone: UTC` if it is UTC)"
                value = value.replace(tzinfo=UTC)
            return value.astimezone(UTC), ""
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC), ""  # a day: its start, UTC
        text = str(value).strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                return datetime(day.year, day.month, day.day, tzinfo=UTC), ""
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None, f"{text[:40]!r} is not a date or timestamp"
        if parsed.tzinfo is None and self.spec.timestamp_zone != "UTC":
            return None, f"{text[:40]!r} has no time zone (say `timestamp_zone: UTC` if it is UTC)"
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC), ""

    def notes(self) -> list[str]:
        """One line per kind of problem: how many rows, and the first one (row number and key)."""
        return [f"{self.name}: {self.counts[reason]:,} row(s): {reason} (first: {examples[0]})"
                for reason, examples in self.problems.items()]


def _number(value: Any) -> tuple[float | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return None, f"not a number: {value!r}"
    if isinstance(value, (int, float, Decimal)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip().replace(",", ""))
        except ValueError:
            return None, f"not a number: {str(value)[:40]!r}"
    if math.isnan(number) or math.isinf(number):
        return None, f"not a finite number: {value!r}"
    return number, None


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
        """Every entry's settings, and (for SQL) the query run with no rows: its columns must be there."""
        problems: list[Problem] = []
        for entry in _entries(mappings):
            try:
                if isinstance(entry.settings, SqlQuery):
                    with _connect(self.ctx.env, mappings, entry) as conn:
                        returned = _columns_of(conn, mappings, entry, limit=0)
                    _require(mappings, entry, returned)
                else:
                    for path in _files(mappings, entry):
                        _require(mappings, entry, _file_columns(path, entry.settings))
            except ConfigError as err:
                problems += err.problems
        return problems

    def streams(self, mappings: Mappings) -> list[Stream]:
        out = []
        for entry in _entries(mappings):
            if isinstance(entry.settings, SqlQuery):
                out.append(Stream(entry.name, "rows", f"SQL {entry.settings.url_env}", key="id",
                                  cursor_field=entry.settings.timestamp, paginator="fetchmany"))
            else:
                out.append(Stream(entry.name, "rows", f"files {entry.settings.path}", key="id",
                                  cursor_field="file hashes", paginator="one file a page"))
        return out

    def read(self, stream: Stream, mappings: Mappings, at: Read) -> Iterator[Page]:
        entry = mappings.sources[stream.name]
        check = RowCheck(entry.name, entry.settings)
        if isinstance(entry.settings, SqlQuery):
            yield from self._query(entry, mappings, at, check)
        else:
            yield from self._drop(entry, mappings, at, check)
        self.rows_returned[entry.name] = check.count
        for note in check.notes():
            log.warning("usage %s", note)
            at.stats.notes.append(note)

    def finish(self, stats: PullStats) -> None:
        return None

    # ------------------------------------------------------------ SQL

    def _query(self, entry: MappedSource, mappings: Mappings, at: Read, check: RowCheck) -> Iterator[Page]:
        spec: SqlQuery = entry.settings
        since = _since(at.cursor, spec)
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        with _connect(self.ctx.env, mappings, entry) as conn:
            try:
                result = conn.execution_options(stream_results=True).execute(_sql(spec.query), {"since": since})
            except (DBAPIError, SQLAlchemyError) as exc:
                raise _query_error(mappings, entry, exc) from None
            _require(mappings, entry, list(result.keys()))
            names = list(result.keys())
            while at.limit is None or check.count < at.limit:
                batch = result.fetchmany(PAGE if at.limit is None else min(PAGE, at.limit - check.count))
                if not batch:
                    break
                yield from _pages([dict(zip(names, r, strict=True)) for r in batch], check)
        yield Page([], cursor=check.latest or at.cursor)  # the cursor moves only once every row is stored

    # ------------------------------------------------------------ files

    def _drop(self, entry: MappedSource, mappings: Mappings, at: Read, check: RowCheck) -> Iterator[Page]:
        taken: list[str] = json.loads(at.cursor) if at.cursor else []
        for path in _files(mappings, entry):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in taken:
                continue
            rows = _file_rows(path, entry.settings)
            if at.limit is not None:
                rows = rows[: max(0, at.limit - check.count)]
            _require(mappings, entry, list(rows[0]) if rows else _file_columns(path, entry.settings))
            before = check.count
            yield from _pages(rows, check)
            taken.append(digest)
            record = {"path": str(path), "sha256": digest, "rows": check.count - before, "read_at": at.run_started}
            yield Page([(digest, record, at.run_started, False)], cursor=json.dumps(sorted(taken)), obj="files")


def _pages(values: list[dict[str, Any]], check: RowCheck) -> Iterator[Page]:
    rows: list[Row] = []
    keys: dict[str, Row] = {}
    for raw in values:
        made = check.row(raw)
        if made is None:
            continue
        row, ref = made
        rows.append(row)
        kind, key = ref.split(":", 1)
        keys.setdefault(ref, (ref, {"id": ref, "kind": kind, "key": key}, None, False))
    if keys:
        yield Page(list(keys.values()), obj="keys", counted_as="keys")
    if rows:
        yield Page(rows)


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


def _file_rows(path: Path, spec: FileDrop) -> list[dict[str, Any]]:
    sql, params = _relation(path, spec)
    con = _duck()
    try:
        result = con.execute(sql, params)
        names = [d[0] for d in result.description]
        return [dict(zip(names, r, strict=True)) for r in result.fetchall()]
    except Exception as exc:
        raise SettingsError(f"{path}: cannot be read: {_first_line(exc)}") from None
    finally:
        con.close()
