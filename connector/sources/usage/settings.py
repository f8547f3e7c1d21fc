"""The two kinds of `sources:` entries the usage source reads (connector/config/datasources.py):

* `type: sql` — a query against any SQLAlchemy URL (PostgreSQL, DuckDB, SQLite; Snowflake and
  BigQuery through their dialects, `pip install healthsync[snowflake]` / `[bigquery]`). The URL
  is a secret: the entry names the environment variable that holds it. `:since` in the query is
  bound to the stream's cursor (the latest timestamp already stored), so each run reads only new
  rows; the first run binds the start of time (or `backfill_days` ago) and so backfills history.
* `type: files` — CSV or Parquet files in a folder or glob, read with DuckDB, each file once (by
  the hash of its content).

Both return the same columns: an account key, a timestamp, and named metric columns.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
Where = tuple[tuple[str, ...], str, str]  # (path inside the entry, message, hint)


class Key(BaseModel):
    """Which column names the account, and what it holds: the id of another source's matched
    record (a Salesforce Account, a HubSpot company, a Stripe customer ...: `kind` is that source),
    or a domain (an email address or URL works too)."""

    model_config = ConfigDict(extra="forbid")
    column: str
    kind: str

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        from .. import registry  # late: the registry imports this source

        kinds = ["domain", *(s for s in registry.systems() if s != "usage")]
        if kind not in kinds:
            raise ValueError(f"{kind!r} is not a key kind: use one of {', '.join(kinds)}")
        return kind


class Rows(BaseModel):
    """What every usage row holds, whichever way it is read."""

    model_config = ConfigDict(extra="forbid")
    key: Key
    timestamp: str  # the column with the row's moment (a date, or a timestamp with a zone)
    timestamp_zone: Literal["UTC"] | None = None  # say so to take timestamps without a zone as UTC
    columns: dict[str, Literal["number"]] = Field(min_length=1)  # metric columns and their type

    def problems(self) -> list[Where]:
        found: list[Where] = []
        for name in self.columns:
            if not _NAME.match(name):
                found.append((("columns", name), f"'{name}' is not a plain column name", "letters, digits and _"))
            if name in (self.key.column, self.timestamp):
                found.append((("columns", name), f"'{name}' is the key or timestamp column, not a metric column", ""))
        if self.key.column == self.timestamp:
            found.append((("timestamp",), "the key and the timestamp are the same column", ""))
        return found

    @property
    def wanted(self) -> list[str]:
        return [self.key.column, self.timestamp, *self.columns]


class SqlQuery(Rows):
    url_env: str  # the environment variable holding the SQLAlchemy URL (a secret)
    query: str
    backfill_days: int | None = Field(default=None, gt=0)  # the first run reads this far back (default: all)
    reread_days: int = Field(default=0, ge=0, le=31)  # read again each run: rows of a day still being counted

    def problems(self) -> list[Where]:
        found = super().problems()
        if not _VARIABLE.match(self.url_env):
            found.append((("url_env",), f"{self.url_env!r} is not an environment variable name",
                          "the URL itself is a secret: put it in a variable, e.g. USAGE_DATABASE_URL"))
        if ":since" not in self.query:
            found.append((("query",), "the query has no :since bind, so every run would read everything",
                          "add e.g. WHERE day > :since (the latest timestamp already stored)"))
        return found


class FileDrop(Rows):
    path: str  # a folder, a file or a glob; relative to the mappings folder unless absolute
    format: Literal["csv", "parquet"] | None = None  # by the file's suffix when not given
