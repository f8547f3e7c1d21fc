"""Usage rows -> metric values: M raw events for N accounts, aggregated in the database by the
mappings' query, pulled, matched and measured (the usage metrics). Wall time and peak RSS, beside
the database's own time for the query.

    .venv/bin/python benchmarks/usage_bench.py [--events 10000000] [--accounts 100000] [--engine duckdb|postgres]
                                               [--all-metrics] [--keep copy.db]

The raw table is events(account_domain, ts, user_id, key_feature): one row per product event over
210 days. The query turns it into one row per account and 10-day period (active users, key
events, events): the aggregation runs in the database, not in Python. The store holds N
Salesforce Accounts with those domains (written straight into it), so every key matches.
Target (issue 14): 10M events for 100k accounts in 30 s and 1 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from connector.catalogue import catalogue  # noqa: E402
from connector.cli import tune_process  # noqa: E402
from connector.config.mappings import load_mappings  # noqa: E402
from connector.http import CallLog  # noqa: E402
from connector.identity import match  # noqa: E402
from connector.metrics import measure  # noqa: E402
from connector.pipeline import sources  # noqa: E402
from connector.sources.sync import pull_streams  # noqa: E402
from connector.store import Store  # noqa: E402
from connector.times import iso  # noqa: E402

QUERIES = {
    "duckdb": """
      SELECT account_domain, day, count(*) AS active_users, sum(keyed) AS key_events, sum(n) AS events
      FROM (SELECT account_domain,
                   CAST(DATE '2026-05-01' + CAST(floor((date_part('epoch', ts) - 1777593600) / 864000) * 10 + 10 AS INTEGER) AS DATE) AS day,
                   user_id, count(*) FILTER (WHERE key_feature) AS keyed, count(*) AS n
            FROM events
            WHERE ts > :since
            GROUP BY 1, 2, 3) AS per_user
      GROUP BY 1, 2
""",  # active users as a GROUP BY of (account, period, user) first: DuckDB 5.7 s against 7.4 s with count(DISTINCT user_id)
    "postgres": """
      SELECT account_domain, CAST(DATE '2026-05-01' + CAST(period * 10 + 10 AS INTEGER) AS DATE) AS day,
             active_users, key_events, events
      FROM (SELECT account_domain COLLATE "C" AS account_domain,
                   floor((date_part('epoch', ts) - 1777593600) / 864000) AS period,
                   count(DISTINCT user_id) AS active_users, count(*) FILTER (WHERE key_feature) AS key_events,
                   count(*) AS events
            FROM events
            WHERE ts > :since
            GROUP BY 1, 2) AS per_period
""",  # PostgreSQL the other way round: count(DISTINCT user_id) 15 to 16 s, the GROUP BY of (account, period, user)
}  # first 30 to 36 s (its 10M groups spill to disk at any work_mem up to 256 MB; EXPLAIN ANALYZE, PostgreSQL 15).
# The key grouped in the "C" collation: the sort compares bytes, not the cluster's C.UTF-8 (glibc strcoll): 20 s against 26 s
# the period from the moment's epoch seconds (1777593600: 2026-05-01 UTC), not from an interval (ts - TIMESTAMPTZ ...):
# the interval's arithmetic took DuckDB 3 s of its 9 s, PostgreSQL 9 s of its 28 s


def entry(engine: str) -> str:
    """The usage source's mappings entry, with the engine's query."""
    return f"""
sources:
  product_usage:
    type: sql
    url_env: BENCH_USAGE_URL
    query: |{QUERIES[engine]}
    key: {{column: account_domain, kind: domain}}
    timestamp: day
    columns: {{active_users: number, key_events: number, events: number}}
