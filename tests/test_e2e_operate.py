"""Operating healthsync unattended, against the sandbox over real HTTP: SIGTERM, the schedule, JSON logs."""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest
from click.testing import CliRunner
from conftest import NOW, REPO
from test_e2e_crash import record_patches
from test_e2e_push import MAPPINGS, assert_crm_matches_scores, env_of

from connector import pipeline
from connector.cli import cli
from connector.pipeline import run
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Faults, Sandbox

SECRET_SETTINGS = ("SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "HUBSPOT_ACCESS_TOKEN", "STRIPE_API_KEY",
                   "ZENDESK_API_TOKEN")


@pytest.fixture
def dataset():
    # NOW, not the wall clock: the same data on every day. The commands run here read the wall
    # clock themselves (a CLI takes no `now`), so the in-process runs below take it too.
    return build_dataset(accounts=1000, seed=12, now=NOW)


def wait_until(condition, seconds: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` once `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {seconds:g} s: {what}"
        time.sleep(0.01)


class Lines:
    """A child's pipe read line by line on a thread, so each wait for a line has a deadline."""

    def __init__(self, pipe) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self._queue.put(line)
        self._queue.put(None)

    def next(self, seconds: float) -> str:
        try:
            line = self._queue.get(timeout=seconds)
        except queue.Empty:
            raise AssertionError(f"no line in {seconds:g} s") from None
        assert line is not None, "the pipe closed before the line came"
        return line

    def until(self, text: str, seconds: float) -> str:
        """The first line holding `text`, within `seconds` in all."""
        deadline = time.monotonic() + seconds
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if text in line:
                return line

    def rest(self, seconds: float) -> list[str]:
        """Every line until the pipe closes (the child has exited)."""
        self._thread.join(seconds)
        assert not self._thread.is_alive(), f"the pipe is still open after {seconds:g} s"
        lines = []
        while (line := self._queue.get_nowait()) is not None:
            lines.append(line)
        return lines


def healthsync(db, env, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "connector", "--db", str(db), "--mappings", str(REPO / "mappings"),
                             *args], env={**os.environ, **env, "PYTHONPATH": str(REPO)}, **popen)


def test_sigterm_during_a_push_finishes_the_batch_in_flight_and_keeps_the_rest(dataset, tmp_path, monkeypatch):
    sent, holding, release = record_patches(monkeypatch, hold_at=2)
    db = tmp_path / "term.db"
    with Sandbox(dataset) as sb:
        proc = healthsync(db, env_of(sb), "run", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        errors = Lines(proc.stderr)
        try:
            assert holding.wait(180), "no second batch"
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:  # read, never written
                in_flight = conn.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
            assert in_flight == 200  # the second batch: marked sent before its request, not yet settled
            proc.send_signal(signal.SIGTERM)  # while the second batch's answer is on its way
            errors.until("SIGTERM received", 30)  # the run has taken the signal (it says so at once)
            release.set()  # the answer arrives after the signal
            stderr = "".join(errors.rest(60))
            proc.wait(30)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 6, stderr
        assert len(sent) == 2  # no batch was started after the signal
        with Store(db) as store:
            rows = [r for r in store.outbox() if r["system"] == "salesforce"]
            status = {r["record_id"]: r["status"] for r in rows}
            assert {status[i] for ids in sent for i in ids} == {"done"}  # the batch in flight was settled
            assert sum(s == "pending" for s in status.values()) == len(rows) - 400  # the rest kept, none lost
            assert store.outbox("sent") == []  # nothing left in doubt
            assert not [r for r in store.outbox() if r["system"] == "hubspot" and r["status"] != "pending"]
            last = store.last_run()
            assert (last["status"], last["exit_code"]) == ("interrupted", 6)
            assert "SIGTERM" in last["error"]
            assert not store.db.execute("select count(*) from locks").fetchone()[0]  # the lock was released

            sent.clear()
            result = run(store, MAPPINGS, env_of(sb))  # the next run carries on
            assert result.exit_code == 0
            assert {i for ids in sent for i in ids} == {rid for rid, s in status.items() if s == "pending"}
            assert assert_crm_matches_scores(store, sb) > 900


def test_a_failed_run_inside_the_schedule_does_not_stop_it(dataset, tmp_path, monkeypatch):
    real_run, calls = pipeline.run, []

    def flaky_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the first run hits a bug")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run", flaky_run)
    db = tmp_path / "schedule.db"
    with Sandbox(dataset) as sb:
        for key, value in env_of(sb).items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(cli, ["--db", str(db), "--mappings", str(REPO / "mappings"), "schedule",
                                          "--cron", "* * * * * *", "--run-now", "--max-runs", "2"])
        assert result.exit_code == 0, result.output
        assert "schedule ended: 2 run(s), 1 not ok" in result.output
        with Store(db) as store:
            first, second = sorted(store.runs(), key=lambda r: r["id"])
            assert (first["status"], first["exit_code"]) == ("failed", 1)
            assert "RuntimeError: the first run hits a bug" in first["error"]
            assert (second["status"], second["exit_code"]) == ("ok", 0)
            assert second["command"] == "schedule run"
            assert assert_crm_matches_scores(store, sb) > 900  # the second run did the work


