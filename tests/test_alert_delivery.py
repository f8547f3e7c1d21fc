"""Sending alerts: Salesforce Tasks, HubSpot tasks and webhooks, their errors and retries, and the delivery loop."""

from __future__ import annotations

import json
import logging

import pytest
import requests
import responses
from conftest import NOW

from connector.delivery import MAX_ATTEMPTS, deliver
from connector.http import CallLog, QuotaStop, RetryPolicy, SettingsError
from connector.sources.base import SourceSetup
from connector.sources.hubspot.client import HubSpotSource
from connector.sources.salesforce.client import SalesforceSource
from connector.webhook import WebhookSender
from sandbox.dataset import SF_INACTIVE_USER, SF_OWNERS, build_dataset
from sandbox.server import Sandbox

BASE = "https://acme.my.salesforce.com"
DATA = f"{BASE}/services/data/v59.0"
SF_ENV = {"SALESFORCE_INSTANCE_URL": BASE, "SALESFORCE_ACCESS_TOKEN": "00Dsecret!token"}
HOOK = "https://hooks.example.com/services/T0001/B0001/s3cr3tT0kenXYZ"
FAST = RetryPolicy(attempts=4, base=0.001)


def salesforce(env: dict[str, str] | None = None, calls: CallLog | None = None) -> SalesforceSource:
    source = SalesforceSource.from_env(SourceSetup(env or SF_ENV, calls or CallLog(), FAST))
    assert source is not None
    return source


TASK = {"Subject": "Red: Acme", "ActivityDate": "2026-11-05", "Priority": "High", "Status": "Not Started",
        "WhatId": "001A", "OwnerId": "005A"}


# ------------------------------------------------------------------ Salesforce Tasks


