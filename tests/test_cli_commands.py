"""`pull --full`, `pull --system`, `run --full`, `override list` / `clear`, `failures` and a run's exit 3,
through the command line against the sandbox.

Each test makes its store with a writing command (`pull` / `run`) before any reading
command, and passes --db explicitly.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import NOW
from test_cli_pull import run as cli

from connector.store import Store
from sandbox.dataset import build_dataset, sf_time
from sandbox.server import Sandbox, _Salesforce

ACCOUNTS = 200


@pytest.fixture
def dataset():
    """A fresh dataset per test: the runs write into it."""
    return build_dataset(accounts=ACCOUNTS, seed=3, now=NOW)


def last_run(db) -> dict:
    listed = cli(db, {}, "runs", "--json")
    assert listed.exit_code == 0, listed.output
    return json.loads(listed.output)[0]


def pulled(run: dict) -> dict[str, int]:
    """system -> records the run read, from its row in `runs`."""
    return {s: sum(n.values()) for s, n in run["counts"].items() if s in ("salesforce", "hubspot", "stripe", "zendesk")}


def test_pull_system_reads_only_that_system_and_pull_full_reads_it_all_again(dataset, tmp_path):
    db = tmp_path / "p.db"
    live = sum(1 for a in dataset.sf_accounts.values() if not a["IsDeleted"])
    with Sandbox(dataset) as sb:
        first = cli(db, sb.env(), "pull", "--system", "salesforce")
        assert first.exit_code == 0, first.output
        assert {family for family, _ in sb.calls} == {"salesforce"}  # no other API was called
        run = last_run(db)
        assert run["command"] == "pull" and set(run["api_calls"]) == {"salesforce"}
        assert set(pulled(run)) == {"salesforce"} and pulled(run)["salesforce"] >= live

        again = cli(db, sb.env(), "pull", "--system", "salesforce")  # incremental: nothing changed since
        assert again.exit_code == 0, again.output
        assert pulled(last_run(db)).get("salesforce", 0) <= 2  # at most the cursor's overlap

        full = cli(db, sb.env(), "pull", "--full", "--system", "salesforce")
        assert full.exit_code == 0, full.output
        assert pulled(last_run(db))["salesforce"] == pulled(run)["salesforce"]  # every record read again

        sb.reset_counts()
        two = cli(db, sb.env(), "pull", "--system", "hubspot", "--system", "zendesk")
        assert two.exit_code == 0, two.output
        assert {family for family, _ in sb.calls} == {"hubspot", "zendesk"}
        assert set(pulled(last_run(db))) == {"hubspot", "zendesk"}
    with Store(db) as store:
        systems = {system for system, _object in store.record_counts()}
    assert systems == {"salesforce", "hubspot", "zendesk"}  # stripe was never asked for
    assert "Pulled" in full.output and "salesforce" in full.output and "stripe" not in full.output


def test_pull_system_refuses_an_unknown_system(tmp_path):
    result = cli(tmp_path / "u.db", {}, "pull", "--system", "marketo")
    assert result.exit_code == 2 and "marketo" in result.output
    assert not (tmp_path / "u.db").exists()


def test_run_full_reads_everything_again_and_writes_nothing_new(dataset, tmp_path):
    db = tmp_path / "f.db"
    with Sandbox(dataset) as sb:
        first = cli(db, sb.env(), "run")
        assert first.exit_code == 0, first.output
        read_first = last_run(db)
        incremental = cli(db, sb.env(), "run")
        assert incremental.exit_code == 0, incremental.output
        read_since = last_run(db)
        sb.reset_counts()
        full = cli(db, sb.env(), "run", "--full")
        assert full.exit_code == 0, full.output
        writes = [k for k in sb.calls if k[1].startswith(("PATCH", "POST /crm/v3/objects/companies/batch"))]
    # without --full a run reads what changed: Stripe events, HubSpot's search, no Zendesk ticket
    assert set(read_since["api_calls"]["stripe"]) == {"GET /v1/events"}
    assert "POST /crm/v3/objects/companies/search" in read_since["api_calls"]["hubspot"]
    assert pulled(read_since)["zendesk"] < pulled(read_first)["zendesk"] / 10
    run = last_run(db)
    assert run["command"] == "run" and run["status"] == "ok" and run["exit_code"] == 0
    # with --full, every system is read as on the first run: Stripe's backfill, HubSpot's list
    assert pulled(run) == pulled(read_first) and pulled(run)["salesforce"] >= ACCOUNTS
    assert {"GET /v1/customers", "GET /v1/subscriptions"} <= set(run["api_calls"]["stripe"])
    assert "GET /crm/v3/objects/companies" in run["api_calls"]["hubspot"]
    assert "POST /crm/v3/objects/companies/search" not in run["api_calls"]["hubspot"]
    assert run["counts"]["planned"] == {"salesforce": 0, "hubspot": 0} and writes == []  # read again, not rewritten
    assert "Run summary" in full.output


def test_override_list_and_clear(dataset, tmp_path):
    db = tmp_path / "o.db"
    with Sandbox(dataset) as sb:
        assert cli(db, sb.env(), "pull").exit_code == 0
    assert cli(db, {}, "score").exit_code == 0
    with Store(db) as store:
        account = store.current_scores("health")[0]["account_key"]
    empty = cli(db, {}, "override", "list", "--json")
    assert empty.exit_code == 0 and json.loads(empty.output) == []

    made = cli(db, {}, "override", "set", account, "--status", "Red", "--reason", "legal dispute", "--days", "5",
               "--by", "maria")
    assert made.exit_code == 0, made.output
    [row] = json.loads(cli(db, {}, "override", "list", "--json").output)
    assert (row["account_key"], row["score"], row["kind"], row["value"], row["reason"], row["set_by"]) == (
        account, "health", "status", "Red", "legal dispute", "maria")
    assert row["ended_at"] is None
    table = cli(db, {}, "override", "list")
    assert table.exit_code == 0 and "legal dispute" in table.output and "maria" in table.output

    cleared = cli(db, {}, "override", "clear", str(row["id"]), "--reason", "settled", "--by", "joe")
    assert cleared.exit_code == 0, cleared.output
    assert f"override #{row['id']} cleared" in cleared.output
    assert json.loads(cli(db, {}, "override", "list", "--json").output) == []  # no longer in force
    [ended] = json.loads(cli(db, {}, "override", "list", "--all", "--json").output)
    assert ended["id"] == row["id"] and ended["ended_reason"] == "cleared: settled" and ended["ended_at"]
    assert "cleared: settled" in cli(db, {}, "override", "list", "--all").output
    with Store(db) as store:
        assert store.score_of("health", ended["account_id"])["override_id"] is None  # the score is its own again

    again = cli(db, {}, "override", "clear", str(row["id"]), "--reason", "twice")
    assert again.exit_code == 2 and f"override #{row['id']} already ended" in again.output
    unknown = cli(db, {}, "override", "clear", "999", "--reason", "x")
    assert unknown.exit_code == 2 and "no override #999" in unknown.output


def delete_before_the_first_write(monkeypatch, count: int) -> list[str]:
    """Salesforce deletes `count` accounts of the first collection update just before applying it
    (someone merged them away between the pull and the push): rejected per record, permanently."""
    gone: list[str] = []
    original = _Salesforce.update

    def update(self, ver):
        if not gone:
            for rid in [r["id"] for r in self.json_body()["records"]][:count]:
                account = self.ds.sf_accounts[rid]
                account["IsDeleted"] = True
                account["SystemModstamp"] = account["LastModifiedDate"] = sf_time(time.time())
                gone.append(rid)
        return original(self, ver)

    monkeypatch.setattr(_Salesforce, "update", update)
    return gone


def test_records_the_crm_rejects_make_the_run_exit_3_and_failures_lists_them(dataset, tmp_path, monkeypatch):
    db = tmp_path / "x.db"
    with Sandbox(dataset) as sb:
        gone = delete_before_the_first_write(monkeypatch, 3)
        result = cli(db, sb.env(), "run")
        assert result.exit_code == 3, result.output
        assert len(gone) == 3
        assert "some records failed: healthsync failures" in result.output
        run = last_run(db)
        assert (run["status"], run["exit_code"]) == ("failures", 3)
        assert run["counts"]["failed"]["salesforce"] == 3 and run["counts"]["written"]["salesforce"] > 100

        listed = cli(db, {}, "failures", "--json")
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.output)
        assert {(r["system"], r["record_id"]) for r in rows} == {("salesforce", rid) for rid in gone}
        assert all("ENTITY_IS_DELETED" in r["error"] for r in rows)
        table = cli(db, {}, "failures")
        assert table.exit_code == 0 and "3 failed write(s)" in table.output and "ENTITY_IS_DELETED" in table.output

        # the next run reads the deletions, so it plans nothing for those records and ends clean
        monkeypatch.undo()
        after = cli(db, sb.env(), "run")
        assert after.exit_code == 0, after.output
        assert (last_run(db)["status"], last_run(db)["exit_code"]) == ("ok", 0)


def test_failures_says_so_when_every_write_landed(dataset, tmp_path):
    db = tmp_path / "ok.db"
    with Sandbox(dataset) as sb:
        assert cli(db, sb.env(), "run").exit_code == 0
    result = cli(db, {}, "failures")
    assert result.exit_code == 0 and "no failed writes" in result.output
    assert json.loads(cli(db, {}, "failures", "--json").output) == []
