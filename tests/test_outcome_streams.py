"""Outcome records (Salesforce Opportunities and Cases, HubSpot deals) are pulled like the rest —
incrementally, paged, deletes included — but only when the mappings need them: mappings that
need none send exactly the requests they always sent. Cases give the Salesforce catalogue
metrics, per account; deals carry the id of their company.

The dataset's own outcome records are replaced by a few written here, so every count is exact.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import NO_OUTCOMES, REPO

from connector import metrics as measuring
from connector.catalogue import catalogue
from connector.config.mappings import Mappings, load_mappings
from connector.errors import ConfigError
from connector.pipeline import pull
from connector.sources.salesforce.client import SalesforceSource
from connector.store import Store
from sandbox.dataset import Dataset, build_dataset, hs_time, sf_time
from sandbox.server import Sandbox

NOW = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86_400
CASE_METRICS = ("open_cases", "urgent_cases", "escalated_cases", "cases_30d")
ON_DEMAND = {("salesforce", "Opportunity"), ("salesforce", "Case"), ("hubspot", "deals")}


def _ago(days: float) -> float:
    return NOW.timestamp() - days * DAY


def _opportunity(n: int, account: str, stage: str, days: float, deleted: bool = False) -> dict[str, Any]:
    closed = stage.startswith("Closed")
    return {"Id": f"006Hs00000{n:05d}AAA", "AccountId": account, "Name": f"Renewal {n}", "Type": "Renewal",
            "StageName": stage, "IsClosed": closed, "IsWon": stage == "Closed Won",
            "CloseDate": datetime.fromtimestamp(_ago(days - 30), UTC).date().isoformat(), "Amount": 1000.0 + n,
            "CreatedDate": sf_time(_ago(days + 60)), "LastModifiedDate": sf_time(_ago(days)),
            "SystemModstamp": sf_time(_ago(days)), "IsDeleted": deleted}


def _case(n: int, account: str, *, priority: str = "Medium", status: str = "New", escalated: bool = False,
          closed: bool = False, created_days: float = 3, deleted: bool = False) -> dict[str, Any]:
    return {"Id": f"500Hs00000{n:05d}AAA", "AccountId": account, "Subject": f"Case {n}", "Status": status,
            "Priority": priority, "IsEscalated": escalated, "IsClosed": closed,
            "CreatedDate": sf_time(_ago(created_days)), "ClosedDate": sf_time(_ago(1)) if closed else None,
            "SystemModstamp": sf_time(_ago(created_days / 2)), "IsDeleted": deleted}


def _deal(n: int, company: str | None, stage: str, days: float, archived: bool = False) -> dict[str, Any]:
    did, stamp = str(24_100_000_000 + n), hs_time(_ago(days))
    deal = {"id": did, "properties": {
        "dealname": f"Deal {n}", "dealstage": stage, "pipeline": "default", "closedate": stamp,
        "amount": str(500 + n), "dealtype": "existingbusiness", "hs_is_closed_won": str(stage == "closedwon").lower(),
        "hs_is_closed": str(stage.startswith("closed")).lower(), "createdate": hs_time(_ago(days + 90)),
        "hs_lastmodifieddate": stamp, "hs_object_id": did},
        "createdAt": hs_time(_ago(days + 90)), "updatedAt": stamp, "archived": archived}
    if company is not None:
        deal["associations"] = {"companies": {"results": [{"id": company, "type": "deal_to_company"}]}}
    if archived:
        deal["archivedAt"] = stamp
    return deal


def _gather(store: Store) -> dict[int, Any]:
    """Each account's gathered records (what the measure step computes from)."""
    return (getattr(measuring, "gather", None) or measuring._gather)(store)


def _accounts(ds: Dataset) -> list[str]:
    return [a["Id"] for a in ds.sf_accounts.values() if not a["IsDeleted"]]


def _companies(ds: Dataset) -> list[str]:
    return [c["id"] for c in ds.hs_companies.values() if not c["archived"]]


