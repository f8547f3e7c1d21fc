"""Salesforce client, mocked with `responses` (simple-salesforce talks through requests)."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from conftest import NO_OUTCOMES

from connector.config.mappings import load_mappings
from connector.errors import ConfigError
from connector.http import CallLog, RetryPolicy, SettingsError
from connector.pipeline import pull
from connector.sources.base import SourceSetup
from connector.sources.salesforce.client import SalesforceSource

BASE = "https://acme.my.salesforce.com"
DATA = f"{BASE}/services/data/v59.0"
ENV = {"SALESFORCE_INSTANCE_URL": BASE, "SALESFORCE_ACCESS_TOKEN": "00Dsecret!token", "HEALTHSYNC_RETRY_BASE": "0.001"}
MAPPINGS = load_mappings(NO_OUTCOMES)
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
    source = SalesforceSource.from_env(SourceSetup(ENV, CallLog(), RetryPolicy()))
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
    summary = pull(store, MAPPINGS, ENV, only=["salesforce"])  # a rejected credential: the system is out of the run
    text = summary.failed["salesforce"]
    assert "INVALID_SESSION_ID" in text and "cannot be renewed" in text and "00Dsecret!token" not in text
    assert "check SALESFORCE_INSTANCE_URL, SALESFORCE_ACCESS_TOKEN" in text


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
        SalesforceSource.from_env(SourceSetup({**ENV, "SALESFORCE_INSTANCE_URL": "http://acme.my.salesforce.com"}, CallLog(), RetryPolicy()))
    with pytest.raises(SettingsError, match="incomplete"):
        SalesforceSource.from_env(SourceSetup({"SALESFORCE_USERNAME": "ops@acme.com"}, CallLog(), RetryPolicy()))
    assert SalesforceSource.from_env(SourceSetup({}, CallLog(), RetryPolicy())) is None


def test_secrets_can_come_from_files(tmp_path, sf, store):
    secret = tmp_path / "token"
    secret.write_text("00Dfrom-a-file\n")
    env = {**{k: v for k, v in ENV.items() if k != "SALESFORCE_ACCESS_TOKEN"}, "SALESFORCE_ACCESS_TOKEN_FILE": str(secret)}
    sf.get(f"{DATA}/queryAll/", json={"totalSize": 0, "done": True, "records": []})
    pull(store, MAPPINGS, env, only=["salesforce"])
    assert sf.calls[1].request.headers["Authorization"] == "Bearer 00Dfrom-a-file"
    assert json.dumps(dict(sf.calls[1].request.headers)).count("00Dfrom-a-file") == 1


# ------------------------------------------------------------------ writes


def writer(**env: str) -> SalesforceSource:
    source = SalesforceSource.from_env(SourceSetup({**ENV, "SALESFORCE_BULK_POLL_SECONDS": "0", **env}, CallLog(), RetryPolicy()))
    assert source is not None
    return source


ALLOWED = {"Health_Score__c", "Health_Status__c", "Health_Drivers__c"}


def test_a_collection_merges_duplicate_ids_and_keeps_per_record_results():
    with responses.RequestsMock() as mock:
        mock.patch(f"{DATA}/composite/sobjects", json=[
            {"id": "001A", "success": True, "errors": []},
            {"id": "001B", "success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}]},
        ], headers=limit(20))
        results = writer().write([("001A", {"Health_Score__c": 70.0}), ("001B", {"Health_Score__c": 20.0}),
                                  ("001A", {"Health_Status__c": "Green"})], ALLOWED)
        body = json.loads(mock.calls[0].request.body)
    assert [r["id"] for r in body["records"]] == ["001A", "001B"]  # merged: one entry per id
    assert body["records"][0] == {"attributes": {"type": "Account"}, "id": "001A", "Health_Score__c": 70.0,
                                  "Health_Status__c": "Green"}
    assert body["allOrNone"] is False
    assert [(r.record_id, r.ok, r.transient) for r in results] == [("001A", True, False), ("001B", False, True)]


def test_a_bulk_job_uploads_csv_polls_and_reads_every_record_back():
    job = "750000000000001AAA"
    path = f"{DATA}/jobs/ingest/{job}"
    updates = [("001000000000000001", {"Health_Score__c": 72.5, "Health_Status__c": "Green"}),
               ("001000000000000002", {"Health_Score__c": None}),
               ("001000000000000003", {"Health_Drivers__c": 'Usage 10 (-5), "Billing"'}),
               ("001000000000000004", {"Health_Score__c": 10.0}),
               ("001000000000000005", {"Health_Score__c": 11.0})]
    with responses.RequestsMock() as mock:
        mock.post(f"{DATA}/jobs/ingest", json={"id": job, "state": "Open"}, headers=limit(20))
        mock.put(f"{path}/batches", status=201, headers=limit(21))
        mock.patch(path, json={"id": job, "state": "UploadComplete"}, headers=limit(22))
        mock.get(path, json={"id": job, "state": "InProgress"}, headers=limit(23))
        mock.get(path, json={"id": job, "state": "JobComplete", "numberRecordsProcessed": 4}, headers=limit(24))
        mock.get(f"{path}/successfulResults", body='"sf__Id","sf__Created","Id"\n"001000000000000001","false",'
                 '"001000000000000001"\n"001000000000000003","false","001000000000000003"\n',
                 content_type="text/csv", headers=limit(25))
        mock.get(f"{path}/failedResults", body='"sf__Id","sf__Error","Id"\n"001000000000000002",'
                 '"ENTITY_IS_DELETED:entity is deleted:--","001000000000000002"\n"001000000000000004",'
                 '"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record:--","001000000000000004"\n',
                 content_type="text/csv", headers=limit(26))
        jobs: list[str | None] = []
        source = writer()
        results = source.write_bulk(updates, ALLOWED, journal=jobs.append)
        created = json.loads(mock.calls[0].request.body)
        upload = mock.calls[1].request
        closed = json.loads(mock.calls[2].request.body)
    assert created == {"object": "Account", "operation": "update", "contentType": "CSV", "lineEnding": "LF",
                       "columnDelimiter": "COMMA"}
    assert upload.headers["Content-Type"] == "text/csv"
    lines = upload.body.decode().splitlines()
    assert lines[0] == "Id,Health_Drivers__c,Health_Score__c,Health_Status__c"
    assert lines[1] == "001000000000000001,,72.5,Green"  # empty: left alone
    assert lines[2] == "001000000000000002,,#N/A,"  # #N/A: set to null
    assert lines[3] == '001000000000000003,"Usage 10 (-5), ""Billing""",,'
    assert closed == {"state": "UploadComplete"}
    assert jobs == [job, None]
    by_id = {r.record_id: r for r in results}
    assert by_id["001000000000000001"].ok and by_id["001000000000000003"].ok
    assert not by_id["001000000000000002"].ok and not by_id["001000000000000002"].transient
    assert by_id["001000000000000002"].error == "ENTITY_IS_DELETED: entity is deleted"
    assert not by_id["001000000000000004"].ok and by_id["001000000000000004"].transient
    assert "001000000000000005" not in by_id  # in neither list: unconfirmed, for the caller to re-check
    assert source.ctx.calls.as_dict()["salesforce"] == {
        "POST jobs/ingest": 1, "PUT jobs/ingest/{id}/batches": 1, "PATCH jobs/ingest/{id}": 1, "GET jobs/ingest/{id}": 2,
        "GET jobs/ingest/{id}/successfulResults": 1, "GET jobs/ingest/{id}/failedResults": 1}


