"""Progress bars: what they show is read from the call log and the run's outbox; off unless at a terminal."""

from __future__ import annotations

import io
import sqlite3

from click.testing import CliRunner
from conftest import REPO
from rich.console import Console

from connector import pipeline
from connector.cli import cli
from connector.http import CallLog
from connector.progress import RunProgress
from connector.runlock import RunLock
from connector.store import Store


def test_bars_follow_requests_while_pulling_then_settled_records_while_pushing(tmp_path):
    db = tmp_path / "p.db"
    calls = CallLog()
    with Store(db) as store, RunLock(store):
        run_id = store.start_run("run")
        bars = RunProgress(calls, db, run_id, enabled=True, console=Console(file=io.StringIO()))
        conn = sqlite3.connect(db)
        for _ in range(7):
            calls.count("salesforce", "queryAll")
        calls.count("stripe", "GET /v1/events")
        calls.count("webhook", "POST HEALTHSYNC_SLACK_WEBHOOK")
        bars.refresh(conn)
        assert not [name for name in bars.tasks if "webhook" in name]  # not a pulled system
        assert bars.tasks["pull salesforce"]["requests"] == 7
        assert bars.tasks["pull stripe"]["requests"] == 1

        rows = [(run_id, "salesforce", "Account", f"001{i:03}", 1, "{}", "{}", "[]", "2026-11-23T00:00:00Z")
                for i in range(5)]
        store.replace_outbox(rows, ["salesforce"])
        store.conn.execute("UPDATE outbox SET status = 'done' WHERE record_id IN ('001000', '001001')")
        calls.count("salesforce", "PATCH composite/sobjects")
        bars.refresh(conn)
        assert "pull salesforce" not in bars.tasks  # the pull bar gives way to the push bar
        assert bars.tasks["push salesforce"] == {"completed": 2, "total": 5, "requests": 8}
        conn.close()


def test_no_bars_and_no_polling_when_not_at_a_terminal(tmp_path, monkeypatch):
    made: list[RunProgress] = []
    original = RunProgress.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(RunProgress, "__init__", spy)
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop here")))
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "x.db"), "--mappings", str(REPO / "mappings"), "run"])
    assert isinstance(result.exception, RuntimeError)
    assert made and not made[0].enabled and made[0]._thread is None  # CliRunner's stderr is not a terminal
