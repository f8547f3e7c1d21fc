"""Product usage from a real PostgreSQL (a throwaway cluster, tests/postgres.py): rows in Postgres
-> pull with the sandbox's CRMs over HTTP -> the usage metrics -> scores that use them -> written
back to the CRMs; an incremental run after 1 % new rows reads only those; bad rows are counted
and named, a broken query or a missing column is exit 2 at its mappings line."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import REPO
from postgres import cluster

from connector.config.mappings import load_mappings
from connector.errors import ConfigError
from connector.http import CallLog
from connector.pipeline import pull, run, sources
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox
from sandbox.usage import usage_rows

NOW = datetime.now(UTC).replace(microsecond=0)
ENTRY = """
sources:
  product_usage:
    type: sql
    url_env: USAGE_PG_URL
    query: |
      SELECT account_id, day, active_users, key_events, events
      FROM usage_daily WHERE day > :since
    key: {column: account_id, kind: salesforce}
    timestamp: day
    columns: {active_users: number, key_events: number, events: number}
"""


@pytest.fixture(scope="module")
def pg():
    with cluster() as url:
        yield url


def _mappings(tmp_path, entry: str = ENTRY):
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    (root / "sources" / "usage.yaml").write_text(entry)
    return load_mappings(root)


def _load(url: str, table: dict, extra: str = "") -> int:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS usage_daily"))
        conn.execute(sa.text(f"CREATE TABLE usage_daily (account_id text, day date, active_users integer, "
                             f"key_events integer, events {extra or 'integer'})"))
        rows = [dict(zip(table, values, strict=True)) for values in zip(*table.values(), strict=True)]
        conn.execute(sa.text("INSERT INTO usage_daily VALUES (:account_id, :day, :active_users, :key_events, :events)"),
                     rows)
    engine.dispose()
    return len(rows)


def test_usage_rows_in_postgres_are_pulled_scored_and_written_back(pg, tmp_path):
    dataset = build_dataset(accounts=500, seed=21, now=NOW)
    table = usage_rows(dataset)["usage_by_account"]
    loaded = _load(pg, table)
    mappings = _mappings(tmp_path)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = {**sb.unpaced_env(), "USAGE_PG_URL": pg}
        first = run(store, mappings, env, NOW)
        usage = first.pulled.systems["usage"]
        assert usage.records["rows"] == loaded and usage.notes == []
        ids = store.account_ids()
        seats = store.load_column("seat_utilization", ids, False, with_since=False)
        linked = store.linked("salesforce", "Account")
        # one account by hand: the most active users of the rows in the last 30 days / its seats
        rid = next(r for r in table["account_id"] if not dataset.sf_accounts[r]["IsDeleted"]
                   and dataset.sf_accounts[r]["Seats_Purchased__c"])
        since = (NOW - timedelta(days=30)).date()
        peak = max(a for r, d, a in zip(table["account_id"], table["day"], table["active_users"], strict=True)
                   if r == rid and date.fromisoformat(d) > since and date.fromisoformat(d) <= NOW.date())
        i = int(np.flatnonzero(ids == linked[rid])[0])
        assert seats.values[i] == round(100.0 * peak / dataset.sf_accounts[rid]["Seats_Purchased__c"], 1)
        assert (~np.isnan(seats.values)).sum() > 300
        # the scores use it: the usage sub-score moves with product usage, and reaches the CRM
        scores = {r["account_id"]: r for r in store.current_scores("health")}
        assert scores[linked[rid]]["value"] is not None
        assert sb.dataset.sf_accounts[rid]["Health_Score__c"] == scores[linked[rid]]["value"]
        explained = store.conn.execute(
            "SELECT count(*) FROM metric_values WHERE name = 'usage_change' AND num IS NOT NULL").fetchone()[0]
        assert explained > 300

        # 1 % new rows, a day later: an incremental run reads only those
        late = (NOW.date() + timedelta(days=1)).isoformat()
        new = sorted(set(table["account_id"]))[: max(1, loaded // 100)]
        engine = sa.create_engine(pg)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO usage_daily VALUES (:a, :d, 7, 70, 700)"), [{"a": a, "d": late} for a in new])
        engine.dispose()
        second = pull(store, mappings, env, NOW + timedelta(days=1, hours=1))
        client = next(s for s in second.sources if s.system == "usage")
        assert client.rows_returned == {"product_usage": len(new)}
        assert second.systems["usage"].records["rows"] == len(new)


def test_bad_rows_are_counted_and_named_and_good_ones_kept(pg, tmp_path):
    dataset = build_dataset(accounts=60, seed=3, now=NOW)
    table = usage_rows(dataset)["usage_by_account"]
    good = _load(pg, table, extra="text")  # events as text: a broken feed writes 'n/a' in it
    some = table["account_id"][0]
    engine = sa.create_engine(pg)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO usage_daily VALUES (:a, :d, 3, 4, :e)"), [
            {"a": some, "d": "2026-01-05", "e": "n/a"},   # not a number: N/A, the row kept
            {"a": None, "d": "2026-01-05", "e": "5"},     # no key: left out
            {"a": some, "d": None, "e": "5"},             # no timestamp: left out
            {"a": some, "d": table["day"][0], "e": "9"},  # the same key and day again: left out
        ])
    engine.dispose()
    # `day > :since` is never true of a NULL day: this query returns such rows so they can be refused
    mappings = _mappings(tmp_path, ENTRY.replace("WHERE day > :since", "WHERE day > :since OR day IS NULL"))
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        summary = pull(store, mappings, {**sb.unpaced_env(), "USAGE_PG_URL": pg}, NOW, only=["usage"])
        notes = summary.systems["usage"].notes
        assert summary.systems["usage"].records["rows"] == good + 1
        assert any("events not a number: N/A" in n and "'n/a'" in n for n in notes)
        assert any("no account_id (the key): row left out" in n for n in notes)
        assert any("day is empty: row left out" in n for n in notes)
        assert any("a second row for the same account_id and day" in n and some in n for n in notes)


def test_a_broken_query_or_a_missing_column_is_exit_2_at_its_line(pg, tmp_path):
    _load(pg, {"account_id": ["001"], "day": ["2026-01-01"], "active_users": [1], "key_events": [1], "events": [1]})
    with Sandbox(build_dataset(accounts=20, seed=1, now=NOW)) as sb, Store(tmp_path / "s.db") as store:
        secret = pg.replace("postgres@", "postgres:s3cret-pass-77@")  # trust auth takes any password
        env = {**sb.unpaced_env(), "USAGE_PG_URL": secret}
        wrong = _mappings(tmp_path / "a", ENTRY.replace("FROM usage_daily", "FROM usage_dialy"))
        with pytest.raises(ConfigError) as err:
            pull(store, wrong, env, NOW, only=["usage"])
        text = err.value.problems[0].render()
        assert "usage.yaml:" in text and "sources.product_usage.query" in text and "usage_dialy" in text
        assert err.value.exit_code == 2
        missing = _mappings(tmp_path / "b", ENTRY.replace("active_users, key_events, events\n", "active_users, events\n"))
        with pytest.raises(ConfigError) as err:
            pull(store, missing, env, NOW, only=["usage"])
        text = err.value.problems[0].render()
        assert "sources.product_usage.columns.key_events" in text and "returns no column 'key_events'" in text
        assert "it returns: account_id, day, active_users, events" in text
        assert "s3cret-pass-77" not in text and secret not in text  # the URL is a secret
        failing = _mappings(tmp_path / "c", ENTRY.replace("key_events, events\n", "key_events / (events - events) AS key_events, events\n"))
        assert not next(iter(sources(env, CallLog(), only=["usage"], mappings=failing)[0])).check(failing)  # LIMIT 0: no row
        with pytest.raises(ConfigError) as err:  # fails only as its rows are fetched
            pull(store, failing, env, NOW, only=["usage"])
        text = err.value.problems[0].render()
        assert "sources.product_usage.query" in text and "division by zero" in text and err.value.exit_code == 2
        assert store.cursor("usage", "product_usage") is None  # nothing stored, nothing moved


STREAMED = """
sources:
  product_usage:
    type: sql
    url_env: USAGE_PG_URL
    query: |
      SELECT 'acct-' || i AS account_id, DATE '2026-01-01' + i % 300 AS day, i % 7 AS active_users,
             i % 5 AS key_events, i AS events
      FROM generate_series(1, {n}) AS i
      WHERE DATE '2026-01-01' + i % 300 > :since
    key: {{column: account_id, kind: salesforce}}
    timestamp: day
    columns: {{active_users: number, key_events: number, events: number}}
