"""Usage rows are stored as one series per (entry, key): checked column-wise, a second row for the
same key and timestamp left out, a row read again on a later run replacing the stored one, old
stores (a record per row) migrated without re-reading; and the live measure, which computes the
usage metrics (and every other column-wise one) for all accounts at once, equals the per-account
path value for value and reason for reason."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from connector.sources.usage.rows import Collected, merged, rows_of
from connector.sources.usage.settings import SqlQuery
from connector.store import Store
from connector.store.schema import _MIGRATIONS, _split_sql

SPEC = SqlQuery.model_validate({
    "url_env": "U", "query": "SELECT * FROM t WHERE day > :since",
    "key": {"column": "account_id", "kind": "salesforce"}, "timestamp": "day",
    "columns": {"active_users": "number", "events": "number"}})
NAMES = ["account_id", "day", "active_users", "events"]


def _epoch(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def test_rows_are_grouped_by_key_in_time_order_and_bad_ones_counted():
    got = Collected("product_usage", SPEC)
    got.add(NAMES, [("001A", date(2026, 5, 11), 3, 30), ("001B", "2026-05-01", Decimal("2"), 20.0),
                    ("001A", date(2026, 5, 1), 4, None), (" ", date(2026, 5, 1), 1, 1)])
    got.add(NAMES, [("001A", "2026-05-11", 9, 90),  # a second row for 001A at 2026-05-11: left out
                    ("001B", "2026-05-21T00:00:00", 1, 1),  # no zone
                    ("001B", date(2026, 5, 21), "n/a", True)])
    refs = got.finish()
    series = {s.ref: s for chunk in got.series(1) for s in chunk}
    assert refs == list(series) == ["salesforce:001A", "salesforce:001B"]
    assert got.count == 7 and got.kept == 4
    a, b = series["salesforce:001A"], series["salesforce:001B"]
    assert a.at == [_epoch("2026-05-01"), _epoch("2026-05-11")]
    assert a.values == {"active_users": [4.0, 3.0], "events": [None, 30.0]} and a.na == {}  # None: missing, no reason
    assert b.values == {"active_users": [2.0, None], "events": [20.0, None]}
    assert b.na == {"active_users": [None, "not a number: 'n/a'"], "events": [None, "not a number: True"]}
    notes = got.notes()
    assert "product_usage: 1 row(s): no account_id (the key): row left out (first: row 4)" in notes
    assert any("row(s): day '2026-05-21T00:00:00' has no time zone" in n and "row 6 (account_id '001B')" in n
               for n in notes)
    assert ("product_usage: 1 row(s): a second row for the same account_id and day: left out "
            "(first: row 5 (account_id '001A') at 2026-05-11T00:00:00Z)") in notes
    assert any(n.startswith("product_usage: 1 row(s): active_users not a number: N/A (first: row 7") for n in notes)
    assert got.latest == "2026-05-21T00:00:00Z"


@pytest.mark.parametrize("zone", [None, "UTC"])
@pytest.mark.parametrize("stamp", ["TIMESTAMPTZ", "TIMESTAMP", "DATE", "VARCHAR"])
def test_duckdbs_arrays_are_checked_as_its_tuples_are(stamp, zone):
    """The same DuckDB result, read as arrays (the pull's fast path) and as tuples, makes the same
    series, N/A reasons, notes and cursor: NULL and blank keys, NULL and garbage moments, a second
    row at a moment, NULL, infinite, text and boolean values."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'America/New_York'")  # a zoned moment is the same instant in any session zone
    moment = {"TIMESTAMPTZ": "TIMESTAMPTZ '2026-05-01 00:00:00+00' + INTERVAL (i % 7) DAY",
              "TIMESTAMP": "TIMESTAMP '2026-05-01 00:00:00' + INTERVAL (i % 7) DAY",
              "DATE": "DATE '2026-05-01' + CAST(i % 7 AS INTEGER)",
              "VARCHAR": "CASE WHEN i = 5 THEN 'soon' ELSE CAST(DATE '2026-05-01' + CAST(i % 7 AS INTEGER) AS VARCHAR) END"}[stamp]
    con.execute(f"""CREATE TABLE t AS SELECT
        CASE WHEN i = 3 THEN NULL WHEN i = 4 THEN '  ' ELSE ' 001' || (i % 5) END AS account_id,
        CASE WHEN i = 8 THEN NULL ELSE {moment} END AS day,
        CASE WHEN i % 11 = 0 THEN NULL WHEN i = 13 THEN 'inf'::DOUBLE ELSE i * 1.5 END AS active_users,
        CASE WHEN i = 17 THEN 'n/a' WHEN i = 19 THEN NULL ELSE CAST(i AS VARCHAR) END AS events,
        i % 2 = 0 AS flag
        FROM range(40) r(i)""")
    spec = SqlQuery.model_validate({**SPEC.model_dump(), "columns": {"active_users": "number", "events": "number", "flag": "number"},
                                    "timestamp_zone": zone})
    names = ["account_id", "day", "active_users", "events", "flag"]
    as_tuples, as_arrays = Collected("u", spec), Collected("u", spec)
    result = con.execute("SELECT * FROM t")
    as_tuples.add(names, result.fetchall())
    result = con.execute("SELECT * FROM t")
    fetched = result.fetchnumpy()
    as_arrays.add_columns(names, [fetched[n] for n in names], [str(d[1]) for d in result.description])
    assert as_arrays.finish() == as_tuples.finish()
    assert [vars(x) for c in as_arrays.series(3) for x in c] == [vars(x) for c in as_tuples.series(3) for x in c]
    assert as_arrays.notes() == as_tuples.notes() and as_arrays.counts == as_tuples.counts
    assert (as_arrays.count, as_arrays.kept, as_arrays.latest) == (as_tuples.count, as_tuples.kept, as_tuples.latest)
    if stamp == "TIMESTAMP" and zone is None:  # no zone, none assumed: every row left out
        assert as_tuples.kept == 0 and any("has no time zone" in n for n in as_tuples.notes())
    else:
        assert as_tuples.kept > 20 and len(as_tuples.notes()) >= 3  # the case is not empty


