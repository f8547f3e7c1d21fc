"""Write-back end to end: pull, score, plan and push against the sandbox over real HTTP."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from conftest import NOW, REPO

from connector.config.mappings import load_mappings
from connector.pipeline import run
from connector.runlock import RunLock
from connector.sources.crm import InputFieldWrite
from connector.store import Store
from connector.writeback import push
from sandbox.dataset import HS_OUTPUTS, SF_OUTPUTS, build_dataset, sf_time
from sandbox.server import Faults, Sandbox

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


def crm_outputs(sb: Sandbox) -> dict[tuple[str, str], tuple]:
    """(system, record id) -> the output fields the CRM holds, as the sandbox stores them."""
    with sb.lock:
        held = {("salesforce", rid): tuple(a.get(f) for f in SF_OUTPUTS) for rid, a in sb.dataset.sf_accounts.items()}
        held.update({("hubspot", cid): tuple(c["properties"].get(p) for p in HS_OUTPUTS)
                     for cid, c in sb.dataset.hs_companies.items()})
    return held


def score_values(store: Store) -> dict[tuple[str, int], tuple]:
    """(score, account id) -> what a CRM output can show of it (not when it was computed)."""
    columns = ("value", "status", "grade", "groups", "drivers", "coverage", "trend", "trend_direction")
    return {(r["score"], r["account_id"]): tuple(r[c] for c in columns) for r in store.current_scores()}


@pytest.fixture
def dataset():
    """A fresh dataset per test: the sandbox writes into it."""
    return build_dataset(accounts=1000, seed=12, now=NOW)


def test_a_run_writes_every_score_and_a_second_run_writes_nothing(dataset, tmp_path):
    with Sandbox(dataset) as sb, Store(tmp_path / "a.db") as store:
        first = run(store, MAPPINGS, env_of(sb), NOW)
        assert first.exit_code == 0
        assert assert_crm_matches_scores(store, sb) > 900
        written = first.pushed.written
        assert first.pushed.calls == {s: math.ceil(n / {"salesforce": 200, "hubspot": 100}[s]) for s, n in written.items()}
        sb.reset_counts()
        second = run(store, MAPPINGS, env_of(sb), NOW + timedelta(hours=1))
        writes = {k: n for k, n in sb.calls.items() if k[1].startswith(("PATCH", "POST /crm/v3/objects/companies/batch"))}
        assert second.planned.changes == {"salesforce": 0, "hubspot": 0} and writes == {}

        # a day of edits in every system (1 %): only records whose output values moved are written
        before, held_before = score_values(store), crm_outputs(sb)
        sb.mutate(fraction=0.01, seed=9)
        planned_before = store.conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        third = run(store, MAPPINGS, env_of(sb), NOW + timedelta(hours=2))
        after, held_after = score_values(store), crm_outputs(sb)
        moved = {aid for (_score, aid), values in after.items() if values != before.get((_score, aid))}
        assert 0 < len(moved) < len({aid for _score, aid in after}) / 10  # a 1 % edit moves few accounts
        done = [r for r in store.outbox("done") if r["id"] > planned_before]
        changed = {key for key, values in held_after.items() if values != held_before.get(key)}
        assert {(r["system"], r["record_id"]) for r in done} == changed  # every write changed the CRM: none redundant
        assert {r["account_id"] for r in done} <= moved  # ... and belongs to an account whose score moved
        assert 0 < third.pushed.written["salesforce"] < 100 and third.pushed.calls["salesforce"] == 1
        assert_crm_matches_scores(store, sb)


def test_a_hand_edited_output_field_is_restored_and_counted_as_drift(dataset, tmp_path):
    with Sandbox(dataset) as sb, Store(tmp_path / "b.db") as store:
        run(store, MAPPINGS, env_of(sb), NOW)
        rid, row = next((r, s) for r, s in sf_links(store).items() if s and s["value"] is not None)
        with sb.lock:  # a sales rep types over the score
            account = sb.dataset.sf_accounts[rid]
            account["Health_Score__c"] = 99.0
            account["SystemModstamp"] = account["LastModifiedDate"] = sf_time(datetime.now(UTC).timestamp() + 2)
        again = run(store, MAPPINGS, env_of(sb), NOW + timedelta(hours=1))
        assert again.planned.drift["salesforce"] == 1 and again.planned.changes["salesforce"] == 1
        assert sb.dataset.sf_accounts[rid]["Health_Score__c"] == row["value"]


def test_records_rejected_inside_a_batch_are_reported_and_the_rest_written(dataset, tmp_path):
    from connector.pipeline import pull, score
    from connector.writeback import plan

    with Sandbox(dataset) as sb, Store(tmp_path / "c.db") as store, RunLock(store):  # plan writes the outbox
        env = env_of(sb)
        pulled = pull(store, MAPPINGS, env, NOW)
        score(store, MAPPINGS, NOW)
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
        result = run(store, MAPPINGS, env_of(sb), NOW)
        assert result.exit_code == 0 and sb.faulted
        assert assert_crm_matches_scores(store, sb) > 900


def test_an_input_field_is_never_written(dataset, tmp_path):
    from connector.pipeline import pull, score
    from connector.writeback import plan

    with Sandbox(dataset) as sb, Store(tmp_path / "e.db") as store, RunLock(store):  # plan writes the outbox
        pulled = pull(store, MAPPINGS, env_of(sb), NOW)
        score(store, MAPPINGS, NOW)
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