def test_sigterm_while_the_schedule_waits_exits_at_once_and_cleanly(tmp_path):
    proc = healthsync(tmp_path / "idle.db", {}, "--log-format", "json", "schedule", "--cron", "0 0 1 1 *",
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        stderr = Lines(proc.stderr)
        first = json.loads(stderr.next(60))  # the loop is waiting for next New Year
        assert first["step"] == "schedule" and first["next_run"].endswith("-01-01T00:00:00+00:00")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        rest = stderr.rest(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    last = json.loads(rest[-1])
    assert last["msg"] == "schedule stopped: SIGTERM received" and last["runs"] == 0


def test_json_logs_carry_run_id_step_system_and_counts_and_no_secret_in_logs_store_or_report(dataset, tmp_path):
    db = tmp_path / "logs.db"
    faults = Faults(rate_429=0.1, rate_5xx=0.05, rate_drop=0.02, expire_session_after=5, seed=3)
    with Sandbox(dataset, faults=faults) as sb:
        env = {**env_of(sb), "HEALTHSYNC_LOG_LEVEL": "DEBUG"}
        proc = healthsync(db, env, "--log-format", "json", "run", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
        stdout, stderr = proc.communicate(timeout=300)
        secrets = [env[name] for name in SECRET_SETTINGS]
        page = tmp_path / "report.html"
        report = healthsync(db, env, "--log-format", "json", "report", "--out", str(page), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
        report_out, report_err = report.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert report.returncode == 0, report_err
    html = page.read_text()
    assert "Customer health" in html and html.count("<svg") > 10
    assert stdout == ""  # no tables among the JSON lines
    events = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    with Store(db) as store:
        run_id = store.last_run()["id"]
        planned = {r["system"] for r in store.outbox()}
    assert all(e["run_id"] == run_id for e in events)
    assert any(e["msg"].endswith("retry 1") for e in events)  # the faults were retried and logged
    steps = {(e.get("step"), e.get("system")) for e in events}
    for system in ("salesforce", "hubspot", "stripe", "zendesk"):
        assert ("pull", system) in steps
    assert {("match", None), ("measure", None), ("score", None)} <= steps
    assert {("plan", s) for s in planned} <= steps and {("push", s) for s in planned} <= steps
    pulled = next(e for e in events if e.get("step") == "pull" and e.get("system") == "salesforce")
    assert pulled["records"]["Account"] > 900 and pulled["requests"] > 0
    pushed = next(e for e in events if e.get("step") == "push" and e.get("system") == "salesforce")
    done = next(e for e in events if e.get("step") == "run" and "exit_code" in e)
    assert pushed["written"] == done["counts"]["written"]["salesforce"] > 0
    assert done["exit_code"] == 0 and done["status"] == "ok"
    for secret in secrets:
        assert secret not in stderr and secret not in stdout
        assert secret not in html and secret not in report_out + report_err
        assert secret.encode() not in db.read_bytes()
