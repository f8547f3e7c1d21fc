"""Write-back under a killed process and an exhausted quota, against the sandbox over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from conftest import NO_OUTCOMES, NOW, REPO
from test_e2e_push import MAPPINGS, assert_crm_matches_scores, env_of

from connector.config.mappings import load_mappings
from connector.pipeline import run
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox, _Salesforce

ACCOUNTS_ONLY = load_mappings(NO_OUTCOMES)


@pytest.fixture
def dataset():
    # NOW, not the wall clock: the same data on every day. A run after the killed command reads the
    # wall clock as that command did (a CLI takes no `now`); the in-process test passes NOW.
    return build_dataset(accounts=1000, seed=12, now=NOW)


def record_patches(monkeypatch, hold_at: int | None = None):
    """Record the ids of every Salesforce collection update; optionally hold the answer to the Nth."""
    sent: list[list[str]] = []
    holding, release = threading.Event(), threading.Event()
    original = _Salesforce.update

    def update(self, ver):
        reply = original(self, ver)  # applied in the CRM ...
        sent.append([r["id"] for r in self.json_body()["records"]])
        if hold_at is not None and len(sent) == hold_at:
            holding.set()  # ... but the client never hears of it
            release.wait(60)
        return reply

    monkeypatch.setattr(_Salesforce, "update", update)
    return sent, holding, release


def test_sigkill_during_a_push_then_a_rerun_converges_without_resending(dataset, tmp_path, monkeypatch):
    sent, holding, release = record_patches(monkeypatch, hold_at=2)
    db = tmp_path / "kill.db"
    with Sandbox(dataset) as sb:
        env = {**os.environ, **env_of(sb), "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "connector", "--db", str(db), "--mappings", str(NO_OUTCOMES),
                                 "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert holding.wait(180), proc.stderr.read().decode() if proc.poll() is not None else "no second batch"
            proc.send_signal(signal.SIGKILL)  # while the second batch's answer is on its way
            proc.wait(30)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        before_kill = [list(ids) for ids in sent]
        with Store(db) as store:
            sf = [r for r in store.outbox() if r["system"] == "salesforce"]
            status = {r["record_id"]: r["status"] for r in sf}
            assert {status[i] for i in before_kill[0]} == {"done"}  # settled before the kill
            assert {status[i] for i in before_kill[1]} == {"sent"}  # in flight: written, never confirmed
            assert sum(s == "pending" for s in status.values()) == len(sf) - 400
            assert store.last_run()["status"] == "running"  # the killed run never finished

            result = run(store, MAPPINGS, env_of(sb))
            assert result.exit_code == 0
            resent = {i for ids in sent[2:] for i in ids}
            assert not resent & set(before_kill[0])  # nothing settled is sent again
            assert not resent & set(before_kill[1])  # the in-flight batch landed; the fresh pull saw it
            assert resent == {rid for rid, s in status.items() if s == "pending"}  # the rest, exactly once
            assert assert_crm_matches_scores(store, sb) > 900
            assert store.outbox("sent") == [] and store.outbox("failed") == []


def test_the_quota_reserve_stops_a_push_cleanly_and_the_next_run_finishes_it(dataset, tmp_path, monkeypatch):
    sent, _holding, _release = record_patches(monkeypatch)
    with Sandbox(dataset, daily_api_limit=1000) as sb, Store(tmp_path / "quota.db") as store:
        # HubSpot allows 500,000 a day; its pull takes 9 requests, so this reserve is met by the second batch
        env = {**env_of(sb), "HUBSPOT_DAILY_RESERVE": "499990"}
        with sb.lock:
            sb.sf_usage = 895  # the reserve (10 %) starts at 900: pull and a few batches fit
        first = run(store, ACCOUNTS_ONLY, env, NOW)  # the request counts above: no outcome records
        assert first.exit_code == 4, (first.pulled.stopped, first.pushed)
        assert first.pulled.stopped is None  # the pull fitted; the push met both reserves
        assert "SALESFORCE_API_RESERVE_PERCENT" in first.pushed.stopped
        assert "HUBSPOT_DAILY_RESERVE" in first.pushed.stopped
        assert 0 < first.pushed.written["hubspot"] < first.planned.changes["hubspot"]
        assert sb.sf_usage < 1000  # stopped short of the limit, never at REQUEST_LIMIT_EXCEEDED
        written = first.pushed.written["salesforce"]
        planned = first.planned.changes["salesforce"]
        assert 0 < written < planned
        open_rows = [r for r in store.outbox() if r["system"] == "salesforce" and r["status"] == "pending"]
        assert len(open_rows) == planned - written  # what is left stays in the outbox, none in flight
        assert store.outbox("sent") == []
        assert {i for ids in sent for i in ids} == {r["record_id"] for r in store.outbox("done") if r["system"] == "salesforce"}

        with sb.lock:
            sb.daily_api_limit = 100_000  # a new day
        sent.clear()
        second = run(store, MAPPINGS, env_of(sb), NOW + timedelta(hours=1))
        assert second.exit_code == 0
        assert {i for ids in sent for i in ids} == {r["record_id"] for r in open_rows}
        assert assert_crm_matches_scores(store, sb) > 900
