"""The commands, end to end on a sample store (metrics seeded directly, no HTTP)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from conftest import REPO

from connector.cli import cli

MAPPINGS = str(REPO / "mappings")


@pytest.fixture
def demo_db(tmp_path):
    from datetime import UTC, datetime

    from connector.store import Store
    from sandbox.sample import seed

    db = str(tmp_path / "demo.db")
    with Store(db) as store:
        seed(store, 120, datetime.now(UTC))
    result = CliRunner().invoke(cli, ["--db", db, "--mappings", MAPPINGS, "score"])
    assert result.exit_code == 0, result.output
    return db


def invoke(db, *args):
    result = CliRunner().invoke(cli, ["--db", db, "--mappings", MAPPINGS, *args])
    return result


def test_a_second_score_with_nothing_changed_says_the_scores_stand(demo_db):
    again = invoke(demo_db, "score")
    assert again.exit_code == 0, again.output
    assert "stand: nothing they read changed since" in " ".join(again.output.split())
    full = invoke(demo_db, "score", "--full")
    assert full.exit_code == 0 and "stand" not in full.output


def test_demo_scores_every_account(demo_db):
    rows = json.loads(invoke(demo_db, "scores", "--json").output)
    health = [r for r in rows if r["score"] == "health"]
    assert len(health) == 120
    assert {r["status"] for r in health if r["value"] is not None} <= {"Red", "Yellow", "Green"}
    assert all(r["external_ids"]["salesforce_account"].startswith("001SAMPLE") for r in health)
    assert all(set(r["groups"]) == {"usage", "support", "billing", "relationship"} for r in health)


def test_csv_export_has_a_row_per_account_and_score(demo_db):
    text = invoke(demo_db, "scores", "--csv").output
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 240
    assert {"group_usage", "salesforce_account", "grade", "trend"} <= set(rows[0])


def test_explain_contributions_add_up_to_the_global_score(demo_db):
    data = json.loads(invoke(demo_db, "explain", "acct-00003", "--json").output)
    assert data["global"] is not None
    total = sum(m["contribution"] for m in data["metrics"])
    assert total == pytest.approx(data["computed"], abs=1e-3)
    assert round(data["computed"] + 1e-9) == data["global"] or data["override_id"]
    for metric in data["metrics"]:
        assert {"raw", "scheme", "score", "weight", "group", "contribution", "na_reason"} <= set(metric)
    assert data["stored"]["value"] == data["global"]


def test_explain_unknown_account_exits_2(demo_db):
    result = invoke(demo_db, "explain", "nobody-here")
    assert result.exit_code == 2
    assert "no account 'nobody-here'" in result.output


def test_override_cli_requires_reason_and_expiry(demo_db):
    assert invoke(demo_db, "override", "set", "acct-00001", "--status", "Green", "--days", "5").exit_code == 2
    assert invoke(demo_db, "override", "set", "acct-00001", "--status", "Green", "--reason", "x").exit_code == 2
    assert invoke(demo_db, "override", "set", "acct-00001", "--status", "Purple", "--reason", "x", "--days", "5").exit_code == 2
    ok = invoke(demo_db, "override", "set", "acct-00001", "--status", "Red", "--reason", "legal dispute", "--days", "5", "--by", "maria")
    assert ok.exit_code == 0, ok.output
    assert invoke(demo_db, "score").exit_code == 0
    data = json.loads(invoke(demo_db, "explain", "acct-00001", "--json").output)
    assert data["status"] == "Red" and data["override_id"] == 1
    audit = invoke(demo_db, "override", "audit").output
    assert "set" in audit and "maria" in audit


def test_score_command_reports_invalid_mappings_with_exit_2(demo_db, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text("scores:\n  health:\n    models: 3\n")
    result = CliRunner().invoke(cli, ["--db", demo_db, "--mappings", str(bad), "score"])
    assert result.exit_code == 2
    assert "bad/x.yaml:3" in result.output