@pytest.fixture
def dataset() -> Dataset:
    ds = build_dataset(accounts=50, seed=7, now=NOW)
    (a, b), companies = _accounts(ds)[:2], _companies(ds)
    ds.sf_opportunities = {o["Id"]: o for o in [
        _opportunity(1, a, "Closed Won", 200), _opportunity(2, a, "Negotiation/Review", 20),
        _opportunity(3, b, "Prospecting", 10), _opportunity(4, b, "Closed Lost", 5)]}
    ds.sf_cases = {c["Id"]: c for c in [
        _case(1, a, priority="High", created_days=5),
        _case(2, a, escalated=True, created_days=40),
        _case(3, a, priority="Critical", closed=True, status="Closed", created_days=10),
        _case(4, a, priority="Low", status="Escalated", created_days=60),
        _case(5, a, priority="Urgent", created_days=2, deleted=True),
        _case(6, b, priority="Urgent", created_days=1)]}
    ds.hs_deals = {d["id"]: d for d in [
        _deal(1, companies[0], "closedwon", 100), _deal(2, companies[0], "appointmentscheduled", 30),
        _deal(3, companies[1], "closedlost", 20), _deal(4, None, "qualifiedtobuy", 15),
        _deal(5, companies[2], "closedlost", 50, archived=True)]}
    return ds


