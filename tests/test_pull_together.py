"""The systems are pulled at once, each under its own limits, and that changes nothing in what is
stored: a concurrent pull through 429s, 5xx and dropped connections leaves exactly what a clean
pull of one system after another leaves, records and cursors; SIGTERM in the middle of one exits
6, and every cursor it left covers only committed data (resuming gives the clean store)."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import time
from contextlib import closing

import pytest
from conftest import NOW, REPO
from test_e2e_operate import Lines, healthsync

from connector.config.mappings import load_mappings
from connector.pipeline import pull
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Faults, Sandbox

MAPPINGS = load_mappings(REPO / "mappings")


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(accounts=500, seed=17, now=NOW)


def _content(db) -> tuple[list[tuple], list[tuple]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        records = conn.execute("SELECT system, object, id, data, modified, deleted FROM records "
                               "ORDER BY system, object, id").fetchall()
        cursors = conn.execute("SELECT system, stream, value FROM cursors ORDER BY system, stream").fetchall()
    return records, cursors


def _clean(dataset, db) -> None:
    with Sandbox(dataset) as sb, Store(db) as store:
        summary = pull(store, MAPPINGS, {**sb.unpaced_env(), "HEALTHSYNC_PULL_CONCURRENCY": "1"}, now=NOW)
        assert not summary.interrupted and not summary.failed


def test_a_faulted_concurrent_pull_stores_what_a_clean_sequential_one_does(dataset, tmp_path, caplog):
    _clean(dataset, tmp_path / "clean.db")
    faults = Faults(rate_429=0.2, rate_5xx=0.15, rate_drop=0.05, seed=5)
    with Sandbox(dataset, faults=faults) as sb, Store(tmp_path / "faulted.db") as store, \
            caplog.at_level(logging.INFO, logger="healthsync"):
        env = {**sb.unpaced_env(), "HEALTHSYNC_RETRY_ATTEMPTS": "12", "HEALTHSYNC_RETRY_BASE": "0.01"}
        summary = pull(store, MAPPINGS, env, now=NOW)
        assert not summary.interrupted and not summary.failed
        faulted = {family for family, _kind in sb.faulted}
    assert {"salesforce", "hubspot", "stripe", "zendesk"} <= faulted  # every API had its faults
    assert any("pulling salesforce, hubspot, stripe, zendesk, usage at once" in r.getMessage() for r in caplog.records)
    clean, concurrent = _content(tmp_path / "clean.db"), _content(tmp_path / "faulted.db")
    assert len(clean[0]) > 3000 and len(clean[1]) >= 6
    assert concurrent[1] == clean[1]  # the cursors
    assert concurrent[0] == clean[0]  # every record, byte for byte


def test_sigterm_during_a_concurrent_pull_exits_6_and_every_cursor_covers_only_what_is_stored(dataset, tmp_path):
    _clean(dataset, tmp_path / "clean.db")
    db = tmp_path / "term.db"
    with Sandbox(dataset) as sb:
        env = {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "20"}  # Zendesk's export pace: 3 s a page
        proc = healthsync(db, env, "pull", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        errors = Lines(proc.stderr)
        try:
            deadline = time.monotonic() + 120
            while True:  # until some systems have committed pages and Zendesk is still reading
                assert time.monotonic() < deadline, "the pull never got under way"
                if db.exists():
                    try:
                        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                            systems = {s for (s,) in conn.execute("SELECT DISTINCT system FROM records")}
                    except sqlite3.OperationalError:  # not created yet
                        systems = set()
                    if len(systems) >= 2:
                        break
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            stderr = "".join(errors.rest(120))
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 6, stderr
        stopped, _cursors = _content(db)
        assert stopped and stopped != _content(tmp_path / "clean.db")[0]  # it stopped part way
        with Store(db) as store:  # resume from the cursors it left (not a full pull)
            summary = pull(store, MAPPINGS, {**sb.unpaced_env(), "HEALTHSYNC_PULL_CONCURRENCY": "1"}, now=NOW)
            assert not summary.interrupted
    resumed, clean = _content(db), _content(tmp_path / "clean.db")
    assert resumed[0] == clean[0]  # nothing a cursor claimed was missing


def test_a_stop_ends_a_source_that_makes_no_http_request_after_its_page(dataset, tmp_path, monkeypatch):
    """The usage query asks no HTTP client before its pages: the pull itself checks the stop flag
    after each page, so the SQL source stops too, its cursor left where its data is."""
    from connector.shutdown import Shutdown
    from connector.sources.usage.client import UsageSource

    stop, handed = Shutdown(), []
    real = UsageSource.read

    def read(self, stream, mappings, at):
        for page in real(self, stream, mappings, at):
            handed.append(page)
            yield page
            stop.request("SIGTERM")  # as the first page is handed over

    monkeypatch.setattr(UsageSource, "read", read)
    with Sandbox(dataset) as sb, Store(tmp_path / "stop.db") as store:
        summary = pull(store, MAPPINGS, sb.unpaced_env(), now=NOW, only=["usage", "stripe"], shutdown=stop)
        assert summary.interrupted and "SIGTERM" in summary.interrupted
        assert len(handed) <= 2  # the page being handed when the stop came, at most one more
        assert store.cursor("usage", "product_usage") is None  # its cursor moves only with its last page
        monkeypatch.setattr(UsageSource, "read", real)
        again = pull(store, MAPPINGS, sb.unpaced_env(), now=NOW, only=["usage"])
        assert not again.interrupted and store.cursor("usage", "product_usage") is not None


def test_the_paced_pull_benchmark_runs_and_prints_each_floor():
    """benchmarks/pull_bench.py --paced (docs/sources.md) on a small sandbox: it keeps working."""
    import os
    import sys

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pull_bench.py"), "--paced", "60"],
                          capture_output=True, text=True, timeout=300, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "full pull (at once, paced)" in done.stdout and "incremental pull (at once, paced)" in done.stdout
    assert "slowest floor" in done.stdout and "floor 0.0 s" in done.stdout, done.stdout