def test_a_failed_bulk_job_reports_its_reason_on_every_record():
    job = "750000000000002AAA"
    path = f"{DATA}/jobs/ingest/{job}"
    with responses.RequestsMock() as mock:
        mock.post(f"{DATA}/jobs/ingest", json={"id": job, "state": "Open"})
        mock.put(f"{path}/batches", status=201)
        mock.patch(path, json={"id": job, "state": "UploadComplete"})
        mock.get(path, json={"id": job, "state": "Failed", "errorMessage": "InvalidBatch : Field name not found : X"})
        mock.get(f"{path}/successfulResults", body='"sf__Id","sf__Created","Id"\n', content_type="text/csv")
        mock.get(f"{path}/failedResults", body='"sf__Id","sf__Error","Id"\n', content_type="text/csv")
        results = writer().write_bulk([("001000000000000001", {"Health_Score__c": 1.0})], ALLOWED)
    assert [(r.ok, r.transient) for r in results] == [(False, False)]
    assert "Field name not found" in (results[0].error or "")


def test_a_refused_upload_aborts_the_job_and_leaves_the_records_to_retry():
    job = "750000000000003AAA"
    path = f"{DATA}/jobs/ingest/{job}"
    with responses.RequestsMock() as mock:
        mock.post(f"{DATA}/jobs/ingest", json={"id": job, "state": "Open"})
        mock.put(f"{path}/batches", status=400, json=[{"errorCode": "INVALIDJOB", "message": "Found multiple contents"}])
        mock.get(path, json={"id": job, "state": "Open"})
        mock.patch(path, json={"id": job, "state": "Aborted"})
        results = writer().write_bulk([("001000000000000001", {"Health_Score__c": 1.0})], ALLOWED)
        aborted = json.loads(mock.calls[-1].request.body)
    assert aborted == {"state": "Aborted"}
    assert [(r.ok, r.transient) for r in results] == [(False, True)]
    assert "INVALIDJOB" in (results[0].error or "")


def test_bulk_settings_are_checked():
    assert writer().bulk.threshold == 10_000
    assert writer(SALESFORCE_BULK_THRESHOLD="50").bulk.threshold == 50
    with pytest.raises(SettingsError, match="SALESFORCE_BULK_JOB_RECORDS"):
        writer(SALESFORCE_BULK_JOB_RECORDS="0")
    with pytest.raises(SettingsError, match="SALESFORCE_BULK_THRESHOLD"):
        writer(SALESFORCE_BULK_THRESHOLD="many")
