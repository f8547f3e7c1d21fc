"""`setup`, `validate --live` and Bulk API 2.0 pushes, against the sandbox over real HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import NOW, REPO
from test_cli_pull import run as cli
from test_e2e_push import MAPPINGS, assert_crm_matches_scores, env_of

from connector.pipeline import run
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Faults, Sandbox

WRITES = ("POST", "PATCH", "PUT", "DELETE")


@pytest.fixture
def dataset():
    return build_dataset(accounts=300, seed=5, now=NOW)


def test_setup_creates_the_missing_hubspot_properties_and_a_run_then_writes_them(dataset, tmp_path):
    with Sandbox(dataset, hubspot_outputs=False) as sb:
        env = env_of(sb)
        checked = cli(tmp_path / "s.db", env, "validate", "--live")
        assert checked.exit_code == 2, checked.output
        assert "hubspot: 0 output field(s) ready, 13 missing" in checked.output
        assert "the CRM fields do not match the mappings (13 problem(s))" in checked.output
        line = next(i for i, text in enumerate((REPO / "mappings/scores/health.yaml").read_text().splitlines(), 1)
                    if text.strip() == "status: health_status")
        assert f"health.yaml:{line}: scores.health.outputs.hubspot.status: the company property health_status does not " \
               "exist" in checked.output
        assert "salesforce: 14 output field(s) ready" in checked.output
        assert not [k for k in sb.calls if k[1].startswith(WRITES) and "Soap" not in k[1]]  # read only (but the login)

        created = cli(tmp_path / "s.db", env, "setup")
        assert created.exit_code == 0, created.output
        assert "hubspot: created group healthsync, churn_risk_score" in created.output
        status = sb.hs_properties["health_status"]
        assert (status["type"], status["fieldType"], status["groupName"]) == ("enumeration", "select", "healthsync")
        assert [o["value"] for o in status["options"]] == ["Red", "Yellow", "Green"]
        assert sb.hs_properties["health_score"]["type"] == "number"

        again = cli(tmp_path / "s.db", env, "setup")
        assert again.exit_code == 0 and "created" not in again.output  # nothing twice

        with Store(tmp_path / "s.db") as store:
            result = run(store, MAPPINGS, env, NOW)
            assert result.exit_code == 0 and result.pushed.failed["hubspot"] == 0
            assert result.pushed.written["hubspot"] > 100
            assert_crm_matches_scores(store, sb)


def test_setup_names_missing_and_mistyped_salesforce_fields_with_the_deploy_command(dataset, tmp_path):
    with Sandbox(dataset, salesforce_missing=("Health_Trend__c",), salesforce_types={"Health_Score__c": "string"}) as sb:
        result = cli(tmp_path / "t.db", env_of(sb), "setup")
    assert result.exit_code == 2
    assert "missing: Health_Trend__c\n" in result.output
    assert ("sf project deploy start --metadata CustomField:Account.Health_Trend__c --metadata "
            "PermissionSet:Healthsync_Integration") in result.output
    assert "Account.Health_Score__c (health score) is a string field" in result.output
    assert "mappings/scores/health.yaml:" in result.output  # where each output is mapped
    assert "sandbox-password" not in result.output


def test_a_large_push_goes_through_bulk_jobs_and_locked_rows_are_retried(dataset, tmp_path):
    env_extra = {"SALESFORCE_BULK_THRESHOLD": "100", "SALESFORCE_BULK_JOB_RECORDS": "120",
                 "SALESFORCE_BULK_POLL_SECONDS": "0.01"}
    with Sandbox(dataset, faults=Faults(rate_lock=0.05, seed=4)) as sb, Store(tmp_path / "b.db") as store:
        env = {**env_of(sb), **env_extra}
        first = run(store, MAPPINGS, env, NOW)
        assert first.exit_code == 0, first.pushed
        planned = first.planned.changes["salesforce"]
        jobs = first.pushed.jobs["salesforce"]
        assert planned > 250 and jobs >= 2  # bulk while more than 100 changes are open ...
        assert first.pushed.calls["salesforce"] >= 1  # ... then collections for the last ones and the retries
        assert len(sb.bulk_jobs) == jobs and {j.state for j in sb.bulk_jobs.values()} == {"JobComplete"}
        assert sb.faulted[("salesforce", "lock")] > 0 and first.pushed.retried["salesforce"] > 0
        assert first.pushed.written["salesforce"] == planned
        assert store.meta("bulk_job.salesforce") == ""  # no job left in flight
        assert assert_crm_matches_scores(store, sb) > 250

        second = run(store, MAPPINGS, env, NOW + timedelta(hours=1))
        assert second.planned.changes["salesforce"] == 0 and second.pushed.jobs["salesforce"] == 0
