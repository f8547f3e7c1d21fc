"""Salesforce client, mocked with `responses` (simple-salesforce talks through requests)."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.errors import ConfigError
from connector.http import ApiError, CallLog, RetryPolicy, SettingsError
from connector.pipeline import pull
from connector.systems import Context
from connector.systems.salesforce import SalesforceSource

BASE = "https://acme.my.salesforce.com"
DATA = f"{BASE}/services/data/v59.0"
ENV = {"SALESFORCE_INSTANCE_URL": BASE, "SALESFORCE_ACCESS_TOKEN": "00Dsecret!token", "HEALTHSYNC_RETRY_BASE": "0.001"}
MAPPINGS = load_mappings(REPO / "mappings")
FIELDS = ["Id", "IsDeleted", "SystemModstamp", "Name", "Website", "Customer_Segment__c", "Lifecycle_Stage__c",
          "CSM_Rating__c", "Seats_Purchased__c", "Active_Users_30d__c", "NPS__c", "Renewal_Date__c",
          "Stripe_Customer_Id__c"]


def account(i: int, stamp: str, deleted: bool = False) -> dict:
    return {"attributes": {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/001{i:015d}"},
            "Id": f"001{i:015d}", "IsDeleted": deleted, "SystemModstamp": stamp, "Name": f"Acme {i}",
            "Website": f"acme{i}.com", "CSM_Rating__c": 4, "Seats_Purchased__c": 10}


def describe(fields: list[str]) -> dict:
    return {"name": "Account", "fields": [{"name": f, "type": "string"} for f in fields]}


def all_fields() -> list[str]:
    source = SalesforceSource.from_env(Context(ENV, CallLog(), RetryPolicy()))
    assert source is not None
    return source.account_fields(MAPPINGS)


def limit(used: int, max_: int = 15000) -> dict[str, str]:
    return {"Sforce-Limit-Info": f"api-usage={used}/{max_}"}


@pytest.fixture
def sf():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{DATA}/sobjects/Account/describe", json=describe(all_fields()), headers=limit(10))
        yield mock


def test_pages_follow_next_records_url_and_keep_deleted_records(sf, store):
    sf.get(f"{DATA}/queryAll/", json={"totalSize": 3, "done": False, "nextRecordsUrl": "/services/data/v59.0/query/01gX-2000",
                                      "records": [account(1, "2026-10-01T00:00:00.000+0000"), account(2, "2026-10-02T00:00:00.000+0000", True)]},
           headers=limit(11))
    sf.get(f"{DATA}/query/01gX-2000", json={"totalSize": 3, "done": True, "records": [account(3, "2026-10-03T00:00:00.000+0000")]},
           headers=limit(12))
    summary = pull(store, MAPPINGS, ENV, only=["salesforce"])
    assert summary.systems["salesforce"].records == {"Account": 3}
    assert summary.systems["salesforce"].deleted == {"Account": 1}
    assert [rid for rid, _ in store.records("salesforce", "Account")] == ["001000000000000001", "001000000000000003"]
    assert store.cursor("salesforce", "Account") == "2026-10-03T00:00:00.000+0000"
    soql = parse_qs(urlsplit(sf.calls[1].request.url).query)["q"][0]
    selected = re.match(r"SELECT (.*) FROM Account", soql)[1].split(", ")
    assert set(FIELDS) <= set(selected) and "Health_Score__c" in selected  # inputs, and outputs for drift
    assert "WHERE" not in soql and soql.endswith("ORDER BY SystemModstamp ASC, Id ASC")
    assert summary.calls.as_dict()["salesforce"] == {
        "GET sobjects/Account/describe": 1, "GET queryAll": 1, "GET query (next page)": 1}
    assert sf.calls[1].request.headers["Authorization"] == "Bearer 00Dsecret!token"


def test_incremental_pull_starts_at_the_cursor_minus_the_overlap(sf, store):
    with store.transaction():
        store.set_cursor("salesforce", "Account", "2026-10-03T00:00:00.000+0000")
    sf.get(f"{DATA}/queryAll/", json={"totalSize": 0, "done": True, "records": []}, headers=limit(11))
    pull(store, MAPPINGS, ENV, only=["salesforce"])
    soql = parse_qs(urlsplit(sf.calls[1].request.url).query)["q"][0]
    assert "WHERE SystemModstamp >= 2026-10-02T23:55:00Z ORDER BY SystemModstamp ASC" in soql


def test_cursor_never_passes_the_run_start(sf, store):
    from datetime import UTC, datetime

    sf.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [account(1, "2026-12-01T00:00:00.000+0000")]},
           headers=limit(11))
    pull(store, MAPPINGS, ENV, now=datetime(2026, 11, 1, tzinfo=UTC), only=["salesforce"])
    assert store.cursor("salesforce", "Account") == "2026-11-01T00:00:00.000+0000"


def test_5xx_and_dropped_connections_are_retried(sf, store):
    import requests

    sf.get(f"{DATA}/queryAll/", json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "busy"}], status=503)
    sf.get(f"{DATA}/queryAll/", body=requests.ConnectionError("reset by peer"))
    sf.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [account(1, "2026-10-01T00:00:00.000+0000")]},
           headers=limit(13))
    summary = pull(store, MAPPINGS, ENV, only=["salesforce"])
    assert summary.systems["salesforce"].records == {"Account": 1}
    assert summary.calls.retries == {("salesforce", "503"): 1, ("salesforce", "drop"): 1}


def test_request_limit_exceeded_stops_without_retrying(sf, store):
    sf.get(f"{DATA}/queryAll/", json=[{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}],
           status=403)
    summary = pull(store, MAPPINGS, ENV, only=["salesforce"])
    assert summary.stopped and "daily API request limit" in summary.stopped
    assert len([c for c in sf.calls if "queryAll" in c.request.url]) == 1


def test_the_reserve_stops_between_pages_and_keeps_what_was_committed(sf, store):
    sf.get(f"{DATA}/queryAll/", json={"totalSize": 4, "done": False, "nextRecordsUrl": "/services/data/v59.0/query/01gX-2000",
                                      "records": [account(1, "2026-10-01T00:00:00.000+0000")]},
           headers=limit(13600))  # 90.7% used: past the default 10% reserve
    summary = pull(store, MAPPINGS, ENV, only=["salesforce"])
    assert summary.stopped and "13,600/15,000" in summary.stopped and "reserve of 10%" in summary.stopped
    assert [rid for rid, _ in store.records("salesforce", "Account")] == ["001000000000000001"]
    assert store.cursor("salesforce", "Account") == "2026-10-01T00:00:00.000+0000"
    assert not any("01gX-2000" in c.request.url for c in sf.calls)


def test_a_missing_mapped_field_is_named_with_its_mapping_line(store):
    with responses.RequestsMock() as mock:
        mock.get(f"{DATA}/sobjects/Account/describe", json=describe([f for f in all_fields() if f != "NPS__c"]))
        with pytest.raises(ConfigError) as caught:
            pull(store, MAPPINGS, ENV, only=["salesforce"])
    [problem] = caught.value.problems
    assert problem.file.endswith("inputs.yaml") and problem.line and problem.key == "inputs.nps.salesforce"
    assert "NPS__c does not exist on Salesforce Account" in problem.message
    assert list(store.records("salesforce", "Account")) == []


def test_expired_access_token_is_a_clear_error_without_the_token(sf, store):
    sf.get(f"{DATA}/queryAll/", json=[{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}], status=401)
    with pytest.raises(ApiError) as caught:
        pull(store, MAPPINGS, ENV, only=["salesforce"])
    text = str(caught.value)
    assert "INVALID_SESSION_ID" in text and "cannot be renewed" in text and "00Dsecret!token" not in text


def test_password_login_renews_an_expired_session(store):
    env = {"SALESFORCE_USERNAME": "ops@acme.com", "SALESFORCE_PASSWORD": "pw-secret", "SALESFORCE_SECURITY_TOKEN": "tok",
           "SALESFORCE_DOMAIN": "acme.my", "HEALTHSYNC_RETRY_BASE": "0.001"}
    logins = iter(["SESSION1", "SESSION2"])

    def soap(request):
        assert "pw-secrettok" in str(request.body)
        return 200, {}, (f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><sessionId>{next(logins)}</sessionId>'
                         f"<serverUrl>{BASE}/services/Soap/u/59.0/00D</serverUrl></soapenv:Envelope>")

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback("POST", re.compile(r"https://acme\.my\.salesforce\.com/services/Soap/u/.*"), callback=soap)
        mock.get(f"{DATA}/sobjects/Account/describe", json=describe(all_fields()))
        mock.get(f"{DATA}/queryAll/", json=[{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}], status=401)
        mock.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [account(1, "2026-10-01T00:00:00.000+0000")]})
        summary = pull(store, MAPPINGS, env, only=["salesforce"])
        queries = [c.request for c in mock.calls if "queryAll" in c.request.url]
    assert summary.systems["salesforce"].records == {"Account": 1}
    assert [q.headers["Authorization"] for q in queries] == ["Bearer SESSION1", "Bearer SESSION2"]
    assert summary.calls.as_dict()["salesforce"]["POST login (SOAP)"] == 2


def test_plain_http_and_incomplete_settings_are_refused():
    with pytest.raises(SettingsError, match="plain http is refused"):
        SalesforceSource.from_env(Context({**ENV, "SALESFORCE_INSTANCE_URL": "http://acme.my.salesforce.com"}, CallLog(), RetryPolicy()))
    with pytest.raises(SettingsError, match="incomplete"):
        SalesforceSource.from_env(Context({"SALESFORCE_USERNAME": "ops@acme.com"}, CallLog(), RetryPolicy()))
    assert SalesforceSource.from_env(Context({}, CallLog(), RetryPolicy())) is None


def test_secrets_can_come_from_files(tmp_path, sf, store):
    secret = tmp_path / "token"
    secret.write_text("00Dfrom-a-file\n")
    env = {**{k: v for k, v in ENV.items() if k != "SALESFORCE_ACCESS_TOKEN"}, "SALESFORCE_ACCESS_TOKEN_FILE": str(secret)}
    sf.get(f"{DATA}/queryAll/", json={"totalSize": 0, "done": True, "records": []})
    pull(store, MAPPINGS, env, only=["salesforce"])
    assert sf.calls[1].request.headers["Authorization"] == "Bearer 00Dfrom-a-file"
    assert json.dumps(dict(sf.calls[1].request.headers)).count("00Dfrom-a-file") == 1