def test_a_row_read_again_replaces_the_stored_one_and_the_others_stay():
    first = Collected("u", SPEC)
    first.add(NAMES, [("001A", "2026-05-01", 1, 10), ("001A", "2026-05-11", 2, 20)])
    first.finish()
    stored = next(first.series())[0].row("u")[1]
    again = Collected("u", SPEC)
    again.add(NAMES, [("001A", "2026-05-11", 5, "x"), ("001A", "2026-05-21", 6, 60)])
    again.finish()
    rid, record, modified, deleted = merged(stored, next(again.series())[0].row("u"))
    assert rid == "u|salesforce:001A" and modified == "2026-05-21T00:00:00Z" and not deleted
    assert record["at"] == [_epoch("2026-05-01"), _epoch("2026-05-11"), _epoch("2026-05-21")]
    assert record["values"] == {"active_users": [1.0, 5.0, 6.0], "events": [10.0, None, 60.0]}
    assert record["na"] == {"events": [None, "not a number: 'x'", None]}
    assert [r["at"] for r in rows_of(record)] == ["2026-05-01T00:00:00Z", "2026-05-11T00:00:00Z", "2026-05-21T00:00:00Z"]
    assert rows_of(record)[1] == {"key": "salesforce:001A", "at": "2026-05-11T00:00:00Z", "active_users": 5.0,
                                  "events": None, "na": {"events": "not a number: 'x'"}}


def test_a_store_with_a_record_per_usage_row_is_migrated_to_series(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for version, step in enumerate(_MIGRATIONS[:8]):
        for statement in _split_sql(step):  # type: ignore[arg-type]
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version + 1}")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '8')")
    old = [{"source": "u", "ref": "salesforce:001A", "at": "2026-05-11T00:00:00Z", "active_users": 3.0, "events": None,
            "na": {"events": "not a number: 'n/a'"}},
           {"source": "u", "ref": "salesforce:001A", "at": "2026-05-01T00:00:00Z", "active_users": 4.0, "events": 40.0}]
    for rec in old:
        conn.execute("INSERT INTO records VALUES ('usage', 'rows', ?, ?, ?, 0, '2026-05-12T00:00:00Z')",
                     (f"u|{rec['ref']}|{rec['at']}", json.dumps(rec), rec["at"]))
    conn.execute("INSERT INTO cursors VALUES ('usage', 'u', '2026-05-11T00:00:00Z', '2026-05-12T00:00:00Z')")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == len(_MIGRATIONS)
        assert list(store.records("usage", "rows")) == []
        [(rid, series)] = list(store.records("usage", "series"))
        assert rid == "u|salesforce:001A"
        assert series["at"] == [_epoch("2026-05-01"), _epoch("2026-05-11")]
        assert series["values"] == {"active_users": [4.0, 3.0], "events": [40.0, None]}
        assert series["na"] == {"events": [None, "not a number: 'n/a'"]}
        assert store.cursor("usage", "u") == "2026-05-11T00:00:00Z"  # nothing is read again
