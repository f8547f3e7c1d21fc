"""One run at a time per store: the lock, its heartbeat, and taking over a crashed run's lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import REPO

from connector.cli import cli
from connector.runlock import LockHeld, RunLock
from connector.store import Store


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_on_the_same_store_exits_at_once_with_its_own_code(tmp_path):
    db = tmp_path / "l.db"
    with Store(db) as store, RunLock(store) as lock:
        lock.attach(store.start_run("run"))
        result = CliRunner().invoke(cli, ["--db", str(db), "--mappings", str(REPO / "mappings"), "run"])
        assert result.exit_code == 5, result.output
        assert "another healthsync run holds" in result.output and f"pid {os.getpid()}" in result.output
        assert len(store.runs()) == 1  # the refused run recorded nothing and touched nothing
    with Store(db) as store:
        assert RunLock(store).holder() is None  # released on exit


def test_a_crashed_runs_lock_is_taken_over_and_its_run_marked_abandoned(tmp_path):
    with Store(tmp_path / "c.db") as store:
        crashed = store.start_run("run")
        store.conn.execute("INSERT INTO locks VALUES ('run', 'old', ?, ?, ?, '2026-11-23T00:00:00Z', ?)",
                           (RunLock(store).host, dead_pid(), crashed, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        with RunLock(store) as lock:  # same host, dead pid: free at once even with a fresh heartbeat
            assert lock.taken_over is not None and lock.taken_over.run_id == crashed
            assert store.run(crashed)["status"] == "abandoned"


def test_another_hosts_lock_holds_until_its_heartbeat_is_stale(tmp_path):
    with Store(tmp_path / "h.db") as store:
        fresh = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        store.conn.execute("INSERT INTO locks VALUES ('run', 'pod', 'other-pod', 1, NULL, ?, ?)", (fresh, fresh))
        with pytest.raises(LockHeld, match="pid 1 on other-pod"):
            RunLock(store, stale_seconds=600).acquire()
        store.conn.execute("UPDATE locks SET heartbeat_at = '2026-01-01T00:00:00Z'")
        with RunLock(store, stale_seconds=600) as lock:
            assert lock.taken_over is not None and lock.taken_over.host == "other-pod"


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path):
    with Store(tmp_path / "b.db") as store, RunLock(store, heartbeat_seconds=0.05) as lock:
        store.conn.execute("UPDATE locks SET heartbeat_at = '2026-01-01T00:00:00Z'")
        deadline = time.monotonic() + 5
        while lock.holder().heartbeat_at.startswith("2026-01-01") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not lock.holder().heartbeat_at.startswith("2026-01-01")
        with pytest.raises(LockHeld):
            RunLock(store, stale_seconds=60).acquire()
