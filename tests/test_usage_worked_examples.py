"""docs/usage.md's Segment / RudderStack worked examples run as written: on DuckDB, against
`tracks` and `groups` tables of that shape, the count(DISTINCT) query and the per-user GROUP BY
query the docs recommend return the same rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from connector.sources.usage.client import _sql

DOCS = Path(__file__).resolve().parent.parent / "docs" / "usage.md"


def _queries() -> list[str]:
    """The indented SQL blocks of the worked examples' section, in order."""
    text = DOCS.read_text()
    section = text[text.index("## Worked examples"):text.index("## Checking before a run")]
    blocks = re.findall(r"((?:\n    [^\n]*)+)", section)
    return [re.sub(r"\n    ", "\n", b).strip() for b in blocks if "SELECT" in b]


def test_the_segment_queries_of_the_docs_run_and_agree(tmp_path):
    queries = _queries()
    assert len(queries) == 2 and "count(DISTINCT" in queries[0] and "per_user" in queries[1]
    engine = sa.create_engine(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA analytics")
        conn.exec_driver_sql("CREATE TABLE analytics.groups AS SELECT 'g' || i AS group_id, 'acct' || (i % 3) AS account_id "
                             "FROM range(6) t(i)")
        conn.exec_driver_sql("""CREATE TABLE analytics.tracks AS SELECT
            'u' || (i % 7) AS user_id, ['Report Run', 'Page Viewed', 'Query Saved', 'Login'][1 + i % 4] AS event,
            TIMESTAMPTZ '2026-05-01 00:00:00+00' + INTERVAL (i * 3541) SECOND AS timestamp,
            'g' || (i % 6) AS context_group_id FROM range(2000) t(i)""")
    since = datetime(2026, 5, 3, tzinfo=UTC)
    with engine.connect() as conn:
        results = [sorted(tuple(float(v) if isinstance(v, int) else v for v in row)
                          for row in conn.execute(_sql(q), {"since": since})) for q in queries]
    engine.dispose()
    assert results[0] == results[1]
    assert len(results[0]) > 60 and {r[0] for r in results[0]} == {"acct0", "acct1", "acct2"}
    assert all(r[1] >= since.date() for r in results[0])  # :since bound: nothing before it
    assert sum(r[4] for r in results[0]) > sum(r[3] for r in results[0]) > 0  # key events are some of the events
