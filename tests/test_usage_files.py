"""A file drop read with DuckDB: CSV and Parquet files in a folder, each taken once by the hash of
its content (dropped twice under another name: read once), their rows matched to the sandbox's
accounts; end to end from a Parquet drop to scores written back, a new file of 1 % new rows read
alone; timestamps without a zone refused unless the entry says they are UTC."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import duckdb
import numpy as np
import pytest
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.pipeline import pull, run
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox
from sandbox.usage import usage_rows

NOW = datetime.now(UTC).replace(microsecond=0)
ENTRY = """
sources:
  usage_files:
    type: files
    path: drop/
    key: {column: account_id, kind: salesforce}
    timestamp: day
    columns: {active_users: number, key_events: number, events: number}
"""


def _mappings(tmp_path, entry: str = ENTRY):
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    (root / "sources" / "usage.yaml").write_text(entry)
    (root / "drop").mkdir()
    return load_mappings(root)


def _csv(path, rows: list[tuple]) -> None:
    path.write_text("account_id,day,active_users,key_events,events\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_csv_and_parquet_files_are_read_once_each_by_their_content(tmp_path):
    dataset = build_dataset(accounts=40, seed=5, now=NOW)
    ids = [a["Id"] for a in dataset.sf_accounts.values() if not a["IsDeleted"]][:10]
    mappings = _mappings(tmp_path)
    drop = mappings.root / "drop"
    day = (NOW - timedelta(days=3)).date().isoformat()
    _csv(drop / "2026-11-a.csv", [(a, day, 5, 10, 50) for a in ids[:6]])
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM (VALUES {', '.join(f'({a!r}, DATE {day!r}, 7, 3, 30)' for a in ids[6:])}) "
                f"AS t(account_id, day, active_users, key_events, events)) TO '{drop / 'b.parquet'}' (FORMAT parquet)")
    con.close()
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = sb.unpaced_env()
        first = pull(store, mappings, env, NOW)
        assert first.systems["usage"].records == {"keys": 10, "rows": 10, "files": 2}
        linked = store.linked("usage", "keys")
        assert {f"salesforce:{a}" for a in ids} <= set(linked)  # every key matched its Salesforce account
        values = store.load_column("key_events", store.account_ids(), False, with_since=False)
        assert sorted(v for v in values.values.tolist() if v == v) == [3.0] * 4 + [10.0] * 6

        shutil.copy(drop / "2026-11-a.csv", drop / "again.csv")  # the same content under another name
        again = pull(store, mappings, env, NOW + timedelta(hours=1))
        assert again.systems["usage"].records == {}
        _csv(drop / "2026-11-a.csv", [(ids[0], day, 9, 99, 999)])  # changed: read again
        changed = pull(store, mappings, env, NOW + timedelta(hours=2))
        assert changed.systems["usage"].records == {"keys": 1, "rows": 1, "files": 1}
        assert store.conn.execute("SELECT count(*) FROM records WHERE system = 'usage' AND object = 'files'").fetchone()[0] == 3


def _parquet(path, table: dict) -> int:
    """The columns of a usage table as one Parquet file (day a DATE), written by DuckDB through a CSV."""
    rows = list(zip(*table.values(), strict=True))
    _csv(path.with_suffix(".tmp"), rows)
    con = duckdb.connect()
    con.execute(f"COPY (SELECT account_id, CAST(day AS DATE) AS day, active_users, key_events, events "
                f"FROM read_csv('{path.with_suffix('.tmp')}', header = true, all_varchar = true)) "
                f"TO '{path}' (FORMAT parquet)")
    con.close()
    path.with_suffix(".tmp").unlink()
    return len(rows)


def test_usage_rows_in_a_parquet_drop_are_pulled_scored_and_written_back(tmp_path):
    """The PostgreSQL end-to-end case (tests/test_usage_postgres.py) from a file drop: the sandbox's
    usage rows in a Parquet file -> a run with the sandbox's CRMs over HTTP -> usage metrics ->
    scores that use them -> written back; a new file of 1 % new rows: only its rows are read; the
    same file dropped again under another name: nothing."""
    dataset = build_dataset(accounts=500, seed=21, now=NOW)
    table = usage_rows(dataset)["usage_by_account"]
    mappings = _mappings(tmp_path)
    drop = mappings.root / "drop"
    loaded = _parquet(drop / "usage-backfill.parquet", table)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = sb.unpaced_env()
        first = run(store, mappings, env, NOW)
        assert first.pulled.systems["usage"].records == {"keys": len(set(table["account_id"])), "rows": loaded, "files": 1}
        ids, linked = store.account_ids(), store.linked("salesforce", "Account")
        seats = store.load_column("seat_utilization", ids, False, with_since=False)
        rid = next(r for r in table["account_id"] if not dataset.sf_accounts[r]["IsDeleted"]
                   and dataset.sf_accounts[r]["Seats_Purchased__c"])
        since = (NOW - timedelta(days=30)).date()
        peak = max(a for r, d, a in zip(table["account_id"], table["day"], table["active_users"], strict=True)
                   if r == rid and since < date.fromisoformat(d) <= NOW.date())
        i = int(np.flatnonzero(ids == linked[rid])[0])
        assert seats.values[i] == round(100.0 * peak / dataset.sf_accounts[rid]["Seats_Purchased__c"], 1)
        assert (~np.isnan(seats.values)).sum() > 300
        scores = {r["account_id"]: r for r in store.current_scores("health")}
        assert scores[linked[rid]]["value"] is not None
        assert sb.dataset.sf_accounts[rid]["Health_Score__c"] == scores[linked[rid]]["value"]  # written back

        late = (NOW.date() + timedelta(days=1)).isoformat()
        new = sorted(set(table["account_id"]))[: max(1, loaded // 100)]
        _parquet(drop / "usage-late.parquet", {"account_id": new, "day": [late] * len(new), "active_users": [7] * len(new),
                                              "key_events": [70] * len(new), "events": [700] * len(new)})
        second = pull(store, mappings, env, NOW + timedelta(days=1, hours=1))
        client = next(s for s in second.sources if s.system == "usage")
        assert client.rows_returned == {"usage_files": len(new)}  # the new file's rows, not the backfill's again
        assert second.systems["usage"].records == {"keys": len(new), "rows": len(new), "files": 1}
        shutil.copy(drop / "usage-late.parquet", drop / "usage-late-again.parquet")
        third = pull(store, mappings, env, NOW + timedelta(days=1, hours=2))
        assert next(s for s in third.sources if s.system == "usage").rows_returned == {"usage_files": 0}
        assert third.systems["usage"].records == {}


def test_timestamps_without_a_zone_are_refused_unless_said_to_be_utc(tmp_path):
    dataset = build_dataset(accounts=20, seed=2, now=NOW)
    some = next(a["Id"] for a in dataset.sf_accounts.values() if not a["IsDeleted"])
    for zone, kept in (("", 1), ("    timestamp_zone: UTC\n", 2)):
        root = tmp_path / f"z{len(zone)}"
        mappings = _mappings(root, ENTRY + zone)
        _csv(mappings.root / "drop" / "a.csv", [(some, "2026-11-01T10:00:00", 1, 1, 1), (some, "2026-11-02T10:00:00Z", 1, 1, 1)])
        with Sandbox(dataset) as sb, Store(root / "s.db") as store:
            summary = pull(store, mappings, sb.unpaced_env(), NOW, only=["usage"])
        assert summary.systems["usage"].records["rows"] == kept
        notes = summary.systems["usage"].notes
        assert bool(notes) == (kept == 1)
        if notes:
            assert "'2026-11-01T10:00:00' has no time zone (say `timestamp_zone: UTC` if it is UTC)" in notes[0]


def test_validate_live_runs_each_usage_query_with_no_rows(tmp_path):
    import os
    import subprocess
    import sys

    def validate(mappings_root, env):
        return subprocess.run([sys.executable, "-m", "connector", "--mappings", str(mappings_root), "validate", "--live"],
                              capture_output=True, text=True, timeout=120, env={**os.environ, **env})

    with Sandbox(build_dataset(accounts=30, seed=4, now=NOW)) as sb:
        env = sb.unpaced_env()
        done = validate(REPO / "mappings", env)
        assert done.returncode == 0, done.stderr
        assert "usage: product_usage, product_usage_by_domain: every declared column is returned" in done.stdout
        root = tmp_path / "mappings"
        shutil.copytree(REPO / "mappings", root)
        usage = root / "sources" / "usage.yaml"
        usage.write_text(usage.read_text().replace("SELECT domain, day, active_users, key_events, events",
                                                   "SELECT domain, day, active_users, events"))
        broken = validate(root, env)
        assert broken.returncode == 2
        assert "the sources do not match the mappings" in broken.stderr
        assert "sources/usage.yaml:" in broken.stderr and "sources.product_usage_by_domain.columns.key_events" in broken.stderr
        assert "returns no column 'key_events'" in broken.stderr


def test_preview_shows_the_first_rows_matched_and_measured_and_writes_nothing(tmp_path):
    import json
    import os
    import subprocess
    import sys

    db = tmp_path / "s.db"
    with Sandbox(build_dataset(accounts=120, seed=8, now=NOW)) as sb:
        env = sb.unpaced_env()
        with Store(db) as store:
            pull(store, load_mappings(REPO / "mappings"), env, NOW, only=["salesforce", "hubspot"])
        before = db.read_bytes()

        def preview(*args):
            return subprocess.run([sys.executable, "-m", "connector", "--db", str(db), "preview", *args],
                                  capture_output=True, text=True, timeout=120, env={**os.environ, **env})

        done = preview("product_usage", "--rows", "3", "--json")
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert len(shown["rows"]) == 3 and shown["metrics"] == ["seat_utilization", "usage_change", "key_events",
                                                                 "days_since_active"]
        first = shown["rows"][0]
        assert first["key"].startswith("salesforce:001") and first["account"]
        assert set(first["metrics"]) == set(shown["metrics"]) and isinstance(first["active_users"], float)
        assert db.read_bytes() == before  # a preview reads into a private copy
        table = preview("product_usage_by_domain", "--rows", "2")
        assert table.returncode == 0 and "product_usage_by_domain: the first 2 row(s)" in table.stdout
        unknown = preview("nope")
        assert unknown.returncode == 2 and "no source named 'nope'" in unknown.stderr and "product_usage" in unknown.stderr


def test_only_since_is_a_bind_in_a_query_colons_in_literals_and_casts_stay(tmp_path):
    from sqlalchemy import create_engine

    from connector.sources.usage.client import _sql

    engine = create_engine(f"duckdb:///{tmp_path / 'q.duckdb'}")
    with engine.connect() as conn:
        got = conn.execute(_sql("SELECT '12:30:00' AS t, '2026-01-01'::date AS d, ':other' AS o, "
                                "TIMESTAMPTZ '2026-01-02 00:00:00+00' > :since AS later"),
                           {"since": datetime(2026, 1, 1, tzinfo=UTC)}).one()
    engine.dispose()
    assert got == ("12:30:00", datetime(2026, 1, 1).date(), ":other", True)


def test_an_embedded_duckdb_is_held_to_its_memory_limit_and_draws_no_progress_bar(tmp_path):
    """DuckDB runs inside healthsync: 256 MB (it spills past that) unless the URL says otherwise."""
    from connector.sources.usage.client import _connect

    path = tmp_path / "u.duckdb"
    duckdb.connect(str(path)).close()
    mappings = _mappings(tmp_path, ENTRY.replace("type: files\n    path: drop/", "type: sql\n    url_env: U_URL\n"
                                                 "    query: SELECT * FROM t WHERE day > :since"))
    entry = mappings.sources["usage_files"]
    for url, limit in ((f"duckdb:///{path}", "244.1 MiB"), (f"duckdb:///{path}?memory_limit=1GB", "953.6 MiB")):
        with _connect({"U_URL": url}, mappings, entry) as conn:
            got = conn.exec_driver_sql("SELECT current_setting('memory_limit'), current_setting('enable_progress_bar'), "
                                       "current_setting('temp_directory')").one()
        assert got[0] == limit and got[1] is False and got[2].endswith("healthsync-duckdb")


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_the_usage_benchmark_runs_and_measures_every_account(engine):
    """benchmarks/usage_bench.py (docs/usage.md) on a few events, with each engine's query: it keeps working."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "usage_bench.py"), "--events", "6000",
                           "--accounts", "120", "--engine", engine], capture_output=True, text=True, timeout=300, check=True)
    assert "the database alone" in done.stdout
    assert "120 accounts with usage metric values" in done.stdout, done.stdout
    returned = int(re.search(r"the query returned ([\d,]+) rows", done.stdout).group(1).replace(",", ""))
    assert 120 < returned <= 120 * 21  # one row per account and 10-day period with events
