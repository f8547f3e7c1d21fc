"""The API sandbox itself, over real HTTP with plain requests."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from sandbox.dataset import HS_OUTPUTS, Dataset, build_dataset
from sandbox.server import Faults, Sandbox

NOW = datetime(2026, 11, 1, tzinfo=UTC)
HS = {"Authorization": "Bearer pat-sandbox-0000"}
STRIPE = {"Authorization": "Bearer rk_test_sandbox"}
USER = "demo@healthsync.sandbox"
ZD = (f"{USER}/token", "sandbox-zendesk-token")
SOAP = """<?xml version="1.0" encoding="utf-8" ?><env:Envelope
 xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>
 <n1:login xmlns:n1="urn:partner.soap.sforce.com"><n1:username>{user}</n1:username>
 <n1:password>{password}</n1:password></n1:login></env:Body></env:Envelope>"""


@pytest.fixture
def ds() -> Dataset:
    return build_dataset(300, seed=7, now=NOW)


@pytest.fixture
def sb(ds: Dataset) -> Iterator[Sandbox]:
    with Sandbox(ds) as sandbox:
        yield sandbox


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
        yield session


class SF:
    """A tiny Salesforce client: SOAP login, then GET/PATCH with the session."""

    def __init__(self, sb: Sandbox, http: requests.Session) -> None:
        self.sb, self.http = sb, http
        self.login()

    def login(self, password: str = "sandbox-passwordsandbox-token") -> requests.Response:
        response = self.http.post(f"{self.sb.urls['salesforce']}/services/Soap/u/59.0",
                                  data=SOAP.format(user=USER, password=password),
                                  headers={"Content-Type": "text/xml", "SOAPAction": "login"},
                                  verify=self.sb.ca_file)
        if response.status_code == 200:
            self.sid = re.search(r"<sessionId>(.+?)</sessionId>", response.text)[1]
        return response

    def get(self, path: str, **kwargs: object) -> requests.Response:
        url = path if path.startswith("http") else self.sb.urls["salesforce"] + path
        headers = {"Authorization": f"Bearer {self.sid}", **kwargs.pop("headers", {})}
        return self.http.get(url, headers=headers, verify=self.sb.ca_file, **kwargs)

    def query(self, q: str, all: bool = False, **kwargs: object) -> requests.Response:
        return self.get(f"/services/data/v59.0/{'queryAll' if all else 'query'}",
                        params={"q": q}, **kwargs)

    def patch(self, records: list[dict[str, object]], all_or_none: bool = False
              ) -> requests.Response:
        url = f"{self.sb.urls['salesforce']}/services/data/v59.0/composite/sobjects"
        return self.http.patch(url,
                               json={"allOrNone": all_or_none, "records": records},
                               headers={"Authorization": f"Bearer {self.sid}"},
                               verify=self.sb.ca_file)

    def bulk(self, method: str, path: str = "", **kwargs: object) -> requests.Response:
        """A Bulk API 2.0 ingest request; path is relative to /jobs/ingest (or a contentUrl)."""
        url = f"{self.sb.urls['salesforce']}/" + (path if path.startswith("services/") else
                                                 f"services/data/v59.0/jobs/ingest{path}")
        headers = {"Authorization": f"Bearer {self.sid}", **kwargs.pop("headers", {})}
        return self.http.request(method, url, headers=headers, verify=self.sb.ca_file, **kwargs)

    def bulk_job(self, data: str, **options: str) -> str:
        """Create an Account update job, upload data, close it: the job id."""
        job = self.bulk("POST", json={"object": "Account", "operation": "update",
                                      "contentType": "CSV", **options}).json()
        assert self.bulk("PUT", job["contentUrl"], data=data.encode(),
                         headers={"Content-Type": "text/csv"}).status_code == 201
        assert self.bulk("PATCH", f"/{job['id']}", json={"state": "UploadComplete"}).json()[
            "state"] == "UploadComplete"
        return job["id"]

    def bulk_rows(self, job: str, kind: str) -> list[dict[str, str]]:
        response = self.bulk("GET", f"/{job}/{kind}")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        return list(csv.DictReader(io.StringIO(response.text)))


def zd_export(sb: Sandbox, http: requests.Session, **params: object) -> tuple[list[dict], str]:
    tickets, url = [], f"{sb.urls['zendesk']}/api/v2/incremental/tickets/cursor.json"
    while True:
        body = http.get(url, params=params, auth=ZD).json()
        tickets += body["tickets"]
        if body["end_of_stream"]:
            return tickets, body["after_cursor"]
        url, params = body["after_url"], {}


# ----------------------------------------------------------------------------- dataset

def test_build_dataset_is_deterministic_and_messy() -> None:
    a, b = build_dataset(300, seed=7, now=NOW), build_dataset(300, seed=7, now=NOW)
    assert a == b
    assert build_dataset(300, seed=8, now=NOW).sf_accounts != a.sf_accounts
    accounts = list(a.sf_accounts.values())
    assert len(accounts) == 300 and all(len(i) == 18 and i.startswith("001") for i in a.sf_accounts)
    assert sum(r["IsDeleted"] for r in accounts) == 3
    assert any(r["Website"] is None for r in accounts)
    assert {"Müller", "東京", "Łódź"} <= {w for r in accounts for w in r["Name"].split()}
    hosts = [re.sub(r"^(https?://)?(www\.)?", "", r["Website"].lower()).strip("/").split("/")[0]
             for r in accounts if r["Website"]]
    assert len(hosts) > len(set(hosts))  # domains shared by two accounts
    assert max(r["SystemModstamp"] for r in accounts) < "2026-10-31T00:00:00.000+0000"
    stamps = [c["properties"]["hs_lastmodifieddate"] for c in a.hs_companies.values()]
    assert max(stamps.count(s) for s in stamps) >= 20  # a bulk import's run
    assert any(c["archived"] for c in a.hs_companies.values())
    linked = {r["Stripe_Customer_Id__c"] for r in accounts}
    assert any(c not in linked for c in a.stripe_customers)
    assert any("@gmail.com" in (c["email"] or "") for c in a.stripe_customers.values())
    assert {s["status"] for s in a.stripe_subscriptions.values()} >= {"active", "canceled"}
    assert any(t["status"] == "deleted" for t in a.zd_tickets.values())
    assert a.stripe_events == []


def test_mutate_changes_a_fraction_of_each_system(ds: Dataset) -> None:
    before = max(r["SystemModstamp"] for r in ds.sf_accounts.values())
    changed = ds.mutate(fraction=0.05, seed=3)
    assert len(changed["sf_accounts"]) == round(0.05 * len(ds.sf_accounts))
    assert len(changed["hs_companies"]) == round(0.05 * len(ds.hs_companies))
    assert len(changed["stripe"]) == round(0.05 * len(ds.stripe_customers)) == len(ds.stripe_events)
    assert len(changed["zd_tickets"]) == round(0.05 * len(ds.zd_tickets))
    assert all(ds.sf_accounts[i]["SystemModstamp"] > before for i in changed["sf_accounts"])
    assert {e["data"]["object"]["id"] for e in ds.stripe_events} == set(changed["stripe"])


# ----------------------------------------------------------------------------- Salesforce

def test_soql_paging_returns_each_account_once(sb: Sandbox, ds: Dataset,
                                               http: requests.Session) -> None:
    sf = SF(sb, http)
    seen, body = [], sf.query("SELECT Id, Name FROM Account",
                              headers={"Sforce-Query-Options": "batchSize=200"}).json()
    while True:
        seen += body["records"]
        if body["done"]:
            break
        assert "nextRecordsUrl" in body and len(body["records"]) == 200
        body = sf.get(body["nextRecordsUrl"]).json()
    live = [i for i, r in ds.sf_accounts.items() if not r["IsDeleted"]]
    assert [r["Id"] for r in seen] == live and body["totalSize"] == 297
    assert set(seen[0]) == {"attributes", "Id", "Name"}
    assert seen[0]["attributes"] == {"type": "Account",
                                     "url": f"/services/data/v59.0/sobjects/Account/{live[0]}"}
    everything = sf.query("SELECT Id, IsDeleted FROM Account", all=True).json()
    assert everything["totalSize"] == 300
    assert sum(r["IsDeleted"] for r in everything["records"]) == 3
    assert sb.served["salesforce"] == 597


def test_soql_where_order_and_limit(sb: Sandbox, ds: Dataset, http: requests.Session) -> None:
    sf = SF(sb, http)
    since = sorted(r["SystemModstamp"] for r in ds.sf_accounts.values())[150]
    after = sorted(ds.sf_accounts)[40]
    q = (f"select Id, SystemModstamp, NPS__c from Account where SystemModstamp >= "
         f"{since[:19]}.{since[20:23]}Z and Id > '{after}' "
         "order by SystemModstamp asc, Id limit 500")
    body = sf.query(q).json()
    expected = sorted((r["SystemModstamp"], i) for i, r in ds.sf_accounts.items()
                      if r["SystemModstamp"] >= since and i > after and not r["IsDeleted"])
    assert [(r["SystemModstamp"], r["Id"]) for r in body["records"]] == expected
    assert all(isinstance(r["NPS__c"], float | None) for r in body["records"])
    offset = sf.query(f"SELECT Id FROM Account WHERE SystemModstamp >= {since[:19]}-01:00").json()
    assert offset["totalSize"] <= body["totalSize"] + 40  # an hour later than `since`
    count = sf.query("SELECT COUNT() FROM Account WHERE CSM_Rating__c = null").json()
    assert count["totalSize"] == sum(r["CSM_Rating__c"] is None and not r["IsDeleted"]
                                     for r in ds.sf_accounts.values())


def test_soql_errors(sb: Sandbox, http: requests.Session) -> None:
    sf = SF(sb, http)
    bad = sf.query("SELECT Foo__c FROM Account")
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "INVALID_FIELD"
    assert bad.json()[0]["message"].startswith(
        "\nSELECT Foo__c FROM Account\n       ^\nERROR at Row:1:Column:8\nNo such column 'Foo__c'")
    assert sf.query("SELECT Id FROM").json()[0]["errorCode"] == "MALFORMED_QUERY"
    assert sf.query("SELECT Id FROM Contact").json()[0]["errorCode"] == "INVALID_TYPE"
    quoted = sf.query("SELECT Id FROM Account WHERE SystemModstamp > '2026-01-01T00:00:00Z'")
    assert quoted.json()[0]["errorCode"] == "INVALID_QUERY_FILTER_OPERATOR"
    gone = sf.get("/services/data/v59.0/query/01gNOPE-2000")
    assert gone.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_session_expiry_then_soap_relogin(ds: Dataset, http: requests.Session) -> None:
    with Sandbox(ds, faults=Faults(expire_session_after=2)) as sb:
        sf = SF(sb, http)
        q = "SELECT Id FROM Account LIMIT 1"
        assert [sf.query(q).status_code for _ in range(2)] == [200, 200]
        expired = sf.query(q)
        assert expired.status_code == 401
        assert expired.json() == [{"message": "Session expired or invalid",
                                   "errorCode": "INVALID_SESSION_ID"}]
        assert sf.login().status_code == 200
        assert [sf.query(q).status_code for _ in range(3)] == [200, 200, 200]  # only once
        assert sb.faulted[("salesforce", "session")] == 1
        sb.expire_sessions()
        assert sf.query(q).status_code == 401
        denied = sf.login(password="wrong")
        assert denied.status_code == 500 and "<sf:exceptionCode>INVALID_LOGIN<" in denied.text
        assert sb.calls[("salesforce", "POST /services/Soap/u/{version}")] == 3


def test_limits_and_usage_header(ds: Dataset, http: requests.Session) -> None:
    with Sandbox(ds, daily_api_limit=4) as sb:
        sf = SF(sb, http)
        limits = sf.get("/services/data/v59.0/limits")
        assert limits.json()["DailyApiRequests"] == {"Max": 4, "Remaining": 3}
        assert limits.headers["Sforce-Limit-Info"] == "api-usage=1/4"
        versions = http.get(f"{sb.urls['salesforce']}/services/data/", verify=sb.ca_file).json()
        assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions
        fields = sf.get("/services/data/v59.0/sobjects/Account/describe").json()["fields"]
        by_name = {f["name"]: f for f in fields}
        assert by_name["Health_Score__c"]["updateable"] and not by_name["Id"]["updateable"]
        assert by_name["SystemModstamp"]["type"] == "datetime"
        assert [sf.query("SELECT Id FROM Account LIMIT 1").status_code for _ in range(3)] == \
               [200, 200, 403]
        assert sf.query("SELECT Id FROM Account").json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_composite_patch_partial_failure(sb: Sandbox, ds: Dataset,
                                         http: requests.Session) -> None:
    sf = SF(sb, http)
    live, deleted = (next(i for i, r in ds.sf_accounts.items() if r["IsDeleted"] == flag)
                     for flag in (False, True))
    old_stamp = ds.sf_accounts[live]["SystemModstamp"]
    record = {"attributes": {"type": "Account"}}
    body = sf.patch([{**record, "id": live, "Health_Score__c": 72, "Health_Status__c": "Green",
                      "Health_Scored_At__c": "2026-11-02T10:00:00Z"},
                     {**record, "id": deleted, "Health_Score__c": 10},
                     {**record, "id": "001Hs00000000zzIAA", "Health_Score__c": 10},
                     {**record, "id": live, "SystemModstamp": "2026-01-01T00:00:00Z"}]).json()
    assert [r["success"] for r in body] == [True, False, False, False]
    assert [r["errors"][0]["statusCode"] for r in body[1:]] == [
        "ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_FIELD_FOR_INSERT_UPDATE"]
    acc = ds.sf_accounts[live]
    assert acc["Health_Score__c"] == 72.0 and acc["Health_Status__c"] == "Green"
    assert acc["Health_Scored_At__c"] == "2026-11-02T10:00:00.000+0000"
    assert acc["SystemModstamp"] > old_stamp
    rolled = sf.patch([{**record, "id": live, "Health_Score__c": 1},
                       {**record, "id": live, "Health_Score__c": "high"}], all_or_none=True).json()
    assert [e["errors"][0]["statusCode"] for e in rolled] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "INVALID_TYPE_ON_FIELD_IN_RECORD"]
    assert acc["Health_Score__c"] == 72.0
    too_many = sf.patch([{**record, "id": live}] * 201)
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    fetched = sf.get(f"/services/data/v59.0/sobjects/Account/{live}").json()
    assert fetched["Health_Score__c"] == 72.0
    assert sf.get("/services/data/v59.0/sobjects/Account/001Hs00000000zzIAA").status_code == 404


def test_bulk_update_job_polls_then_applies(sb: Sandbox, ds: Dataset,
                                            http: requests.Session) -> None:
    sf = SF(sb, http)
    live = [i for i, r in ds.sf_accounts.items() if not r["IsDeleted"]][:3]
    deleted = next(i for i, r in ds.sf_accounts.items() if r["IsDeleted"])
    a, b, c = (ds.sf_accounts[i] for i in live)
    a.update(CSM_Rating__c=4.0, NPS__c=30.0)
    before = {i: dict(ds.sf_accounts[i]) for i in (*live, deleted)}

    created = sf.bulk("POST", json={"object": "Account", "operation": "update",
                                    "contentType": "CSV", "lineEnding": "LF",
                                    "columnDelimiter": "COMMA"})
    assert created.status_code == 200
    job = created.json()
    jid = job["id"]
    assert len(jid) == 18 and jid.startswith("750") and job["state"] == "Open"
    assert job["contentUrl"] == f"services/data/v59.0/jobs/ingest/{jid}/batches"
    assert (job["operation"], job["object"], job["apiVersion"]) == ("update", "Account", 59.0)
    assert (job["lineEnding"], job["columnDelimiter"]) == ("LF", "COMMA")
    assert job["createdDate"].endswith("+0000") and created.headers["Sforce-Limit-Info"]

    data = ("Id,Health_Score__c,CSM_Rating__c,NPS__c,Health_Drivers__c\n"
            f'{live[0]},72.5,#N/A,,"Usage up, tickets ""down"""\n'
            f"{live[1]},high,,,\n"
            f"{deleted},10,,,\n"
            f"{live[2]},40,2,,\n")
    upload = sf.bulk("PUT", job["contentUrl"], data=data.encode(),
                     headers={"Content-Type": "text/csv"})
    assert upload.status_code == 201 and upload.content == b""
    again = sf.bulk("PUT", job["contentUrl"], data=data.encode())
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "BULK_API_ERROR"
    assert "Found multiple contents for job" in again.json()[0]["message"]
    early = sf.bulk("GET", f"/{jid}/successfulResults")
    assert early.status_code == 400 and early.json()[0]["errorCode"] == "INVALIDJOBSTATE"

    closed = sf.bulk("PATCH", f"/{jid}", json={"state": "UploadComplete"})
    assert closed.status_code == 200 and closed.json()["state"] == "UploadComplete"
    polled = sf.bulk("GET", f"/{jid}").json()
    assert polled["state"] == "InProgress" and polled["numberRecordsProcessed"] == 0
    assert {i: ds.sf_accounts[i] for i in before} == before  # nothing applied yet
    done = sf.bulk("GET", f"/{jid}").json()
    assert done["state"] == "JobComplete" and "errorMessage" not in done
    assert (done["numberRecordsProcessed"], done["numberRecordsFailed"]) == (4, 2)
    assert sb.bulk_jobs[jid].state == "JobComplete"
    assert sf.bulk("GET", f"/{jid}").json()["numberRecordsProcessed"] == 4  # applied once

    assert a["Health_Score__c"] == 72.5 and a["CSM_Rating__c"] is None  # #N/A: null
    assert a["NPS__c"] == 30.0  # an empty cell leaves the field as it was
    assert a["Health_Drivers__c"] == 'Usage up, tickets "down"'
    assert a["SystemModstamp"] > before[live[0]]["SystemModstamp"]
    assert a["LastModifiedDate"] == a["SystemModstamp"]
    assert (c["Health_Score__c"], c["CSM_Rating__c"]) == (40.0, 2.0)
    assert b == before[live[1]] and ds.sf_accounts[deleted] == before[deleted]

    text = sf.bulk("GET", f"/{jid}/successfulResults").text
    assert text.startswith('"sf__Id","sf__Created",Id,Health_Score__c,CSM_Rating__c,NPS__c,'
                           'Health_Drivers__c\n')
    ok = sf.bulk_rows(jid, "successfulResults")
    assert [(r["sf__Id"], r["sf__Created"], r["Health_Score__c"]) for r in ok] == [
        (live[0], "false", "72.5"), (live[2], "false", "40")]
    assert ok[0]["CSM_Rating__c"] == "#N/A" and ok[0]["Health_Drivers__c"] == \
        'Usage up, tickets "down"'
    failed = {r["sf__Id"]: r["sf__Error"] for r in sf.bulk_rows(jid, "failedResults")}
    assert failed[deleted] == "ENTITY_IS_DELETED:entity is deleted:--"
    assert failed[live[1]] == ("INVALID_TYPE_ON_FIELD_IN_RECORD:Health Score: value not of "
                               "required type: high:Health_Score__c --")
    unprocessed = sf.bulk("GET", f"/{jid}/unprocessedrecords/")
    assert unprocessed.text == "Id,Health_Score__c,CSM_Rating__c,NPS__c,Health_Drivers__c\n"

    abort = sf.bulk("PATCH", f"/{jid}", json={"state": "Aborted"})
    assert abort.status_code == 400 and abort.json() == [{
        "message": "Aborting already Completed Job not allowed", "errorCode": "INVALIDJOBSTATE"}]
    assert [j["id"] for j in sf.bulk("GET").json()["records"]] == [jid]
    assert sb.calls[("salesforce", "GET /jobs/ingest/{id}")] == 3
    assert sb.calls[("salesforce", "PUT /jobs/ingest/{id}/batches")] == 2
    assert sf.bulk("DELETE", f"/{jid}").status_code == 204
    gone = sf.bulk("GET", f"/{jid}")
    assert gone.status_code == 404 and gone.json()[0]["errorCode"] == "NOT_FOUND"
    usage = int(gone.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])
    assert usage == sb.sf_usage == sum(n for (family, key), n in sb.calls.items()
                                       if family == "salesforce" and "Soap" not in key)
    limits = sf.get("/services/data/v59.0/limits").json()
    assert limits["DailyBulkApiBatches"]["Remaining"] == 14999