def _env(sb: Sandbox) -> dict[str, str]:
    return {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01"}


def _mappings(tmp_path: Path, metrics: tuple[str, ...] = CASE_METRICS) -> Mappings:
    target = tmp_path / "mappings"
    shutil.copytree(NO_OUTCOMES, target)
    path = target / "metrics.yaml"
    added = "".join(f"  {m}:\n    catalogue: {m}\n" for m in metrics)
    path.write_text(path.read_text().replace("metrics:\n", "metrics:\n" + added, 1))
    return load_mappings(target)


@pytest.fixture
def reads_all(monkeypatch):
    """Until outcomes name them, nothing in the mappings reads Opportunity or deals: say they do."""
    original = Mappings.reads
    monkeypatch.setattr(Mappings, "reads", lambda self, system, obj: (system, obj) in ON_DEMAND
                        or original(self, system, obj))


def _objects(store: Store) -> dict[tuple[str, str], tuple[int, int]]:
    return store.record_counts()


def _values(store: Store, name: str) -> dict[int, tuple[float | None, str | None]]:
    rows = store.conn.execute("SELECT account_id, num, na_reason FROM metric_values WHERE name = ?", (name,))
    return {a: (num, why) for a, num, why in rows}


def _pulled_now(store: Store, system: str, obj: str) -> set[str]:
    stamp = store.conn.execute("SELECT max(pulled_at) FROM records").fetchone()[0]
    return {r[0] for r in store.conn.execute(
        "SELECT id FROM records WHERE system = ? AND object = ? AND pulled_at = ?", (system, obj, stamp))}


# ------------------------------------------------------------------ only when needed


def test_the_shipped_mappings_read_opportunities_and_deals_for_their_outcomes_and_no_case():
    mappings = load_mappings(REPO / "mappings")
    assert mappings.reads("salesforce", "Opportunity") and mappings.reads("hubspot", "deals")
    assert not mappings.reads("salesforce", "Case")


def test_mappings_without_outcomes_read_no_opportunity_case_or_deal(dataset, tmp_path):
    mappings = load_mappings(NO_OUTCOMES)
    assert not any(mappings.reads(system, obj) for system, obj in ON_DEMAND)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        summary = pull(store, mappings, _env(sb), now=NOW)
        served = dict(sb.calls)
        objects = _objects(store)
    calls = summary.calls.as_dict()
    assert calls["salesforce"] == {"POST login (SOAP)": 1, "GET sobjects/Account/describe": 1, "GET queryAll": 1}
    assert not [e for e in calls["hubspot"] if "deals" in e]
    assert not [route for (_family, route) in served if "Opportunity" in route or "Case" in route or "deals" in route]
    assert not {key for key in objects if key in ON_DEMAND}
    assert set(summary.systems["salesforce"].records) == {"Account"}


def test_case_metrics_read_cases_only_and_count_them_per_account(dataset, tmp_path):
    mappings = _mappings(tmp_path)
    assert mappings.reads("salesforce", "Case") and not mappings.reads("salesforce", "Opportunity")
    assert all(catalogue()[m].objects == ("Case",) and catalogue()[m].system == "salesforce" for m in CASE_METRICS)
    a, b = _accounts(dataset)[:2]
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        summary = pull(store, mappings, _env(sb), now=NOW, only=["salesforce", "hubspot"])
        objects = _objects(store)
        keys = store.account_keys()
        values = {m: _values(store, m) for m in CASE_METRICS}
    calls = summary.calls.as_dict()
    assert calls["salesforce"] == {"POST login (SOAP)": 1, "GET sobjects/Account/describe": 1,
                                   "GET sobjects/Case/describe": 1, "GET queryAll": 2}  # the minimum
    assert not [e for e in calls["hubspot"] if "deals" in e]
    assert objects[("salesforce", "Case")] == (5, 1)  # the deleted case is stored as deleted
    assert ("salesforce", "Opportunity") not in objects
    assert summary.systems["salesforce"].records["Case"] == 6 and summary.systems["salesforce"].deleted["Case"] == 1
    expected = {a: (3.0, 1.0, 2.0, 2.0), b: (1.0, 1.0, 0.0, 1.0)}  # open, urgent, escalated, created in 30 days
    for sf_id, numbers in expected.items():
        assert tuple(values[m][keys[f"salesforce:{sf_id}"]][0] for m in CASE_METRICS) == numbers
    others = [keys[f"salesforce:{i}"] for i in _accounts(dataset)[2:] if f"salesforce:{i}" in keys]
    assert others and all(values["open_cases"][o] == (0.0, None) for o in others)
    hubspot_only = [i for k, i in keys.items() if k.startswith("hubspot:")]
    assert hubspot_only
    for m in CASE_METRICS:
        assert all(values[m][i] == (None, "no Salesforce Account for this account") for i in hubspot_only)


# ------------------------------------------------------------------ incremental, deletes


def test_opportunities_and_cases_are_pulled_incrementally_with_deletes(dataset, tmp_path, reads_all):
    mappings = _mappings(tmp_path, ("open_cases",))
    a, b = _accounts(dataset)[:2]
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = _env(sb)
        first = pull(store, mappings, env, now=NOW, only=["salesforce"])
        assert first.calls.as_dict()["salesforce"] == {
            "POST login (SOAP)": 1, "GET sobjects/Account/describe": 1, "GET sobjects/Opportunity/describe": 1,
            "GET sobjects/Case/describe": 1, "GET queryAll": 3}
        assert first.systems["salesforce"].records["Opportunity"] == 4
        stored = dict(store.records("salesforce", "Opportunity"))
        assert set(stored["006Hs0000000002AAA"]) == {"Id", "AccountId", "Type", "StageName", "IsClosed", "IsWon",
                                                     "CloseDate", "Amount", "CreatedDate", "SystemModstamp",
                                                     "IsDeleted"}
        # the whole object was read, by a query Salesforce answered (its Date) later than the run began
        # (NOW, a month ago): the cursor is the run's start, past the newest record's stamp
        cursor = store.cursor("salesforce", "Opportunity")
        assert dataset.sf_opportunities["006Hs0000000004AAA"]["SystemModstamp"] < cursor == sf_time(NOW.timestamp())

        newest_case = max(dataset.sf_cases.values(), key=lambda c: c["SystemModstamp"])["Id"]
        later = sf_time(NOW.timestamp() + 600)
        with sb.lock:  # the renewal is lost, a prospect is deleted, a case is opened
            dataset.sf_opportunities["006Hs0000000002AAA"].update(
                StageName="Closed Lost", IsClosed=True, LastModifiedDate=later, SystemModstamp=later)
            dataset.sf_opportunities["006Hs0000000003AAA"].update(IsDeleted=True, SystemModstamp=later)
            new_case = _case(7, b, priority="High")
            new_case["SystemModstamp"] = later
            dataset.sf_cases[new_case["Id"]] = new_case
            dataset.version += 1
        second = pull(store, mappings, env, now=NOW + timedelta(hours=1), only=["salesforce"])
        refetched = _pulled_now(store, "salesforce", "Opportunity")
        cases = _pulled_now(store, "salesforce", "Case")
        live = dict(store.records("salesforce", "Opportunity"))
        every = dict(store.records("salesforce", "Opportunity", include_deleted=True))
        keys = store.account_keys()
        open_cases = _values(store, "open_cases")
    # the changed records only: the newest of the first pull is older than its cursor less the overlap
    assert refetched == {"006Hs0000000002AAA", "006Hs0000000003AAA"}
    assert cases == {new_case["Id"]} and newest_case != new_case["Id"]
    assert second.systems["salesforce"].deleted == {"Account": 0, "Opportunity": 1, "Case": 0}
    assert second.systems["salesforce"].full == {"Account": False, "Opportunity": False, "Case": False}
    assert "006Hs0000000003AAA" in every and "006Hs0000000003AAA" not in live
    assert live["006Hs0000000002AAA"]["StageName"] == "Closed Lost" and live["006Hs0000000002AAA"]["IsClosed"] is True
    assert second.calls.as_dict()["salesforce"] == {
        "POST login (SOAP)": 1, "GET sobjects/Account/describe": 1, "GET sobjects/Opportunity/describe": 1,
        "GET sobjects/Case/describe": 1, "GET queryAll": 3}
    assert open_cases[keys[f"salesforce:{b}"]] == (2.0, None) and open_cases[keys[f"salesforce:{a}"]] == (3.0, None)


def test_opportunities_belong_to_their_account(dataset, tmp_path, reads_all):
    mappings = _mappings(tmp_path, ("open_cases",))
    a, b = _accounts(dataset)[:2]
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        pull(store, mappings, _env(sb), now=NOW, only=["salesforce", "hubspot"])
        keys = store.account_keys()
        data = _gather(store)
    of_a = data[keys[f"salesforce:{a}"]].of("salesforce", "Opportunity")
    of_b = data[keys[f"salesforce:{b}"]].of("salesforce", "Opportunity")
    assert sorted(o["Id"] for o in of_a) == ["006Hs0000000001AAA", "006Hs0000000002AAA"]
    assert sorted(o["Id"] for o in of_b) == ["006Hs0000000003AAA", "006Hs0000000004AAA"]
    assert of_a[0]["CloseDate"] == dataset.sf_opportunities[of_a[0]["Id"]]["CloseDate"]


# ------------------------------------------------------------------ HubSpot deals


def test_deals_carry_their_company_and_are_pulled_incrementally(dataset, tmp_path, reads_all):
    mappings = _mappings(tmp_path, ())
    companies = _companies(dataset)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = _env(sb)
        first = pull(store, mappings, env, now=NOW, only=["hubspot"])
        calls = first.calls.as_dict()["hubspot"]
        assert calls["GET /crm/v3/objects/deals"] == 1 and calls["GET /crm/v3/objects/deals (archived)"] == 1
        assert not [e for e in calls if "search" in e and "deals" in e or "v4" in e]
        assert first.systems["hubspot"].records["deals"] == 4
        assert first.systems["hubspot"].records["deals (archived)"] == 1
        deals = dict(store.records("hubspot", "deals"))
        assert {d: rec["company_id"] for d, rec in deals.items()} == {
            "24100000001": companies[0], "24100000002": companies[0], "24100000003": companies[1],
            "24100000004": None}
        assert deals["24100000001"] == {
            "id": "24100000001", "archived": False, "company_id": companies[0],
            **dataset.hs_deals["24100000001"]["properties"]}
        archived = dict(store.records("hubspot", "deals", include_deleted=True))["24100000005"]
        assert archived["archived"] is True and "24100000005" not in deals
        data = _gather(store)
        owner = store.linked("hubspot", "companies")
        of_first = data[owner[companies[0]]].of("hubspot", "deals")
        assert sorted(d["id"] for d in of_first) == ["24100000001", "24100000002"]

        later = hs_time(NOW.timestamp() + 600)
        with sb.lock:  # one deal moves to another company and is won; one loses its company; one is new
            moved = dataset.hs_deals["24100000002"]
            moved["properties"].update(dealstage="closedwon", hs_is_closed="true", hs_is_closed_won="true",
                                       hs_lastmodifieddate=later)
            moved["associations"] = {"companies": {"results": [{"id": companies[3], "type": "deal_to_company"}]}}
            alone = dataset.hs_deals["24100000003"]
            alone["properties"]["hs_lastmodifieddate"] = later
            alone.pop("associations")
            fresh = _deal(6, companies[1], "appointmentscheduled", 0)
            fresh["properties"]["hs_lastmodifieddate"] = later
            dataset.hs_deals[fresh["id"]] = fresh
            dataset.version += 1
        second = pull(store, mappings, env, now=NOW + timedelta(hours=1), only=["hubspot"])
        refetched = _pulled_now(store, "hubspot", "deals")
        deals = dict(store.records("hubspot", "deals"))
    calls = second.calls.as_dict()["hubspot"]
    assert calls["POST /crm/v3/objects/deals/search"] == 1
    assert calls["POST /crm/v4/associations/deals/companies/batch/read"] == 1
    # an hour later: no list at all (archived deals are listed again once HUBSPOT_ARCHIVED_EVERY_HOURS passed)
    assert "GET /crm/v3/objects/deals (archived)" not in calls and "GET /crm/v3/objects/deals" not in calls
    newest_first = max(d["properties"]["hs_lastmodifieddate"] for d in dataset.hs_deals.values()
                       if d["properties"]["hs_lastmodifieddate"] != later and not d["archived"])
    overlap = {d["id"] for d in dataset.hs_deals.values()
               if d["properties"]["hs_lastmodifieddate"] == newest_first and not d["archived"]}
    assert refetched - {"24100000005"} == {"24100000002", "24100000003", fresh["id"]} | overlap
    assert deals["24100000002"]["company_id"] == companies[3] and deals["24100000002"]["dealstage"] == "closedwon"
    assert deals["24100000003"]["company_id"] is None
    assert deals[fresh["id"]]["company_id"] == companies[1]
    assert second.systems["hubspot"].full["deals"] is False


def test_the_association_read_takes_a_thousand_deals_a_request(dataset, tmp_path, reads_all):
    mappings = _mappings(tmp_path, ())
    companies = _companies(dataset)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = _env(sb)
        pull(store, mappings, env, now=NOW, only=["hubspot"])
        later = hs_time(NOW.timestamp() + 600)
        with sb.lock:
            for n in range(100, 1300):  # 1,200 new deals: six search pages, two association reads
                deal = _deal(n, companies[n % len(companies)], "appointmentscheduled", 0)
                deal["properties"]["hs_lastmodifieddate"] = later
                dataset.hs_deals[deal["id"]] = deal
            dataset.version += 1
        second = pull(store, mappings, env, now=NOW + timedelta(hours=1), only=["hubspot"])
        deals = dict(store.records("hubspot", "deals"))
    calls = second.calls.as_dict()["hubspot"]
    assert calls["POST /crm/v3/objects/deals/search"] == 7  # 1,200 (and the overlap) at 200 a page, then a short one
    assert calls["POST /crm/v4/associations/deals/companies/batch/read"] == 2
    assert all(deals[str(24_100_000_000 + n)]["company_id"] == companies[n % len(companies)] for n in range(100, 1300))


# ------------------------------------------------------------------ check


@pytest.mark.parametrize("status, code", [(404, "NOT_FOUND"), (403, "INSUFFICIENT_ACCESS")])
def test_a_case_describe_refused_is_a_problem_naming_the_metric(dataset, tmp_path, status, code):
    mappings = _mappings(tmp_path, ("open_cases",))
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        sb.refuse("salesforce", "GET /sobjects/Case/describe", status, code, "The requested resource does not exist")
        with pytest.raises(ConfigError) as raised:
            pull(store, mappings, _env(sb), now=NOW, only=["salesforce"])
        queried = sb.calls[("salesforce", "GET /queryAll")]
    problem = raised.value.problems[0]
    assert problem.key == "metrics.open_cases" and problem.file.endswith("metrics.yaml") and problem.line
    assert "cannot read Case (metric 'open_cases' needs it)" in problem.message and code in problem.message
    assert "Read on Case" in problem.hint
    assert queried == 0  # nothing was read


def test_case_fields_the_user_cannot_see_are_a_problem(dataset, tmp_path, monkeypatch):
    mappings = _mappings(tmp_path, ("open_cases",))
    original = SalesforceSource.describe

    def describe(self, sobject):
        fields = original(self, sobject)
        return {k: v for k, v in fields.items() if k not in ("Priority", "IsEscalated")} if sobject == "Case" else fields

    monkeypatch.setattr(SalesforceSource, "describe", describe)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store, pytest.raises(ConfigError) as raised:
        pull(store, mappings, _env(sb), now=NOW, only=["salesforce"])
    message = raised.value.problems[0].message
    assert "not visible to the integration user: Priority, IsEscalated" in message and "'open_cases'" in message