def test_salesforce_tasks_are_created_in_one_collection_with_a_result_per_record():
    with responses.RequestsMock() as mock:
        mock.post(f"{DATA}/composite/sobjects", json=[
            {"id": "00T000000000001AAA", "success": True, "errors": []},
            {"success": False, "errors": [{"statusCode": "INACTIVE_OWNER_OR_USER", "message": "inactive user",
                                           "fields": ["OwnerId"]}]},
            {"success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}]},
        ], headers={"Sforce-Limit-Info": "api-usage=20/15000"})
        results = salesforce().create_tasks([("7", TASK), ("8", {**TASK, "OwnerId": "005GONE"}), ("9", TASK)])
        body = json.loads(mock.calls[0].request.body)
    assert body["allOrNone"] is False and len(body["records"]) == 3
    assert body["records"][0] == {"attributes": {"type": "Task"}, **TASK}
    assert [(r.key, r.ok, r.created_id, r.transient) for r in results] == [
        ("7", True, "00T000000000001AAA", False), ("8", False, None, False), ("9", False, None, True)]
    assert results[1].error == "INACTIVE_OWNER_OR_USER: inactive user"


def test_a_task_with_a_field_an_alert_never_sets_is_refused_before_any_request():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(f"{DATA}/composite/sobjects", json=[{"id": "00T000000000001AAA", "success": True, "errors": []}])
        with pytest.raises(ValueError, match="Health_Score__c"):
            salesforce().create_tasks([("1", {**TASK, "Health_Score__c": 10})])
        with pytest.raises(ValueError, match="at most 200"):
            salesforce().create_tasks([(str(i), TASK) for i in range(201)])
        assert not mock.calls  # checked after the raises: refused before any request


def test_salesforce_task_creation_stops_at_the_api_reserve_without_a_request():
    source = salesforce()
    source.usage = (14_000, 15_000)  # above 90 % of the daily limit
    with responses.RequestsMock() as mock, pytest.raises(QuotaStop, match="SALESFORCE_API_RESERVE_PERCENT"):
        source.create_tasks([("1", TASK)])
    assert not mock.calls


# ------------------------------------------------------------------ webhooks


def webhooks(calls: CallLog | None = None, **env: str) -> WebhookSender:
    return WebhookSender({"SLACK_URL": HOOK, **env}, calls or CallLog(), FAST)


def test_a_webhook_is_retried_on_500_and_sent_once_with_its_delivery_key(caplog):
    calls = CallLog()
    with responses.RequestsMock() as mock, caplog.at_level(logging.INFO, logger="healthsync"):
        mock.post(HOOK, status=500, body="oops")
        mock.post(HOOK, status=200, body="ok")
        result = webhooks(calls).post("41", "SLACK_URL", {"text": "*Red*: Acme"})
        sent = [json.loads(c.request.body) for c in mock.calls]
        keys = {c.request.headers["X-Healthsync-Delivery"] for c in mock.calls}
    assert result.ok and sent == [{"text": "*Red*: Acme"}] * 2 and keys == {"41"}
    assert calls.as_dict() == {"webhook": {"POST SLACK_URL": 2}}  # counted by variable, never by URL
    assert "s3cr3tT0ken" not in caplog.text and "retry 1" in caplog.text


def test_a_webhook_refused_with_a_4xx_is_not_retried_and_its_url_never_shows():
    with responses.RequestsMock() as mock:
        mock.post(HOOK, status=404, body="no_service")
        result = webhooks().post("1", "SLACK_URL", {"text": "x"})
        assert len(mock.calls) == 1
    assert (result.ok, result.transient, result.error) == (False, False, "HTTP 404 no_service")


def test_a_webhook_still_failing_after_the_retries_is_left_for_the_next_run():
    with responses.RequestsMock() as mock:
        mock.post(HOOK, body=requests.ConnectionError(f"Max retries exceeded with url: {HOOK[27:]}"))
        result = webhooks().post("1", "SLACK_URL", {"text": "x"})
        assert len(mock.calls) == FAST.attempts
    assert not result.ok and result.transient
    assert "still failing after 4 attempts" in result.error and "s3cr3tT0ken" not in result.error
    assert "POST SLACK_URL" in result.error


def test_a_webhook_variable_that_is_not_set_or_not_https_is_reported():
    assert webhooks().post("1", "OTHER_URL", {}).error == "OTHER_URL is not set"
    with pytest.raises(SettingsError, match="plain http is refused"):
        webhooks(SLACK_URL="http://hooks.example.com/x").url("SLACK_URL")


def test_a_webhook_url_can_come_from_a_secret_file(tmp_path):
    secret = tmp_path / "slack"
    secret.write_text(HOOK + "\n", encoding="utf-8")
    sender = WebhookSender({"SLACK_URL_FILE": str(secret)}, CallLog(), FAST)
    with responses.RequestsMock() as mock:
        mock.post(HOOK, body="ok")
        assert sender.post("1", "SLACK_URL", {"text": "x"}).ok


# ------------------------------------------------------------------ the sandbox's task APIs, through the clients


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(build_dataset(accounts=60, seed=5, now=NOW)) as sb:
        yield sb


def sandbox_client(sb: Sandbox, cls: type) -> object:
    env = {**sb.env(), "HEALTHSYNC_RETRY_BASE": "0.01"}
    source = cls.from_env(SourceSetup(env, CallLog(), RetryPolicy.from_env(env)))
    assert source is not None
    return source


def test_the_sandbox_creates_salesforce_tasks_and_refuses_bad_ones_per_record(sandbox):
    live = [a["Id"] for a in sandbox.dataset.sf_accounts.values() if not a["IsDeleted"]]
    deleted = next(a["Id"] for a in sandbox.dataset.sf_accounts.values() if a["IsDeleted"])
    tasks = [("1", {**TASK, "WhatId": live[0], "OwnerId": SF_OWNERS[0]}),
             ("2", {**TASK, "WhatId": deleted, "OwnerId": SF_OWNERS[0]}),
             ("3", {**TASK, "WhatId": live[1], "OwnerId": SF_INACTIVE_USER}),
             ("4", {**TASK, "WhatId": live[2], "Priority": "Urgent"}),
             ("5", {**TASK, "WhatId": "001Hs9999999999ZAA", "OwnerId": SF_OWNERS[1]})]
    results = sandbox_client(sandbox, SalesforceSource).create_tasks(tasks)  # type: ignore[attr-defined]
    assert [r.ok for r in results] == [True, False, False, False, False]
    created = sandbox.dataset.sf_tasks[results[0].created_id]
    assert (created["WhatId"], created["OwnerId"], created["Subject"]) == (live[0], SF_OWNERS[0], "Red: Acme")
    assert [r.error.split(":")[0] for r in results[1:]] == [
        "ENTITY_IS_DELETED", "INACTIVE_OWNER_OR_USER", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "INVALID_CROSS_REFERENCE_KEY"]


def test_the_sandbox_creates_hubspot_tasks_associated_with_their_company(sandbox):
    live = [c["id"] for c in sandbox.dataset.hs_companies.values() if not c["archived"]]
    archived = next(c["id"] for c in sandbox.dataset.hs_companies.values() if c["archived"])
    task = {"hs_task_subject": "Red: Acme", "hs_task_body": "why", "hs_timestamp": "2026-11-05T08:00:00.000Z",
            "hs_task_priority": "HIGH", "hs_task_status": "NOT_STARTED", "hs_task_type": "TODO",
            "hubspot_owner_id": "71000001"}
    client = sandbox_client(sandbox, HubSpotSource)
    results = client.create_tasks([("11", task, live[0]), ("12", {**task, "hubspot_owner_id": "999"}, live[1]),  # type: ignore[attr-defined]
                                   ("13", task, archived), ("14", task, live[2])])
    assert [(r.key, r.ok) for r in results] == [("11", True), ("12", False), ("13", False), ("14", True)]
    made = sandbox.dataset.hs_tasks[results[0].created_id]
    assert made["associations"] == {"companies": [live[0]]} and made["properties"]["hubspot_owner_id"] == "71000001"
    assert "INVALID_OWNER_ID" in results[1].error and "archived" in results[2].error
    with pytest.raises(ValueError, match="name"):
        client.create_tasks([("15", {**task, "name": "not a task property"}, live[0])])  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the delivery loop


def one_delivery(store, kind: str, target: str, payload: dict) -> int:
    store.upsert_accounts([{"key": "acme", "name": "Acme"}])
    aid = store.account_keys()["acme"]
    store.record_alerts([], [], [], [((None, "red", "health", aid, "2026-11-01T00:00:00Z", "{}"),
                                      lambda _id: [(0, kind, target, json.dumps(payload), "pending", None)])], ["red"])
    return int(store.conn.execute("SELECT max(id) FROM alert_deliveries").fetchone()[0])


def delivery(store, did: int) -> dict:
    return next(iter(store.db.query("SELECT * FROM alert_deliveries WHERE id = ?", [did])))


def test_a_delivery_failing_run_after_run_is_retried_then_failed_with_its_reason(sandbox, store):
    did = one_delivery(store, "webhook", "HEALTHSYNC_SLACK_WEBHOOK", {"text": "Acme is Red"})
    sandbox.fail_hook("slack", 100)
    env = {**sandbox.env(), "HEALTHSYNC_RETRY_ATTEMPTS": "2", "HEALTHSYNC_RETRY_BASE": "0.001"}
    statuses = []
    for _run in range(MAX_ATTEMPTS):
        summary = deliver(store, env, [], CallLog())
        statuses.append((delivery(store, did)["status"], delivery(store, did)["attempts"]))
    assert statuses == [("retry", 1), ("retry", 2), ("failed", 3)]
    assert summary.failed == {"salesforce_task": 0, "hubspot_task": 0, "webhook": 1}
    assert "HTTP 500" in delivery(store, did)["error"] and sandbox.hooks.get("slack", []) == []
    assert deliver(store, env, [], CallLog()).requests == {}  # nothing left to send
    sandbox.fail_hook("slack", 0)


def test_deliveries_with_no_way_to_send_them_here_are_skipped_with_the_reason(store):
    task = one_delivery(store, "salesforce_task", "001A", TASK)
    hook = one_delivery(store, "webhook", "UNSET_HOOK", {"text": "x"})
    summary = deliver(store, {}, [], CallLog())
    assert (delivery(store, task)["status"], delivery(store, task)["error"]) == (
        "skipped", "no salesforce credentials in the environment")
    assert (delivery(store, hook)["status"], delivery(store, hook)["error"]) == ("skipped", "UNSET_HOOK is not set")
    assert summary.skipped["salesforce_task"] == summary.skipped["webhook"] == 1 and not any(summary.failed.values())


def test_a_quota_stop_leaves_the_tasks_pending_for_the_next_run(store):
    did = one_delivery(store, "salesforce_task", "001A", TASK)
    source = salesforce()
    source.usage = (14_000, 15_000)
    with responses.RequestsMock() as mock:
        summary = deliver(store, SF_ENV, [source], CallLog())
        assert not mock.calls
    assert summary.stopped and "reserve" in summary.stopped
    assert (delivery(store, did)["status"], delivery(store, did)["attempts"]) == ("pending", 0)


def test_a_delivery_a_crashed_run_left_sent_is_sent_again(store):
    did = one_delivery(store, "webhook", "SLACK_URL", {"text": "x"})
    store.take_deliveries("webhook", 1)  # marked sent, then the process died before the answer
    with responses.RequestsMock() as mock:
        mock.post(HOOK, body="ok")
        summary = deliver(store, {"SLACK_URL": HOOK}, [], CallLog(), policy=FAST)
        assert len(mock.calls) == 1
    assert delivery(store, did)["status"] == "done" and delivery(store, did)["attempts"] == 2
    assert summary.notes == ["1 delivery(ies) a stopped run left unconfirmed are sent again"]


def test_the_tasks_of_a_system_that_failed_in_this_run_wait_pending_not_skipped(store):
    did = one_delivery(store, "salesforce_task", "001A", TASK)
    summary = deliver(store, {}, [], CallLog(), unavailable={"salesforce": "credentials rejected"})
    assert (delivery(store, did)["status"], delivery(store, did)["attempts"]) == ("pending", 0)
    assert summary.skipped["salesforce_task"] == 0
    assert any("waiting, salesforce failed" in note for note in summary.notes)