def test_bulk_jobs_that_fail_abort_or_are_refused(sb: Sandbox, ds: Dataset,
                                                  http: requests.Session) -> None:
    sf = SF(sb, http)
    live = [i for i, r in ds.sf_accounts.items() if not r["IsDeleted"]][:2]
    before = {i: dict(ds.sf_accounts[i]) for i in live}

    def finish(jid: str) -> dict:
        assert sf.bulk("GET", f"/{jid}").json()["state"] == "InProgress"
        return sf.bulk("GET", f"/{jid}").json()

    rows = f"{live[0]},B\n{live[1]},C\n"
    unknown = sf.bulk_job("Id,Helth_Grade__c\n" + rows)
    failed = finish(unknown)
    assert failed["state"] == "Failed"
    assert failed["errorMessage"] == "InvalidBatch : Field name not found : Helth_Grade__c"
    assert failed["numberRecordsProcessed"] == 0
    assert sf.bulk_rows(unknown, "unprocessedrecords") == [
        {"Id": live[0], "Helth_Grade__c": "B"}, {"Id": live[1], "Helth_Grade__c": "C"}]
    assert sf.bulk_rows(unknown, "failedResults") == []
    crlf = sf.bulk_job(f"Id,Health_Grade__c\r\n{live[0]},B\r\n")  # an LF job given CRLF lines
    assert finish(crlf)["errorMessage"] == ("ClientInputError : LineEnding is invalid on user "
                                            "data. Current LineEnding setting is LF")
    assert {i: ds.sf_accounts[i] for i in live} == before

    piped = sf.bulk_job(f"Id|Health_Grade__c\r\n{live[0]}|A|B\r\n", lineEnding="CRLF",
                        columnDelimiter="PIPE")
    assert "different number of columns" in finish(piped)["errorMessage"]
    piped = sf.bulk_job(f"Id|Health_Grade__c|Name\r\n{live[0]}|A|\r\n", lineEnding="CRLF",
                        columnDelimiter="PIPE")
    assert finish(piped)["state"] == "JobComplete"
    assert ds.sf_accounts[live[0]]["Health_Grade__c"] == "A"
    assert ds.sf_accounts[live[0]]["Name"] == before[live[0]]["Name"]
    assert sf.bulk("GET", f"/{piped}/successfulResults").text == (
        f'"sf__Id"|"sf__Created"|Id|Health_Grade__c|Name\n"{live[0]}"|"false"|"{live[0]}"|"A"|""\n')

    no_id = sf.bulk_job("Health_Grade__c,SystemModstamp\nB,\n")
    assert finish(no_id)["numberRecordsFailed"] == 1
    assert sf.bulk_rows(no_id, "failedResults")[0]["sf__Error"] == \
        "MISSING_ARGUMENT:Id not specified in an update call:--"
    read_only = sf.bulk_job(f"Id,SystemModstamp\n{live[1]},2026-01-01T00:00:00Z\n")
    finish(read_only)
    assert sf.bulk_rows(read_only, "failedResults")[0]["sf__Error"].startswith(
        "INVALID_FIELD_FOR_INSERT_UPDATE:Unable to create/update fields: SystemModstamp.")

    job = sf.bulk("POST", json={"object": "Account", "operation": "update"}).json()
    assert job["lineEnding"] == "LF" and job["columnDelimiter"] == "COMMA"
    early = sf.bulk("PATCH", f"/{job['id']}", json={"state": "JobComplete"})
    assert early.status_code == 400 and early.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert sf.bulk("DELETE", f"/{job['id']}").status_code == 400  # Open jobs cannot be deleted
    assert sf.bulk("PUT", job["contentUrl"], data=f"Id,Health_Grade__c\n{live[1]},D\n"
                   ).status_code == 201
    aborted = sf.bulk("PATCH", f"/{job['id']}", json={"state": "Aborted"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    assert sf.bulk("GET", f"/{job['id']}").json()["state"] == "Aborted"
    assert sf.bulk_rows(job["id"], "unprocessedrecords") == [{"Id": live[1],
                                                              "Health_Grade__c": "D"}]
    late = sf.bulk("PUT", job["contentUrl"], data=b"Id\n")
    assert late.status_code == 400 and late.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert ds.sf_accounts[live[1]]["Health_Grade__c"] is None

    for body in ({"object": "Contact", "operation": "update"},
                 {"object": "Account", "operation": "insert"},
                 {"object": "Account", "operation": "merge"},
                 {"object": "Account", "operation": "update", "lineEnding": "CR"}):
        refused = sf.bulk("POST", json=body)
        assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "INVALIDJOB"
    assert sf.bulk("GET", "/750Hs0000000999AAA").status_code == 404


def test_lock_faults_fail_single_records_in_both_apis(ds: Dataset,
                                                      http: requests.Session) -> None:
    live = [i for i, r in ds.sf_accounts.items() if not r["IsDeleted"]][:40]
    with Sandbox(ds, faults=Faults(rate_lock=0.4, seed=5)) as sb:
        sf = SF(sb, http)
        results = sf.patch([{"id": i, "Health_Score__c": 50} for i in live[:20]]).json()
        locked = [r for r in results if not r["success"]]
        assert 0 < len(locked) < 20
        for r in locked:
            assert r["errors"] == [{"statusCode": "UNABLE_TO_LOCK_ROW", "fields": [], "message":
                                    "unable to obtain exclusive access to this record or 1 "
                                    f"records: {r['id']}"}]
        assert {i for i in live[:20] if ds.sf_accounts[i]["Health_Score__c"] == 50.0} == {
            r["id"] for r in results if r["success"]}

        jid = sf.bulk_job("Id,Health_Score__c\n" + "".join(f"{i},60\n" for i in live[20:]))
        sf.bulk("GET", f"/{jid}")
        assert sf.bulk("GET", f"/{jid}").json()["state"] == "JobComplete"
        failed = sf.bulk_rows(jid, "failedResults")
        assert 0 < len(failed) < 20
        assert all(r["sf__Error"] == "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to "
                   f"this record or 1 records: {r['sf__Id']}:--" for r in failed)
        assert {r["sf__Id"] for r in failed} == {i for i in live[20:]
                                                 if ds.sf_accounts[i]["Health_Score__c"] != 60}
        assert sb.faulted[("salesforce", "lock")] == len(locked) + len(failed)

        sb.faults = Faults(rate_lock=1.0)  # allOrNone: one lock rolls the whole request back
        rolled = sf.patch([{"id": live[0], "Health_Score__c": 1}], all_or_none=True).json()
        assert rolled[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
        assert ds.sf_accounts[live[0]]["Health_Score__c"] != 1


def test_salesforce_missing_fields_and_type_overrides(ds: Dataset,
                                                      http: requests.Session) -> None:
    with pytest.raises(ValueError, match="Nope__c"):
        Sandbox(ds, salesforce_missing=("Nope__c",))
    live = next(i for i, r in ds.sf_accounts.items() if not r["IsDeleted"])
    with Sandbox(ds, salesforce_missing=("Health_Trend__c",),
                 salesforce_types={"Health_Score__c": "string", "NPS__c": "int"}) as sb:
        sf = SF(sb, http)
        fields = {f["name"]: f for f in sf.get(
            "/services/data/v59.0/sobjects/Account/describe").json()["fields"]}
        assert "Health_Trend__c" not in fields and "Health_Grade__c" in fields
        assert (fields["Health_Score__c"]["type"], fields["Health_Score__c"]["length"]) == (
            "string", 255)
        assert fields["NPS__c"]["type"] == "int" and fields["Health_Status__c"]["picklistValues"]
        bad = sf.query("SELECT Id, Health_Trend__c FROM Account")
        assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"
        body = sf.patch([{"id": live, "Health_Trend__c": "up"},
                         {"id": live, "Health_Score__c": 72, "NPS__c": 12},
                         {"id": live, "NPS__c": 7.5}]).json()
        assert body[0]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
        assert body[1]["success"] and body[2]["errors"][0]["statusCode"] == \
            "INVALID_TYPE_ON_FIELD_IN_RECORD"
        assert ds.sf_accounts[live]["Health_Score__c"] == "72"
        assert ds.sf_accounts[live]["NPS__c"] == 12
        jid = sf.bulk_job(f"Id,Health_Trend__c\n{live},up\n")
        sf.bulk("GET", f"/{jid}")
        assert sf.bulk("GET", f"/{jid}").json()["errorMessage"] == \
            "InvalidBatch : Field name not found : Health_Trend__c"
        record = sf.get(f"/services/data/v59.0/sobjects/Account/{live}").json()
        assert "Health_Trend__c" not in record and record["Health_Score__c"] == "72"


# ----------------------------------------------------------------------------- HubSpot

def test_hubspot_list_paging(sb: Sandbox, ds: Dataset, http: requests.Session) -> None:
    url, params, seen = f"{sb.urls['hubspot']}/crm/v3/objects/companies", {
        "limit": 100, "properties": ["name", "csm_rating"]}, []
    while True:
        response = http.get(url, params=params, headers=HS)
        assert response.headers["X-HubSpot-RateLimit-Max"] == "190"
        assert int(response.headers["X-HubSpot-RateLimit-Remaining"]) < 190
        body = response.json()
        seen += body["results"]
        if "paging" not in body:
            break
        params["after"] = body["paging"]["next"]["after"]
    assert [c["id"] for c in seen] == [i for i, c in ds.hs_companies.items() if not c["archived"]]
    assert set(seen[0]["properties"]) == {"name", "csm_rating", "hs_object_id", "createdate",
                                          "hs_lastmodifieddate"}
    assert all(isinstance(v, str | None) for c in seen for v in c["properties"].values())
    archived = http.get(url, params={"archived": "True", "limit": 100}, headers=HS).json()  # SDK
    assert archived["results"] and all(c["archived"] for c in archived["results"])
    denied = http.get(url, headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.json()["category"] == "INVALID_AUTHENTICATION"
    props = http.get(f"{sb.urls['hubspot']}/crm/v3/properties/companies", headers=HS).json()
    read_only = {p["name"] for p in props["results"] if p["modificationMetadata"]["readOnlyValue"]}
    assert read_only == {"hs_object_id", "createdate", "hs_lastmodifieddate"}


def test_hubspot_search_paging_and_cap(ds: Dataset, http: requests.Session) -> None:
    with Sandbox(ds, hubspot_search_cap=60) as sb:
        url = f"{sb.urls['hubspot']}/crm/v3/objects/companies/search"
        since = sorted(c["properties"]["hs_lastmodifieddate"] for c in ds.hs_companies.values())[50]
        ms = str(int(datetime.fromisoformat(since).timestamp() * 1000))
        expected = sorted(int(i) for i, c in ds.hs_companies.items() if not c["archived"]
                          and c["properties"]["hs_lastmodifieddate"] >= since)
        assert len(expected) > 60

        def search(last_id: int, after: int) -> requests.Response:
            filters = [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": ms},
                       {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)}]
            return http.post(url, headers=HS, json={
                "filterGroups": [{"filters": filters}], "properties": ["name"], "limit": 30,
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "after": str(after)})

        first = search(0, 0).json()
        assert first["total"] == len(expected) and first["paging"]["next"]["after"] == "30"
        assert search(0, 30).status_code == 200
        capped = search(0, 60)
        assert capped.status_code == 400 and capped.json()["category"] == "VALIDATION_ERROR"
        assert "60" in capped.json()["message"]
        seen, last, after = [], 0, 0  # the way around the cap: restart after the last id
        while True:
            body = search(last, after).json()
            seen += [int(c["id"]) for c in body["results"]]
            if "paging" not in body:
                break
            after = int(body["paging"]["next"]["after"])
            if after >= 60:
                last, after = seen[-1], 0
        assert seen == expected


def test_hubspot_batch_update_reports_partial_failure(sb: Sandbox, ds: Dataset,
                                                      http: requests.Session) -> None:
    url = f"{sb.urls['hubspot']}/crm/v3/objects/companies/batch/update"
    live = [i for i, c in ds.hs_companies.items() if not c["archived"]][:2]
    archived = next(i for i, c in ds.hs_companies.items() if c["archived"])
    response = http.post(url, headers=HS, json={"inputs": [
        {"id": live[0], "properties": {"health_score": 72.0, "health_status": "Green"}},
        {"id": archived, "properties": {"health_score": 1}},
        {"id": live[1], "properties": {"hs_lastmodifieddate": "2026-01-01T00:00:00Z"}},
        {"id": "999", "properties": {"health_score": 1}}]})
    assert response.status_code == 207
    body = response.json()
    assert [r["id"] for r in body["results"]] == [live[0]] and body["numErrors"] == 3
    assert {(e["category"], tuple(e["context"]["ids"])) for e in body["errors"]} == {
        ("OBJECT_NOT_FOUND", (archived, "999")), ("VALIDATION_ERROR", (live[1],))}
    company = ds.hs_companies[live[0]]
    assert company["properties"]["health_score"] == "72" and company["updatedAt"] > "2026-11-01"
    ok = http.post(url, headers=HS, json={"inputs": [{"id": live[1], "properties":
                                                       {"churn_risk_score": 3.5}}]})
    assert ok.status_code == 200 and ok.json()["status"] == "COMPLETE"
    too_many = http.post(url, headers=HS, json={"inputs": [{"id": str(i), "properties": {}}
                                                           for i in range(101)]})
    assert too_many.status_code == 400


def test_hubspot_property_groups_and_creation(sb: Sandbox, ds: Dataset,
                                              http: requests.Session) -> None:
    base = f"{sb.urls['hubspot']}/crm/v3/properties/companies"
    groups = http.get(f"{base}/groups", headers=HS).json()["results"]
    assert {g["name"] for g in groups} == {"companyinformation", "healthsync"}
    assert all(set(g) == {"name", "label", "displayOrder", "archived"} for g in groups)
    created = http.post(f"{base}/groups", headers=HS, json={"name": "scores", "label": "Scores"})
    assert created.status_code == 201 and created.json() == {
        "name": "scores", "label": "Scores", "displayOrder": -1, "archived": False}
    twice = http.post(f"{base}/groups", headers=HS, json={"name": "scores", "label": "Again"})
    assert twice.status_code == 409 and twice.json()["category"] == "CONFLICT"
    assert http.post(f"{base}/groups", headers=HS, json={"name": "Bad Name", "label": "x"}
                     ).json()["category"] == "VALIDATION_ERROR"
    assert "scores" in sb.hs_groups

    band = {"name": "health_band", "label": "Health band", "type": "enumeration",
            "fieldType": "select", "groupName": "scores",
            "options": [{"label": "Band A", "value": "a"}, {"label": "Band B", "value": "b"}]}
    for broken in ({"type": "number", "fieldType": "text"}, {"type": "currency"},
                   {"options": []}, {"fieldType": "booleancheckbox"}, {"groupName": "nope"},
                   {"name": "HealthBand"}, {"label": ""}):
        refused = http.post(base, headers=HS, json={**band, **broken})
        assert refused.status_code == 400, broken
        assert refused.json()["category"] == "VALIDATION_ERROR" and refused.json()["message"]
    made = http.post(base, headers=HS, json=band)
    assert made.status_code == 201
    prop = made.json()
    assert (prop["name"], prop["type"], prop["fieldType"], prop["groupName"]) == (
        "health_band", "enumeration", "select", "scores")
    assert [o["value"] for o in prop["options"]] == ["a", "b"]
    assert prop["modificationMetadata"]["readOnlyValue"] is False
    assert http.post(base, headers=HS, json=band).status_code == 409
    stamp = {"name": "health_checked_at", "label": "Checked", "type": "datetime",
             "fieldType": "date", "groupName": "scores"}
    assert http.post(base, headers=HS, json=stamp).status_code == 201
    listed = {p["name"]: p for p in http.get(base, headers=HS).json()["results"]}
    assert listed["health_band"] == prop and "health_checked_at" in listed
    assert http.get(f"{base}/health_band", headers=HS).json() == prop
    assert http.get(f"{base}/nope", headers=HS).status_code == 404

    url = f"{sb.urls['hubspot']}/crm/v3/objects/companies/batch/update"
    cid = next(i for i, c in ds.hs_companies.items() if not c["archived"])
    ok = http.post(url, headers=HS, json={"inputs": [{"id": cid, "properties": {
        "health_band": "a", "health_checked_at": "1793613600000"}}]})
    assert ok.status_code == 200
    assert ok.json()["results"][0]["properties"]["health_checked_at"] == "2026-11-02T10:00:00.000Z"
    iso = http.post(url, headers=HS, json={"inputs": [{"id": cid, "properties": {
        "health_checked_at": "2026-11-02T10:00:00+01:00"}}]})
    assert iso.json()["results"][0]["properties"]["health_checked_at"] == \
        "2026-11-02T09:00:00.000Z"

    def problems(properties: dict) -> list[tuple[str, str]]:
        response = http.post(url, headers=HS, json={"inputs": [{"id": cid,
                                                                "properties": properties}]})
        assert response.status_code == 207
        message = response.json()["errors"][0]["message"]
        assert message.startswith("Property values were not valid: ")
        return [(p["name"], p["error"]) for p in json.loads(message.split(": ", 1)[1])]
    assert problems({"health_band": "c"}) == [("health_band", "INVALID_OPTION")]
    assert problems({"customer_segment": "Huge", "health_score": "high",
                     "health_checked_at": "yesterday", "no_such": "1"}) == [
        ("customer_segment", "INVALID_OPTION"), ("health_score", "INVALID_FLOAT"),
        ("health_checked_at", "INVALID_LONG"), ("no_such", "PROPERTY_DOESNT_EXIST")]
    assert ds.hs_companies[cid]["properties"]["health_band"] == "a"
    shown = http.get(f"{sb.urls['hubspot']}/crm/v3/objects/companies", headers=HS,
                     params={"properties": "health_band"}).json()["results"]
    assert {c["properties"]["health_band"] for c in shown} == {"a", None}


def test_hubspot_without_output_properties(ds: Dataset, http: requests.Session) -> None:
    with Sandbox(ds, hubspot_outputs=False) as sb:
        base = f"{sb.urls['hubspot']}/crm/v3/properties/companies"
        names = {p["name"] for p in http.get(base, headers=HS).json()["results"]}
        assert names and not names & set(HS_OUTPUTS) and "csm_rating" in names
        assert {g["name"] for g in http.get(f"{base}/groups", headers=HS).json()["results"]} == {
            "companyinformation"}
        cid = next(i for i, c in ds.hs_companies.items() if not c["archived"])
        assert "health_score" not in ds.hs_companies[cid]["properties"]
        listed = http.get(f"{sb.urls['hubspot']}/crm/v3/objects/companies", headers=HS,
                          params={"properties": "name,health_score"}).json()["results"]
        assert all("health_score" not in c["properties"] and "name" in c["properties"]
                   for c in listed)
        url = f"{sb.urls['hubspot']}/crm/v3/objects/companies/batch/update"
        write = {"inputs": [{"id": cid, "properties": {"health_score": 70}}]}
        refused = http.post(url, headers=HS, json=write)
        assert refused.status_code == 207 and "PROPERTY_DOESNT_EXIST" in refused.text
        score = {"name": "health_score", "label": "Health score", "type": "number",
                 "fieldType": "number", "groupName": "healthsync"}
        assert http.post(base, headers=HS, json=score).status_code == 400  # no such group
        assert http.post(f"{base}/groups", headers=HS, json={
            "name": "healthsync", "label": "Healthsync"}).status_code == 201
        assert http.post(base, headers=HS, json=score).status_code == 201
        assert http.post(url, headers=HS, json=write).status_code == 200
        assert ds.hs_companies[cid]["properties"]["health_score"] == "70"


# ----------------------------------------------------------------------------- Stripe

def test_stripe_list_paging(sb: Sandbox, ds: Dataset, http: requests.Session) -> None:
    url, params, seen = f"{sb.urls['stripe']}/v1/customers", {"limit": 40}, []
    while True:
        response = http.get(url, params=params, headers=STRIPE)
        assert response.headers["Request-Id"].startswith("req_")
        body = response.json()
        assert body["object"] == "list" and body["url"] == "/v1/customers"
        seen += body["data"]
        if not body["has_more"]:
            break
        params["starting_after"] = body["data"][-1]["id"]
    assert len(seen) == len(ds.stripe_customers) == len({c["id"] for c in seen})
    assert seen == sorted(seen, key=lambda c: (c["created"], c["id"]), reverse=True)
    before = http.get(url, params={"limit": 3, "ending_before": seen[10]["id"]}, headers=STRIPE)
    assert [c["id"] for c in before.json()["data"]] == [c["id"] for c in seen[7:10]]
    window = http.get(url, headers=STRIPE, params={"limit": 100, "created[gte]": seen[60][
        "created"], "created[lt]": seen[20]["created"]}).json()
    assert all(seen[60]["created"] <= c["created"] < seen[20]["created"] for c in window["data"])
    missing = http.get(url, params={"starting_after": "cus_x"}, headers=STRIPE)
    assert missing.status_code == 400 and missing.json() == {"error": {
        "type": "invalid_request_error", "message": "No such customer: 'cus_x'",
        "code": "resource_missing", "param": "starting_after"}}
    denied = http.get(url, headers={"Authorization": "Bearer sk_test_nope"})
    assert denied.status_code == 401 and "Invalid API Key" in denied.json()["error"]["message"]


def test_stripe_subscription_status_filter(sb: Sandbox, ds: Dataset,
                                           http: requests.Session) -> None:
    def ids(**params: object) -> set[str]:
        body = http.get(f"{sb.urls['stripe']}/v1/subscriptions", headers=STRIPE,
                        params={"limit": 100, **params}).json()
        assert not body["has_more"] or len(body["data"]) == 100
        return {s["id"] for s in body["data"]}

    customer = next(s["customer"] for s in ds.stripe_subscriptions.values()
                    if s["status"] == "canceled")
    mine = {i: s["status"] for i, s in ds.stripe_subscriptions.items() if s["customer"] == customer}
    assert ids(customer=customer) == {i for i, s in mine.items() if s != "canceled"}
    assert ids(customer=customer, status="all") == set(mine)
    assert ids(customer=customer, status="canceled") == {i for i, s in mine.items()
                                                         if s == "canceled"}
    assert http.get(f"{sb.urls['stripe']}/v1/subscriptions", params={"status": "nope"},
                    headers=STRIPE).status_code == 400


def test_stripe_events_after_mutate(sb: Sandbox, http: requests.Session) -> None:
    url = f"{sb.urls['stripe']}/v1/events"
    assert http.get(url, headers=STRIPE).json()["data"] == []
    changed = sb.mutate(fraction=0.05, seed=3)
    events = http.get(url, params={"limit": 100}, headers=STRIPE).json()["data"]
    assert {e["data"]["object"]["id"] for e in events} == set(changed["stripe"])
    typed = http.get(url, params={"limit": 100, "types[]": ["invoice.paid", "customer.updated"]},
                     headers=STRIPE).json()["data"]
    assert {e["type"] for e in typed} <= {"invoice.paid", "customer.updated"}


# ----------------------------------------------------------------------------- Zendesk

def test_zendesk_cursor_export_is_incremental(sb: Sandbox, ds: Dataset,
                                              http: requests.Session) -> None:
    tickets, cursor = zd_export(sb, http, start_time=0, per_page=250)
    assert sorted(t["id"] for t in tickets) == sorted(t["id"] for t in ds.zd_tickets.values())
    keys = [(t["generated_timestamp"], t["id"]) for t in tickets]
    assert keys == sorted(keys)
    assert zd_export(sb, http, cursor=cursor)[0] == []
    changed = sb.mutate(fraction=0.02, seed=5)
    again, _ = zd_export(sb, http, cursor=cursor)
    assert sorted(str(t["id"]) for t in again) == sorted(changed["zd_tickets"])
    recent = http.get(f"{sb.urls['zendesk']}/api/v2/incremental/tickets/cursor.json",
                      params={"start_time": int(time.time()) - 10}, auth=ZD)
    assert recent.status_code == 400 and recent.json()["error"] == "InvalidValue"
    assert http.get(f"{sb.urls['zendesk']}/api/v2/incremental/tickets/cursor.json",
                    params={"start_time": 0}, auth=("x", "y")).status_code == 401


def test_zendesk_organizations_and_ratings(sb: Sandbox, ds: Dataset,
                                           http: requests.Session) -> None:
    url, params, orgs = f"{sb.urls['zendesk']}/api/v2/incremental/organizations.json", {
        "start_time": 0, "per_page": 100}, {}
    while True:
        body = http.get(url, params=params, auth=ZD).json()
        orgs.update((o["id"], o) for o in body["organizations"])
        if body["end_of_stream"]:
            break
        url, params = body["next_page"], {"per_page": 100}
    assert set(orgs) == {o["id"] for o in ds.zd_organizations.values()}
    url, ratings = f"{sb.urls['zendesk']}/api/v2/satisfaction_ratings.json?page[size]=50", []
    while url:
        body = http.get(url, auth=ZD).json()
        ratings += body["satisfaction_ratings"]
        url = body["links"]["next"]
    rated = {t["id"] for t in ds.zd_tickets.values() if t["status"] != "deleted"
             and t["satisfaction_rating"]["score"] in ("good", "bad")}
    assert sorted(r["ticket_id"] for r in ratings) == sorted(rated)


# ----------------------------------------------------------------------------- faults

def test_fault_injection_kinds_and_bodies(sb: Sandbox, ds: Dataset,
                                          http: requests.Session) -> None:
    sf = SF(sb, http)  # logins are never faulted
    hs_url = f"{sb.urls['hubspot']}/crm/v3/objects/companies"
    zd_url = f"{sb.urls['zendesk']}/api/v2/incremental/tickets/cursor.json?start_time=0"
    sb.faults = Faults(rate_429=1.0)
    hs = http.get(hs_url, headers=HS)
    assert hs.status_code == 429 and hs.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    stripe = http.get(f"{sb.urls['stripe']}/v1/customers", headers=STRIPE)
    assert stripe.status_code == 429 and stripe.json()["error"]["code"] == "rate_limit"
    zendesk = [http.get(zd_url, auth=ZD) for _ in range(6)]
    assert {r.status_code for r in zendesk} == {429}
    assert {r.headers["Retry-After"] for r in zendesk} <= {"0", "1"}
    assert {r.headers["Content-Type"].split(";")[0] for r in zendesk} == {"text/plain",
                                                                          "application/json"}
    unavailable = sf.query("SELECT Id FROM Account")
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "0"
    assert unavailable.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    live = next(i for i, r in ds.sf_accounts.items() if not r["IsDeleted"])
    assert sf.patch([{"id": live, "Health_Score__c": 5}]).status_code == 503
    assert ds.sf_accounts[live]["Health_Score__c"] is None  # faulted: nothing applied

    sb.faults = Faults(rate_5xx=1.0, seed=2)
    errors = [http.get(f"{sb.urls['stripe']}/v1/charges", headers=STRIPE) for _ in range(5)]
    assert {r.status_code for r in errors} <= {500, 502, 503}
    assert {r.json()["error"]["type"] for r in errors} == {"api_error"}
    assert http.get(hs_url, headers=HS).json()["status"] == "error"

    sb.faults = Faults(rate_drop=1.0)
    with pytest.raises(requests.ConnectionError):
        http.get(hs_url, headers=HS)
    with pytest.raises(requests.ConnectionError):
        sf.query("SELECT Id FROM Account")

    sb.faults = Faults(drop_after_write=1.0)
    with pytest.raises(requests.ConnectionError):
        sf.patch([{"id": live, "Health_Score__c": 5}])
    assert ds.sf_accounts[live]["Health_Score__c"] == 5.0  # applied, but never acknowledged
    sb.faults = Faults()
    assert http.get(hs_url, headers=HS).status_code == 200
    assert sb.faulted[("hubspot", "429")] == 1 and sb.faulted[("zendesk", "429")] == 6
    assert sb.faulted[("salesforce", "drop")] == 2 and sb.faulted[("stripe", "5xx")] == 5
    assert sb.calls[("hubspot", "GET /crm/v3/objects/companies")] == 4
    sb.reset_counts()
    assert not sb.calls and not sb.faulted


def test_faults_are_deterministic_per_seed(ds: Dataset, http: requests.Session) -> None:
    def run() -> list[int]:
        with Sandbox(ds, faults=Faults(rate_429=0.3, rate_5xx=0.2, seed=11)) as sb:
            return [http.get(f"{sb.urls['stripe']}/v1/customers", headers=STRIPE).status_code
                    for _ in range(30)]
    first = run()
    assert first == run() and {200, 429} <= set(first)


def test_stop_closes_idle_keepalive_connections(ds: Dataset, http: requests.Session) -> None:
    sb = Sandbox(ds).start()
    assert http.get(f"{sb.urls['stripe']}/v1/customers", headers=STRIPE).status_code == 200
    started = time.monotonic()
    sb.stop()  # the session still holds its keep-alive connection open
    assert time.monotonic() - started < 2
    assert not [t for t in threading.enumerate() if t.name.startswith("sandbox-")]


def test_single_record_updates_for_per_record_writers(sb: Sandbox, ds: Dataset,
                                                      http: requests.Session) -> None:
    """The per-record endpoints a naive writer uses (benchmarks/push_bench.py) apply and validate
    like the batch ones."""
    sf = SF(sb, http)
    rid = next(r for r, a in ds.sf_accounts.items() if not a["IsDeleted"])
    url = f"{sb.urls['salesforce']}/services/data/v59.0/sobjects/Account/{rid}"
    auth = {"Authorization": f"Bearer {sf.sid}"}
    ok = http.patch(url, json={"Health_Score__c": 55.5}, headers=auth, verify=sb.ca_file)
    assert ok.status_code == 204 and ds.sf_accounts[rid]["Health_Score__c"] == 55.5
    bad = http.patch(url, json={"Health_Score__c": "lots"}, headers=auth, verify=sb.ca_file)
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_TYPE_ON_FIELD_IN_RECORD"
    assert ds.sf_accounts[rid]["Health_Score__c"] == 55.5
    cid = next(c for c, co in ds.hs_companies.items() if not co["archived"])
    hs = f"{sb.urls['hubspot']}/crm/v3/objects/companies/{cid}"
    done = http.patch(hs, json={"properties": {"health_score": "61"}}, headers=HS)
    assert done.status_code == 200 and done.json()["id"] == cid
    assert float(ds.hs_companies[cid]["properties"]["health_score"]) == 61
    missing = http.patch(f"{sb.urls['hubspot']}/crm/v3/objects/companies/999999999",
                         json={"properties": {"health_score": "1"}}, headers=HS)
    assert missing.status_code == 404
    assert sb.calls[("salesforce", "PATCH /sobjects/Account/{id}")] == 2
