"""`healthsync pull`, `matches` and `demo` through the command line, against the sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from conftest import NO_OUTCOMES

from connector.cli import cli
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

MAPPINGS = str(NO_OUTCOMES)
CLEAR = {name: "" for name in (
    "SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME", "SALESFORCE_PASSWORD",
    "SALESFORCE_CLIENT_ID", "HUBSPOT_ACCESS_TOKEN", "STRIPE_API_KEY", "ZENDESK_URL", "ZENDESK_EMAIL",
    "ZENDESK_API_TOKEN")}


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(accounts=200, seed=3, now=datetime(2026, 11, 1, tzinfo=UTC))


def run(db, env, *args):
    return CliRunner().invoke(cli, ["--db", str(db), "--mappings", MAPPINGS, *args],
                              env={**CLEAR, "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01", **env})


def test_pull_then_matches(dataset, tmp_path):
    db = tmp_path / "p.db"
    with Sandbox(dataset) as sb:
        result = run(db, sb.env(), "pull")
    assert result.exit_code == 0, result.output
    assert "Pulled" in result.output and "measured:" in result.output and "MRR:" in result.output
    assert "sandbox-password" not in result.output and "pat-sandbox-0000" not in result.output
    with Store(db) as store:
        last = store.last_run()
    calls = json.loads(last["api_calls"])
    assert last["command"] == "pull" and last["status"] == "ok"
    assert calls["salesforce"]["GET queryAll"] == 1 and calls["zendesk"]["GET /api/v2/incremental/tickets/cursor.json"] >= 1
    issues = json.loads(run(db, {}, "matches", "--json").output)
    assert {i["kind"] for i in issues} == {"unmatched", "conflict"}
    conflicts = json.loads(run(db, {}, "matches", "--conflicts", "--json").output)
    assert conflicts and all(i["kind"] == "conflict" and i["candidates"] for i in conflicts)
    table = run(db, {}, "matches", "--unmatched").output
    assert "unmatched" in table and "conflict" not in table.split("\n", 2)[2]


def test_systems_the_mappings_use_without_credentials_are_exit_2_naming_the_variables(tmp_path):
    result = run(tmp_path / "e.db", {}, "pull")
    assert result.exit_code == 2, result.output
    for system, variable in (("salesforce", "SALESFORCE_USERNAME"), ("hubspot", "HUBSPOT_ACCESS_TOKEN"),
                             ("stripe", "STRIPE_API_KEY"), ("zendesk", "ZENDESK_API_TOKEN"),
                             ("usage", "USAGE_DATABASE_URL")):
        assert f"{system}: the mappings use it" in result.output and variable in result.output
    skipped = run(tmp_path / "e.db", {}, "pull", "--skip", "salesforce", "--skip", "hubspot", "--skip", "stripe",
                  "--skip", "zendesk", "--skip", "usage")
    assert skipped.exit_code == 0, skipped.output
    for system in ("salesforce", "hubspot", "stripe", "zendesk", "usage"):
        assert f"{system}: skipped (--skip / HEALTHSYNC_SKIP)" in skipped.output


def test_a_quota_reserve_stops_salesforce_with_exit_4_and_the_rest_still_pulls(dataset, tmp_path):
    db = tmp_path / "q.db"
    with Sandbox(dataset, daily_api_limit=10) as sb:
        result = run(db, {**sb.env(), "SALESFORCE_API_RESERVE_PERCENT": "95"}, "pull")
    assert result.exit_code == 4, result.output
    assert "reserve of 95%" in result.output
    with Store(db) as store:
        counts = store.record_counts()
        assert store.last_run()["status"] == "stopped"
    assert ("salesforce", "Account") not in counts and counts[("zendesk", "tickets")][0] > 0


def test_invalid_settings_exit_2_naming_the_variable(tmp_path):
    result = run(tmp_path / "s.db", {"HUBSPOT_ACCESS_TOKEN": "pat-x", "HUBSPOT_BASE_URL": "http://hubspot.example.com"}, "pull")
    assert result.exit_code == 2 and "HUBSPOT_BASE_URL=http://hubspot.example.com: plain http is refused" in result.output


def test_demo_pulls_through_faults_and_scores(tmp_path):
    result = run(tmp_path / "demo.db", {}, "demo", "--accounts", "150", "--faults")
    assert result.exit_code == 0, result.output
    assert "Scored" in result.output and "lowest health scores" in result.output
    assert "Run summary" in result.output and "as they now stand in the sandbox's CRMs" in result.output
    with Store(tmp_path / "demo.db") as store:
        assert len(store.current_scores("health")) > 150
        assert store.last_run()["command"] == "demo"
        assert json.loads(store.last_run()["counts"])["written"]["salesforce"] > 100  # scores written back


def test_runs_lists_past_runs_and_shows_one(dataset, tmp_path):
    db = tmp_path / "r.db"
    with Sandbox(dataset) as sb:
        first = run(db, sb.env(), "run")
        assert first.exit_code == 0, first.output
        assert "Run summary" in first.output
        run(db, sb.env(), "run", "--dry-run")
    listed = run(db, {}, "runs", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["command"] for r in rows] == ["run"]  # a dry run records nothing
    latest_real = rows[0]
    assert latest_real["status"] == "ok" and latest_real["exit_code"] == 0 and latest_real["seconds"] is not None
    assert latest_real["counts"]["written"]["salesforce"] > 100
    assert latest_real["api_calls"]["salesforce"]["PATCH composite/sobjects"] >= 1
    table = run(db, {}, "runs")
    assert "run --dry-run" not in table.output and "salesforce" in table.output
    shown = run(db, {}, "runs", "show", str(latest_real["id"]))
    assert shown.exit_code == 0 and f"run {latest_real['id']}: run — ok (exit 0)" in shown.output
    assert "API calls, salesforce:" in shown.output
    assert run(db, {}, "runs", "show", "999").exit_code == 2