"""


def test_rows_come_as_the_server_makes_them_and_a_preview_stops_the_query(pg, tmp_path):
    from connector.pipeline import preview_source

    def running() -> int:  # this query still at work in the server (as a stream or as a cursor)
        engine = sa.create_engine(pg)
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                                     "AND state <> 'idle' AND query LIKE '%generate_series(1, %'")).scalar_one()
        engine.dispose()
        return int(n)

    with Sandbox(build_dataset(accounts=20, seed=4, now=NOW)) as sb:
        env = {**sb.unpaced_env(), "USAGE_PG_URL": pg}
        whole = _mappings(tmp_path / "a", STREAMED.format(n=12_345))  # more than two pages of 5,000
        with Store(tmp_path / "a.db") as store:
            summary = pull(store, whole, env, NOW, only=["usage"])
            assert summary.systems["usage"].records["rows"] == 12_345 and summary.systems["usage"].notes == []
            stored = store.conn.execute("SELECT count(*) FROM records WHERE system = 'usage' AND object = 'series'").fetchone()[0]
            assert stored == 12_345  # one key a row: every row kept
        endless = _mappings(tmp_path / "b", STREAMED.format(n=50_000_000))  # minutes of rows, were they all read
        with Store(tmp_path / "b.db") as store:
            shown = preview_source(store, endless, env, "product_usage", rows=7, now=NOW)
            assert len(shown.rows) == 7
        assert running() == 0  # the rest was cancelled, not left running in the server