"""


# an account's n-th event ({nth}): by one of its 50 users in turn, a key feature one time in 5
FILL = """
    SELECT 'acct' || (i % {accounts}) || '.example.com' AS account_domain,
           TIMESTAMPTZ '2026-05-01 00:00:00+00' + (i * 7919 % 18144000) * INTERVAL '1 second' AS ts,
           {nth} % 50 AS user_id,
           ({nth} % 5 = 0) AS key_feature
    FROM {series}
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--engine", choices=("duckdb", "postgres"), default="duckdb")
    parser.add_argument("--all-metrics", action="store_true",
                        help="then measure every metric of the shipped mappings too (the store's cost, issue 15)")
    parser.add_argument("--keep", help="copy the store here afterwards (to profile a step on its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mappings"
        shutil.copytree(ROOT / "mappings", root)
        (root / "sources" / "usage.yaml").write_text(entry(args.engine))
        mappings = load_mappings(root)
        clock = time.perf_counter()
        if args.engine == "duckdb":
            path = Path(tmp) / "usage.duckdb"
            fill = "CREATE TABLE events AS " + FILL.format(accounts=args.accounts, series=f"range({args.events}) t(i)",
                                                            nth=f"(i // {args.accounts})")
            subprocess.run([sys.executable, "-c", f"import duckdb; c = duckdb.connect({str(path)!r}); c.execute('SET enable_progress_bar = false'); c.execute({fill!r})"],
                           check=True)  # in a child: the events' own memory is not the pull's
            return_code = _run(args, mappings, tmp, f"duckdb:///{path}?access_mode=READ_ONLY", clock)
        else:
            from postgres import cluster

            with cluster() as url:
                import sqlalchemy as sa

                engine = sa.create_engine(url)
                with engine.begin() as conn:
                    conn.execute(sa.text("CREATE TABLE events AS " + FILL.format(
                        accounts=args.accounts, series=f"generate_series(0::bigint, {args.events - 1}) t(i)",
                        nth=f"(i / {args.accounts})")))
                    conn.execute(sa.text("ANALYZE events"))
                engine.dispose()
                return_code = _run(args, mappings, tmp, url, clock)
    return return_code


def _run(args: argparse.Namespace, mappings, tmp: str, url: str, clock: float) -> int:  # type: ignore[no-untyped-def]
    print(f"{args.events:,} events for {args.accounts:,} accounts in {args.engine} made in {time.perf_counter() - clock:.1f} s")
    now = datetime(2026, 11, 28, tzinfo=UTC)
    env = {**os.environ, "BENCH_USAGE_URL": url}
    known = catalogue()
    usage = [m for m, d in mappings.metrics.items() if d.catalogue and known[d.catalogue].system == "usage"]
    with Store(Path(tmp) / "bench.db") as store:
        accounts = [(f"001B{i:014d}", {"Id": f"001B{i:014d}", "Name": f"Acct {i}", "Website": f"https://acct{i}.example.com",
                                        "IsDeleted": False}, None, False) for i in range(args.accounts)]
        store.put_records("salesforce", "Account", accounts)
        del accounts  # the bench's own: not the pull's memory
        match(store, mappings)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        clocks = {}
        start = time.perf_counter()
        [source], _skipped = sources(env, CallLog(), only=["usage"], mappings=mappings)
        problems = source.check(mappings)
        assert not problems, problems
        pull_streams(source, store, mappings, iso(now))
        clocks["query, check, store"] = time.perf_counter() - start
        step = time.perf_counter()
        match(store, mappings)
        clocks["match"] = time.perf_counter() - step
        step = time.perf_counter()
        measure(store, mappings, now, names=usage)
        clocks[f"measure ({len(usage)} usage metrics)"] = time.perf_counter() - step
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows = source.rows_returned["product_usage"]
        measured = store.conn.execute("SELECT count(*) FROM metric_values WHERE name = 'key_events' AND num IS NOT NULL").fetchone()[0]
        if args.all_metrics:
            step = time.perf_counter()
            measure(store, mappings, now)
            everything = time.perf_counter() - step
        if args.keep:
            store.conn.execute(f"VACUUM INTO '{args.keep}'")
    floor = _database_alone(url, QUERIES[args.engine])
    print(f"  the database alone (the query run, every row fetched, nothing kept): {floor:.1f} s")
    steps = ", ".join(f"{name} {value:.1f} s" for name, value in clocks.items())
    print(f"  usage rows -> metric values: {seconds:.1f} s ({steps}); the query returned {rows:,} rows "
          f"(account x 10-day period); {measured:,} accounts with usage metric values; "
          f"peak RSS {peak:,.0f} MB (before the pull {before / 1024:,.0f} MB)")
    if args.all_metrics:
        print(f"  measuring every metric of the shipped mappings ({len(mappings.stored_names())} names, "
              f"{args.accounts:,} accounts, first write): {everything:.1f} s")
    return 0


def _database_alone(url: str, query: str) -> float:
    """The query's own cost: run and fetched through the driver as the pull does (arrays from DuckDB, streamed from
    PostgreSQL), with nothing done to the rows."""
    import sqlalchemy as sa

    from connector.sources.usage.client import _arrays, _embedded, executed

    engine = sa.create_engine(url)
    if url.startswith("duckdb"):  # as the pull runs it: quiet, and within its memory limit
        sa.event.listen(engine, "connect", lambda dbapi, _record: _embedded(dbapi, sa.engine.make_url(url).query))
    start = time.perf_counter()
    with engine.connect() as conn:
        with executed(conn, query, datetime(1970, 1, 1, tzinfo=UTC)) as (names, result, fetch):
            if _arrays(conn, result, names) is None:  # DuckDB: as arrays, as the pull reads it
                while fetch(5000):
                    pass
    engine.dispose()
    return time.perf_counter() - start


if __name__ == "__main__":
    tune_process()  # as the healthsync command does
    sys.exit(main())
