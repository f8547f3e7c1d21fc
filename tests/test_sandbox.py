"""The API sandbox itself, over real HTTP with plain requests."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from connector.sandbox.dataset import Dataset, build_dataset
from connector.sandbox.server import Faults, Sandbox

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
