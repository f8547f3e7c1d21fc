"""Write-back end to end: pull, score, plan and push against the sandbox over real HTTP."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.pipeline import run
from connector.sandbox.dataset import build_dataset, sf_time
from connector.sandbox.server import Faults, Sandbox
from connector.store import Store
from connector.systems import InputFieldWrite
from connector.writeback import push

MAPPINGS = load_mappings(REPO / "mappings")


def env_of(sb: Sandbox) -> dict[str, str]:
    return {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01", "HEALTHSYNC_RETRY_ATTEMPTS": "15"}


def sf_links(store: Store) -> dict[str, dict]:
    """Salesforce Account id -> the account's current health score row."""
    scores = {r["account_id"]: r for r in store.current_scores("health")}
    return {rid: scores.get(aid) for rid, aid in store.linked("salesforce", "Account").items()}


def assert_crm_matches_scores(store: Store, sb: Sandbox) -> int:
    checked = 0
    for rid, row in sf_links(store).items():
        account = sb.dataset.sf_accounts[rid]
        if account["IsDeleted"]:
            continue
        expected = None if row is None or row["value"] is None else row["value"]
        assert account["Health_Score__c"] == expected, rid
        if expected is not None:
            assert account["Health_Status__c"] == row["status"] and account["Health_Grade__c"] == row["grade"]
            assert account["Health_Usage__c"] == json.loads(row["groups"]).get("usage")
            checked += 1
    hs_scores = {r["account_id"]: r for r in store.current_scores("health")}
    for rid, aid in store.linked("hubspot", "companies").items():
        company = sb.dataset.hs_companies[rid]
        row = hs_scores.get(aid)
        if row is not None and row["value"] is not None and not company["archived"]:
            assert float(company["properties"]["health_score"]) == row["value"]
            assert company["properties"]["health_status"] == row["status"]
    return checked


@pytest.fixture
def dataset():
    """A fresh dataset per test: the sandbox writes into it."""
    return build_dataset(accounts=1000, seed=12, now=datetime.now(UTC))


def test_a_run_writes_every_score_and_a_second_run_writes_nothing(dataset, tmp_path):
    with Sandbox(dataset) as sb, Store(tmp_path / "a.db") as store:
        first = run(store, MAPPINGS, env_of(sb))
        assert first.exit_code == 0
        assert assert_crm_matches_scores(store, sb) > 900
        written = first.pushed.written
        assert first.pushed.calls == {s: math.ceil(n / {"salesforce": 200, "hubspot": 100}[s]) for s, n in written.items()}
        sb.reset_counts()
        second = run(store, MAPPINGS, env_of(sb))
        writes = {k: n for k, n in sb.calls.items() if k[1].startswith(("PATCH", "POST /crm/v3/objects/companies/batch"))}
        assert second.planned.changes == {"salesforce": 0, "hubspot": 0} and writes == {}

        # a day of edits in every system (1 %): only records whose scores moved are written
        columns = ("value", "status", "grade", "groups", "drivers", "coverage", "scored_at")
        before = {r["account_id"]: tuple(r[c] for c in columns) for r in store.current_scores("health")}
        sb.mutate(fraction=0.01, seed=9)
        planned_before = store.conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        third = run(store, MAPPINGS, env_of(sb))
        after = {r["account_id"]: tuple(r[c] for c in columns) for r in store.current_scores("health")}
        moved = {aid for aid in after if after[aid] != before.get(aid)}
        churn = {r["account_id"] for r in store.current_scores("churn_risk")}  # churn_risk may move too
        written = {r["account_id"] for r in store.outbox("done") if r["id"] > planned_before}
        assert written and written <= moved | churn
        assert 0 < third.pushed.written["salesforce"] < 100 and third.pushed.calls["salesforce"] == 1
        assert_crm_matches_scores(store, sb)


def test_a_hand_edited_output_field_is_restored_and_counted_as_drift(dataset, tmp_path):
    with Sandbox(dataset) as sb, Store(tmp_path / "b.db") as store:
        run(store, MAPPINGS, env_of(sb))
        rid, row = next((r, s) for r, s in sf_links(store).items() if s and s["value"] is not None)
        with sb.lock:  # a sales rep types over the score
            account = sb.dataset.sf_accounts[rid]
            account["Health_Score__c"] = 99.0
            account["SystemModstamp"] = account["LastModifiedDate"] = sf_time(datetime.now(UTC).timestamp() + 2)
        again = run(store, MAPPINGS, env_of(sb))
        assert again.planned.drift["salesforce"] == 1 and again.planned.changes["salesforce"] == 1
        assert sb.dataset.sf_accounts[rid]["Health_Score__c"] == row["value"]


def test_records_rejected_inside_a_batch_are_reported_and_the_rest_written(dataset, tmp_path):
    from connector.pipeline import pull, score
    from connector.writeback import plan

    with Sandbox(dataset) as sb, Store(tmp_path / "c.db") as store:
        env = env_of(sb)
        pulled = pull(store, MAPPINGS, env)
        score(store, MAPPINGS)
        planned = plan(store, MAPPINGS)
        gone = [r["record_id"] for r in store.outbox("pending") if r["system"] == "salesforce"][:3]
        with sb.lock:  # deleted in Salesforce between the pull and the push
            for rid in gone:
                sb.dataset.sf_accounts[rid]["IsDeleted"] = True
        writers = {s.system: s for s in pulled.sources if s.system in ("salesforce", "hubspot")}
        pushed = push(store, MAPPINGS, writers)
        failed = store.outbox("failed")
    assert pushed.failed["salesforce"] == 3 and {r["record_id"] for r in failed} == set(gone)
    assert all("ENTITY_IS_DELETED" in r["error"] for r in failed)
    assert pushed.written["salesforce"] == planned.changes["salesforce"] - 3


def test_writes_survive_answers_lost_after_the_write(dataset, tmp_path):
    faults = Faults(drop_after_write=0.3, rate_429=0.05, rate_5xx=0.02, seed=3)
    with Sandbox(dataset, faults=faults) as sb, Store(tmp_path / "d.db") as store:
        result = run(store, MAPPINGS, env_of(sb))
        assert result.exit_code == 0 and sb.faulted
        assert assert_crm_matches_scores(store, sb) > 900


def test_an_input_field_is_never_written(dataset, tmp_path):
    from connector.pipeline import pull, score
    from connector.writeback import plan

    with Sandbox(dataset) as sb, Store(tmp_path / "e.db") as store:
        pulled = pull(store, MAPPINGS, env_of(sb))
        score(store, MAPPINGS)
        plan(store, MAPPINGS)
        target = store.outbox("pending")[0]
        tampered = {**json.loads(target["fields"]), "CSM_Rating__c": 5}
        store.conn.execute("UPDATE outbox SET fields = ? WHERE id = ?", (json.dumps(tampered), target["id"]))
        sb.reset_counts()
        writers = {s.system: s for s in pulled.sources if s.system == target["system"]}
        with pytest.raises(InputFieldWrite, match="CSM_Rating__c"):
            push(store, MAPPINGS, writers)
        assert not [k for k in sb.calls if k[1].startswith(("PATCH", "POST /crm/v3/objects/companies/batch"))]
        assert store.outbox("sent") == []  # released, not left in flight
