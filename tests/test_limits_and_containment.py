"""Limits read right, failures contained, credentials checked with one cheap call per system.

* a Salesforce REQUEST_LIMIT_EXCEEDED that is not the daily quota (ConcurrentPerOrgLongTxn) is
  retried with backoff; only "TotalRequests Limit exceeded." stops the system (exit 4);
* one CRM's fatal error during the push (a 401 that cannot be renewed, a 400 INVALID_FIELD on
  the whole request) ends that CRM's push only: its batch goes back to pending, the error is in
  PushSummary.failed_systems, and the other CRM is still written;
* an alert action the CRM refuses as a whole request counts one attempt for every delivery in
  it: three runs, then failed (exit 3); the other kinds are sent meanwhile;
* `ping` makes one authenticated request per system; a rejected credential is AuthError
  (exit 2) naming the system and its variables, never the secret.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import responses
from conftest import NO_OUTCOMES

from connector.config.mappings import load_mappings
from connector.delivery import MAX_ATTEMPTS, deliver
from connector.http import AuthError, CallLog, RetryPolicy
from connector.pipeline import PullSummary, RunSummary, pull, run
from connector.sources import registry
from connector.sources.base import SourceSetup
from connector.sources.salesforce.client import SalesforceSource
from connector.sources.zendesk.client import ZendeskSource
from connector.store import Store
from sandbox.dataset import SF_OWNERS, build_dataset
from sandbox.server import Faults, Sandbox

MAPPINGS = load_mappings(NO_OUTCOMES)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BASE = "https://acme.my.salesforce.com"
DATA = f"{BASE}/services/data/v59.0"
SF_ENV = {"SALESFORCE_INSTANCE_URL": BASE, "SALESFORCE_ACCESS_TOKEN": "00Dsecret!token", "HEALTHSYNC_RETRY_BASE": "0.001"}
SF_WRITE = "PATCH /composite/sobjects"


def env_of(sb: Sandbox, **extra: str) -> dict[str, str]:
    return {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.001",
            "HEALTHSYNC_RETRY_ATTEMPTS": "6", **extra}


def client(cls: type, env: dict[str, str], calls: CallLog | None = None):
    source = cls.from_env(SourceSetup(env, calls or CallLog(), RetryPolicy.from_env(env)))
    assert source is not None
    return source


# ------------------------------------------------------------------ limits


def describe_all() -> dict:
    fields = client(SalesforceSource, SF_ENV).account_fields(MAPPINGS)
    return {"name": "Account", "fields": [{"name": f, "type": "string"} for f in fields]}


def test_a_concurrency_limit_is_retried_with_backoff_not_taken_for_the_daily_quota(store):
    busy = [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "ConcurrentPerOrgLongTxn Limit exceeded."}]
    record = {"attributes": {"type": "Account"}, "Id": "001000000000000001", "IsDeleted": False,
              "SystemModstamp": "2026-10-01T00:00:00.000+0000", "Name": "Acme"}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.get(f"{DATA}/sobjects/Account/describe", json=describe_all(),
                 headers={"Sforce-Limit-Info": "api-usage=16/100000"})
        mock.get(f"{DATA}/queryAll/", json=busy, status=403, headers={"Sforce-Limit-Info": "api-usage=17/100000"})
        mock.get(f"{DATA}/queryAll/", json=busy, status=403, headers={"Sforce-Limit-Info": "api-usage=18/100000"})
        mock.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [record]},
                 headers={"Sforce-Limit-Info": "api-usage=19/100000"})
        summary = pull(store, MAPPINGS, SF_ENV, only=["salesforce"])
    assert summary.stopped is None and not summary.failed
    assert summary.systems["salesforce"].records == {"Account": 1}
    assert summary.calls.retries == {("salesforce", "concurrency"): 2}


@pytest.mark.parametrize("message", ["TotalRequests Limit exceeded.", "TotalRequests Limit exceeded"])
def test_only_total_requests_stops_the_system(store, message):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{DATA}/sobjects/Account/describe", json=describe_all())
        mock.get(f"{DATA}/queryAll/", json=[{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": message}], status=403)
        summary = pull(store, MAPPINGS, SF_ENV, only=["salesforce"])
        queries = [c for c in mock.calls if "queryAll" in c.request.url]
    assert summary.stopped and "daily API request limit is exhausted" in summary.stopped
    assert len(queries) == 1  # not retried


def test_a_run_through_concurrency_limits_pulls_and_writes_everything(tmp_path):
    dataset = build_dataset(accounts=300, seed=6, now=NOW)
    with Sandbox(dataset, faults=Faults(rate_concurrent=0.6, seed=3)) as sb, Store(tmp_path / "l.db") as store:
        result = run(store, MAPPINGS, env_of(sb, HEALTHSYNC_RETRY_ATTEMPTS="12"), now=NOW)
        assert sb.faulted[("salesforce", "concurrent")] >= 2
        assert result.exit_code == 0 and result.stopped is None
        assert result.pulled.systems["salesforce"].records["Account"] == len(dataset.sf_accounts)
        assert result.pushed.written["salesforce"] == result.planned.changes["salesforce"] > 250
        assert result.pulled.calls.retries[("salesforce", "concurrency")] == sb.faulted[("salesforce", "concurrent")]


# ------------------------------------------------------------------ one CRM's fatal error during the push


def outbox(store: Store, system: str) -> list[tuple[str, int]]:
    return [(r["status"], r["attempts"]) for r in store.db.query(
        "SELECT status, attempts FROM outbox WHERE system = ? ORDER BY id", [system])]


@pytest.mark.parametrize(("status", "code", "message", "exit_code"), [
    (401, "INVALID_SESSION_ID", "Session expired or invalid", 2),  # logged in again 3 times, still refused
    (400, "INVALID_FIELD", "No such column 'Health_Trend__c' on entity 'Account'. If you are attempting to use a "
                           "custom field, be sure to append the '__c' after the custom field name.", 1),
])
def test_a_salesforce_push_error_does_not_cancel_the_hubspot_push(tmp_path, status, code, message, exit_code):
    dataset = build_dataset(accounts=300, seed=9, now=NOW)
    with Sandbox(dataset) as sb, Store(tmp_path / "p.db") as store:
        sb.refuse("salesforce", SF_WRITE, status, code, message)
        result = run(store, MAPPINGS, env_of(sb), now=NOW)
        assert set(result.pushed.failed_systems) == {"salesforce"}
        assert code in result.pushed.failed_systems["salesforce"]
        assert result.pushed.failed_exit_codes == {"salesforce": exit_code}
        assert result.pushed.written["hubspot"] == result.planned.changes["hubspot"] > 150  # still written
        scores = {r["account_id"]: r["value"] for r in store.current_scores("health")}
        held = {cid: scores.get(aid) for cid, aid in store.linked("hubspot", "companies").items()
                if not dataset.hs_companies[cid]["archived"]}
        assert sum(v is not None for v in held.values()) > 150
        assert all(float(dataset.hs_companies[cid]["properties"]["health_score"]) == v
                   for cid, v in held.items() if v is not None)
        assert result.pushed.written["salesforce"] == 0
        assert {s for s, _ in outbox(store, "salesforce")} == {"pending"}  # the batch was put back, not counted
        assert {a for _, a in outbox(store, "salesforce")} == {0}
        assert all(a["Health_Score__c"] is None for a in dataset.sf_accounts.values())
        assert sb.faulted[("salesforce", "refused")] == (4 if status == 401 else 1)  # one batch, then stopped

        sb.allow("salesforce", SF_WRITE)  # fixed: the next run writes what was left
        again = run(store, MAPPINGS, env_of(sb), now=NOW)
        assert not again.pushed.failed_systems and again.pushed.written["salesforce"] == result.planned.changes[
            "salesforce"]


# ------------------------------------------------------------------ refused alert actions


def one_delivery(store: Store, kind: str, target: str, payload: dict, key: str = "acme") -> int:
    store.upsert_accounts([{"key": key, "name": key.capitalize()}])
    aid = store.account_keys()[key]
    store.record_alerts([], [], [], [((None, "red", "health", aid, "2026-11-01T00:00:00Z", "{}"),
                                      lambda _id: [(0, kind, target, json.dumps(payload), "pending", None)])], ["red"])
    return int(store.conn.execute("SELECT max(id) FROM alert_deliveries").fetchone()[0])


def state(store: Store, did: int) -> tuple[str, int, str | None]:
    row = next(iter(store.db.query("SELECT status, attempts, error FROM alert_deliveries WHERE id = ?", [did])))
    return row["status"], row["attempts"], row["error"]


HS_TASKS = "POST /crm/v3/objects/tasks/batch/create"
SF_TASKS = "POST /composite/sobjects"


@pytest.fixture
def sandbox():
    with Sandbox(build_dataset(accounts=40, seed=5, now=NOW)) as sb:
        yield sb


def deliveries(sb: Sandbox, store: Store) -> tuple[int, int, int]:
    account = next(a for a in sb.dataset.sf_accounts.values() if not a["IsDeleted"])
    company = next(c for c in sb.dataset.hs_companies.values() if not c["archived"])
    task = {"Subject": "Red: Acme", "ActivityDate": "2026-11-05", "Priority": "High", "Status": "Not Started",
            "WhatId": account["Id"], "OwnerId": SF_OWNERS[0]}
    hs_task = {"properties": {"hs_task_subject": "Acme dropped", "hs_timestamp": "2026-11-05T08:00:00.000Z",
                              "hs_task_priority": "HIGH", "hs_task_status": "NOT_STARTED", "hs_task_type": "TODO"},
               "company": company["id"]}
    return (one_delivery(store, "salesforce_task", account["Id"], task, "acme"),
            one_delivery(store, "hubspot_task", company["id"], hs_task, "globex"),
            one_delivery(store, "webhook", "HEALTHSYNC_SLACK_WEBHOOK", {"text": "Acme is Red"}, "initech"))


@pytest.mark.parametrize(("sf", "hs"), [
    ((405, "METHOD_NOT_ALLOWED", "HTTP Method 'POST' not allowed. Allowed are GET,HEAD"),
     (400, "VALIDATION_ERROR", "Invalid input JSON on line 1, column 15: Cannot build BatchInputSimplePublicObject")),
    ((403, "INSUFFICIENT_ACCESS", "You do not have access to create Task records"),
     (403, "MISSING_SCOPES", "This app hasn't been granted all required scopes to make this call.")),
])
def test_a_refused_action_is_one_attempt_a_run_then_failed_and_the_other_kinds_still_go(sandbox, store, sf, hs):
    sf_did, hs_did, hook_did = deliveries(sandbox, store)
    sandbox.refuse("salesforce", SF_TASKS, *sf)
    sandbox.refuse("hubspot", HS_TASKS, *hs)
    sources = [client(registry.plugin(s).client, env_of(sandbox)) for s in ("salesforce", "hubspot")]
    seen = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        summary = deliver(store, env_of(sandbox), sources, CallLog())
        seen.append((state(store, sf_did)[:2], state(store, hs_did)[:2]))
        if attempt == 1:  # the webhook kind is not held up by the refused task kinds
            assert state(store, hook_did)[0] == "done" and len(sandbox.hooks["slack"]) == 1
    assert seen == [(("retry", 1), ("retry", 1)), (("retry", 2), ("retry", 2)), (("failed", 3), ("failed", 3))]
    assert sf[1] in state(store, sf_did)[2] and f"HTTP {sf[0]}" in state(store, sf_did)[2]
    assert hs[1] in state(store, hs_did)[2] and f"HTTP {hs[0]}" in state(store, hs_did)[2]
    assert summary.failed == {"salesforce_task": 1, "hubspot_task": 1, "webhook": 0}
    assert not summary.failed_kinds
    assert RunSummary(PullSummary(), delivered=summary).exit_code == 3  # the documented exit 3
    assert sandbox.dataset.sf_tasks == {} and sandbox.dataset.hs_tasks == {}
    assert deliver(store, env_of(sandbox), sources, CallLog()).requests == {}  # nothing left to send


def test_a_rejected_credential_leaves_the_deliveries_untouched_and_the_other_kinds_go(sandbox, store):
    sf_did, hs_did, hook_did = deliveries(sandbox, store)
    sandbox.refuse("hubspot", HS_TASKS, 401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
    sources = [client(registry.plugin(s).client, env_of(sandbox)) for s in ("salesforce", "hubspot")]
    summary = deliver(store, env_of(sandbox), sources, CallLog())
    assert state(store, hs_did)[:2] == ("pending", 0)  # not the deliveries' fault: not counted
    assert summary.failed_exit_codes == {"hubspot_task": 2}
    assert "check HUBSPOT_ACCESS_TOKEN" in summary.failed_kinds["hubspot_task"]
    assert state(store, sf_did)[0] == "done" and state(store, hook_did)[0] == "done"
    sandbox.allow("hubspot", HS_TASKS)
    deliver(store, env_of(sandbox), sources, CallLog())
    assert state(store, hs_did)[:2] == ("done", 1)


# ------------------------------------------------------------------ credential ping


BAD = {"salesforce": ("SALESFORCE_PASSWORD", "not-the-password", "SALESFORCE_USERNAME, SALESFORCE_PASSWORD"),
       "hubspot": ("HUBSPOT_ACCESS_TOKEN", "pat-revoked-1234", "HUBSPOT_ACCESS_TOKEN"),
       "stripe": ("STRIPE_API_KEY", "rk_test_revokedkey99", "STRIPE_API_KEY"),
       "zendesk": ("ZENDESK_API_TOKEN", "zd-revoked-token", "ZENDESK_URL, ZENDESK_EMAIL, ZENDESK_API_TOKEN")}
PING = {"salesforce": "GET /limits", "hubspot": "GET /crm/v3/objects/companies", "stripe": "GET /v1/customers",
        "zendesk": "GET /api/v2/users/me.json"}


def test_every_source_but_usage_has_a_ping_call():
    assert set(registry.systems()) - set(PING) == {"usage"}  # usage reads the admin's database: no API to ping


@pytest.mark.parametrize("system", sorted(PING))
def test_ping_makes_one_authenticated_call_and_a_rejected_credential_is_exit_2(sandbox, system):
    sandbox.reset_counts()
    calls = CallLog()
    client(registry.plugin(system).client, env_of(sandbox), calls).ping()
    data = {k: n for k, n in sandbox.calls.items() if k[0] == system and "login" not in k[1].lower()
            and "Soap" not in k[1]}
    assert data == {(system, PING[system]): 1}  # one cheap call (Salesforce logs in first)
    name, secret, variables = BAD[system]
    with pytest.raises(AuthError) as refused:
        client(registry.plugin(system).client, env_of(sandbox, **{name: secret})).ping()
    text = str(refused.value)
    assert refused.value.exit_code == 2 and text.startswith(f"{system} ")
    assert "credentials rejected" in text and f"check {variables}" in text
    assert secret not in text


def test_salesforce_ping_refused_token_or_permission_is_exit_2_without_the_token():
    with responses.RequestsMock() as mock:
        mock.get(f"{DATA}/limits", status=401,
                 json=[{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}])
        mock.get(f"{DATA}/limits", status=403,
                 json=[{"errorCode": "API_DISABLED_FOR_ORG", "message": "The REST API is not enabled for this Organization."}])
        for code in ("INVALID_SESSION_ID", "API_DISABLED_FOR_ORG"):
            with pytest.raises(AuthError) as refused:
                client(SalesforceSource, SF_ENV).ping()
            text = str(refused.value)
            assert code in text and "check SALESFORCE_INSTANCE_URL, SALESFORCE_ACCESS_TOKEN" in text
            assert "00Dsecret!token" not in text
        assert [c.request.url for c in mock.calls] == [f"{DATA}/limits"] * 2  # one request each, no retry


def test_zendesk_ping_answered_as_anonymous_is_a_rejected_credential():
    env = {"ZENDESK_URL": "https://acme.zendesk.com", "ZENDESK_EMAIL": "ops@acme.com", "ZENDESK_API_TOKEN": "zd-tok-9999"}
    with responses.RequestsMock() as mock:
        mock.get("https://acme.zendesk.com/api/v2/users/me.json", json={"user": {"id": None, "name": "Anonymous user"}})
        with pytest.raises(AuthError, match="anonymous user; check ZENDESK_URL, ZENDESK_EMAIL, ZENDESK_API_TOKEN"):
            client(ZendeskSource, env).ping()


@pytest.mark.parametrize(("system", "route", "code"), [
    ("hubspot", "GET /crm/v3/objects/companies", "MISSING_SCOPES"),
    ("stripe", "GET /v1/customers", "permission_denied"),
])
def test_ping_a_key_without_the_permission_is_exit_2(sandbox, system, route, code):
    sandbox.refuse(system, route, 403, code, "The provided key does not have the required permissions", times=1)
    with pytest.raises(AuthError) as refused:
        client(registry.plugin(system).client, env_of(sandbox)).ping()
    assert refused.value.exit_code == 2 and "HTTP 403" in str(refused.value)
    assert f"check {BAD[system][0]}" in str(refused.value)
