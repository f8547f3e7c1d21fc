"""The sandbox's outcome records (renewal opportunities, cases, HubSpot deals, Stripe
cancellation details) tell the hidden health's story, and adding them changed nothing else."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from sandbox.dataset import RENEWAL_LEAD_DAYS, Dataset, build_dataset, sf_id

NOW = datetime(2026, 11, 1, tzinfo=UTC)
TODAY = NOW.date()
OUTCOMES = ("sf_opportunities", "sf_cases", "hs_deals", "watermelons", "hidden_health")

# sha256 of json.dumps(collection, sort_keys=True, ensure_ascii=False) for
# build_dataset(accounts=500, seed=7, now=NOW), computed before the outcome records existed
# (stripe_subscriptions without the cancellation_details added since).
BEFORE = {
    "sf_accounts": "5f366f6373893e83bc12012362352d491518180f225ee4313d63aee9d8440f15",
    "hs_companies": "c6ac053a17abe56b9c443819f7f1bf2c0f7da936072d4a7e9ae03cf92bf470b7",
    "stripe_customers": "ecb689de247aa4d4a2ad650d1213a8c606056377cbbc0a3a7b4632479d9b7fcd",
    "stripe_subscriptions": "9fe741049b435b31533b5dda8604f663bba864c4a58b4b8d6103153f9f13e5c0",
    "stripe_invoices": "b5723b9417c86a6786b2f23636ab39e77f4fa05c07c195d2d29a085a6b29b089",
    "stripe_charges": "0b607acacb1f225179cca0f0801bbd6a2b32bde016019b7d2ad05ae0510b79a5",
    "zd_organizations": "22f0c644bf96798815edb6381d7093f11988f6e538a75a81a906a7ca03b54931",
    "zd_tickets": "4af4a441e67b14d811bca7f4b3aa38019b369a50565b43ce15e2a2cd103862c9",
    "stripe_events": "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
    "sf_users": "9f147520aedb44b698b75a9143cf31c58eb68966bec86060a03106ed1cb0f2a8",
    "sf_tasks": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "hs_tasks": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
}
# the same dataset after ds.clock = 2e9; ds.mutate(fraction=0.02, seed=3): what mutate returned
# (without its new "sf_opportunities" list) and the records it left, cancellation_details removed
AFTER_MUTATE = {
    "changed": "d88bf8dec5cd9c146575d60e7548e4f1ed12305026a2c334d77a419777b4188d",
    "sf_accounts": "e003e41f435aca14f23d4a92626ce1f72b2c57a01a2e799b17f3358c33a01df6",
    "hs_companies": "ace11770a910f5c6e1b0ec4f3d8e630fab926734384c367ef66e48b8b0e31359",
    "stripe_subscriptions": "fb71f67a7520e77d58b79771c7412e1c16e7852f606a5ebd556ed519469b187e",
    "stripe_invoices": "314d19fa58ff7d76e9075ce8930bae6870ca3a8cfda49f41ed4842d7ba119a66",
    "stripe_customers": "ecb689de247aa4d4a2ad650d1213a8c606056377cbbc0a3a7b4632479d9b7fcd",
    "zd_tickets": "f2665d71cb8de105143d8252477507817f8643b511dd28c2bd05b12ac56eabac",
    "stripe_events": "2acf5aa5e7c4fa8fa32d0e1f5c32d4be8582b360818260a732767b4b5bc18b03",
}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def without_details(value: Any) -> Any:
    """value with every "cancellation_details" key removed, however deep."""
    if isinstance(value, dict):
        return {k: without_details(v) for k, v in value.items() if k != "cancellation_details"}
    if isinstance(value, list):
        return [without_details(v) for v in value]
    return value


def day(value: str) -> date:
    return date.fromisoformat(value[:10])


@pytest.fixture(scope="module")
def small() -> Dataset:
    return build_dataset(accounts=500, seed=7, now=NOW)


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return build_dataset(accounts=2000, seed=7, now=NOW)


# ------------------------------------------------------------------ nothing else changed

def test_every_existing_collection_is_what_it_was(small: Dataset) -> None:
    for name, expected in BEFORE.items():
        value = getattr(small, name)
        if name == "stripe_subscriptions":
            value = without_details(value)
        assert digest(value) == expected, name


def test_mutate_changes_what_it_always_changed() -> None:
    ds = build_dataset(accounts=500, seed=7, now=NOW)
    ds.clock = 2e9  # so mutate's tick does not depend on the wall clock
    changed = ds.mutate(fraction=0.02, seed=3)
    opportunities = changed.pop("sf_opportunities")
    assert digest(changed) == AFTER_MUTATE["changed"]
    for name, expected in AFTER_MUTATE.items():
        if name != "changed":
            assert digest(without_details(getattr(ds, name))) == expected, name
    # and, from a stream of its own, it closed 2 % of the open opportunities at its tick
    was_open = [o for o in build_dataset(accounts=500, seed=7, now=NOW).sf_opportunities.values()
                if not o["IsClosed"] and not o["IsDeleted"]]
    assert len(opportunities) == round(0.02 * len(was_open)) > 0
    for oid in opportunities:
        opp = ds.sf_opportunities[oid]
        assert opp["IsClosed"] and opp["StageName"] in ("Closed Won", "Closed Lost")
        assert opp["IsWon"] == (opp["StageName"] == "Closed Won")
        assert opp["SystemModstamp"] == opp["LastModifiedDate"] > NOW.strftime("%Y-%m-%d")


def test_same_arguments_same_outcomes(small: Dataset) -> None:
    again = build_dataset(accounts=500, seed=7, now=NOW)
    for name in OUTCOMES:
        assert getattr(again, name) == getattr(small, name), name
        assert getattr(small, name), name
    assert list(again.sf_opportunities) == list(small.sf_opportunities)
    assert [s["cancellation_details"] for s in again.stripe_subscriptions.values()] == \
        [s["cancellation_details"] for s in small.stripe_subscriptions.values()]
    other = build_dataset(accounts=500, seed=8, now=NOW)
    assert other.sf_opportunities != small.sf_opportunities


# ------------------------------------------------------------------ shapes

def test_opportunity_shape(ds: Dataset) -> None:
    keys = ["Id", "AccountId", "Name", "Type", "StageName", "IsClosed", "IsWon", "CloseDate",
            "Amount", "CreatedDate", "LastModifiedDate", "SystemModstamp", "IsDeleted"]
    for n, (oid, opp) in enumerate(ds.sf_opportunities.items(), start=1):
        assert list(opp) == keys and oid == opp["Id"] == sf_id("006", n)
        assert opp["Type"] in ("Renewal", "New Business", "Existing Business - Upgrade")
        assert opp["StageName"] in ("Closed Won", "Closed Lost", "Negotiation/Review", "Prospecting")
        assert opp["IsClosed"] == opp["StageName"].startswith("Closed")
        assert opp["IsWon"] == (opp["StageName"] == "Closed Won")
        assert isinstance(opp["Amount"], float) and opp["Amount"] > 0
        assert opp["CreatedDate"] <= opp["LastModifiedDate"] == opp["SystemModstamp"]
        assert opp["CreatedDate"].endswith(".000+0000") and len(opp["CreatedDate"]) == 28
        assert opp["IsDeleted"] == ds.sf_accounts[opp["AccountId"]]["IsDeleted"]
    assert {o["Type"] for o in ds.sf_opportunities.values()} == {
        "Renewal", "New Business", "Existing Business - Upgrade"}
    assert {o["StageName"] for o in ds.sf_opportunities.values()} == {
        "Closed Won", "Closed Lost", "Negotiation/Review", "Prospecting"}


def test_case_shape(ds: Dataset) -> None:
    keys = ["Id", "AccountId", "Subject", "Status", "Priority", "IsEscalated", "IsClosed",
            "CreatedDate", "ClosedDate", "LastModifiedDate", "SystemModstamp", "IsDeleted"]
    for n, (cid, case) in enumerate(ds.sf_cases.items(), start=1):
        assert list(case) == keys and cid == case["Id"] == sf_id("500", n)
        assert case["AccountId"] in ds.sf_accounts
        assert case["Status"] in ("New", "Working", "Escalated", "Closed")
        assert case["Priority"] in ("Low", "Medium", "High")
        assert case["IsClosed"] == (case["Status"] == "Closed") == (case["ClosedDate"] is not None)
        assert case["Status"] != "Escalated" or case["IsEscalated"]
        assert case["CreatedDate"] <= case["LastModifiedDate"] == case["SystemModstamp"]
        assert case["ClosedDate"] in (None, case["LastModifiedDate"])
        assert case["IsDeleted"] == ds.sf_accounts[case["AccountId"]]["IsDeleted"]
    assert {c["Status"] for c in ds.sf_cases.values()} == {"New", "Working", "Escalated", "Closed"}


def test_deal_shape(ds: Dataset) -> None:
    props = ["dealname", "dealstage", "pipeline", "closedate", "amount", "dealtype",
             "hs_is_closed_won", "hs_is_closed", "createdate", "hs_lastmodifieddate", "hs_object_id"]
    for did, deal in ds.hs_deals.items():
        p = deal["properties"]
        assert list(deal) == ["id", "properties", "createdAt", "updatedAt", "archived", "associations"]
        assert list(p) == props and did == deal["id"] == p["hs_object_id"] and did.isdigit()
        assert deal["createdAt"] == p["createdate"] <= deal["updatedAt"] == p["hs_lastmodifieddate"]
        assert p["closedate"].endswith("T00:00:00.000Z") and p["createdate"].endswith("Z")
        assert p["pipeline"] == "default" and deal["archived"] is False
        assert p["dealstage"] in ("closedwon", "closedlost", "contractsent", "appointmentscheduled")
        assert p["hs_is_closed"] == ("true" if p["dealstage"].startswith("closed") else "false")
        assert p["hs_is_closed_won"] == ("true" if p["dealstage"] == "closedwon" else "false")
        assert float(p["amount"]) > 0 and p["dealtype"] in ("newbusiness", "existingbusiness")
        assert "Renewal" not in p["dealname"] or p["dealtype"] == "existingbusiness"
        (link,) = deal["associations"]["companies"]["results"]
        assert link["type"] == "deal_to_company" and link["id"] in ds.hs_companies
    assert any("Renewal" in d["properties"]["dealname"] for d in ds.hs_deals.values())


def test_deals_for_linked_and_hubspot_only_companies(ds: Dataset) -> None:
    companies = {d["associations"]["companies"]["results"][0]["id"] for d in ds.hs_deals.values()}
    hubspot_only = {k.removeprefix("hubspot:") for k in ds.hidden_health if k.startswith("hubspot:")}
    assert companies & hubspot_only and companies - hubspot_only
    assert hubspot_only <= set(ds.hs_companies)


def test_cancellation_details_on_every_subscription(ds: Dataset) -> None:
    reasons, feedback = Counter(), Counter()
    for sub in ds.stripe_subscriptions.values():
        details = sub["cancellation_details"]
        assert list(details) == ["reason", "feedback", "comment"] and details["comment"] is None
        if sub["status"] != "canceled":
            assert details == {"reason": None, "feedback": None, "comment": None}
            continue
        assert details["reason"] in ("cancellation_requested", "payment_failed")
        assert details["feedback"] in ("too_expensive", "missing_features", "switched_service",
                                       "unused", None)
        assert details["reason"] == "cancellation_requested" or details["feedback"] is None
        reasons[details["reason"]] += 1
        feedback[details["feedback"]] += 1
    assert reasons["cancellation_requested"] and reasons["payment_failed"] and len(feedback) == 5


def test_unhealthy_customers_mostly_asked_to_cancel(ds: Dataset) -> None:
    health = {a["Stripe_Customer_Id__c"]: ds.hidden_health[a["Id"]]
              for a in ds.sf_accounts.values() if a["Stripe_Customer_Id__c"]}
    asked: dict[bool, list[bool]] = {True: [], False: []}
    for sub in ds.stripe_subscriptions.values():
        if sub["status"] == "canceled" and sub["customer"] in health:
            asked[health[sub["customer"]] < 0.3].append(
                sub["cancellation_details"]["reason"] == "cancellation_requested")
    unhealthy, others = (sum(v) / len(v) for v in (asked[True], asked[False]))
    assert unhealthy > 0.7 and others < 0.6 and unhealthy > others + 0.2


# ------------------------------------------------------------------ the story

def renewals(ds: Dataset) -> list[dict[str, Any]]:
    return [o for o in ds.sf_opportunities.values() if o["Type"] == "Renewal"]


def lost_rate(opps: list[dict[str, Any]]) -> float:
    closed = [o for o in opps if o["IsClosed"]]
    return sum(o["StageName"] == "Closed Lost" for o in closed) / len(closed)


def test_renewals_are_lost_far_more_often_when_health_is_low(ds: Dataset) -> None:
    plain = [o for o in renewals(ds) if o["AccountId"] not in ds.watermelons]
    by_health = {band: lost_rate([o for o in plain if test(ds.hidden_health[o["AccountId"]])])
                 for band, test in (("low", lambda h: h < 0.3), ("mid", lambda h: 0.3 <= h < 0.6),
                                    ("high", lambda h: h >= 0.6))}
    assert by_health["low"] >= 0.45 and by_health["high"] < 0.1
    assert by_health["low"] >= 3 * by_health["high"] and by_health["low"] >= 8 * by_health["high"]
    assert by_health["low"] > 2 * by_health["mid"] and by_health["mid"] > 2 * by_health["high"]


def test_unhealthy_accounts_open_more_and_worse_cases(ds: Dataset) -> None:
    accounts = Counter("low" if h < 0.3 else "high" if h >= 0.6 else "mid"
                       for k, h in ds.hidden_health.items() if not k.startswith("hubspot:"))
    cases: dict[str, list[dict[str, Any]]] = {"low": [], "mid": [], "high": []}
    for case in ds.sf_cases.values():
        h = ds.hidden_health[case["AccountId"]]
        cases["low" if h < 0.3 else "high" if h >= 0.6 else "mid"].append(case)
    per_account = {b: len(cases[b]) / accounts[b] for b in cases}
    assert per_account["low"] > per_account["mid"] > per_account["high"] > 0
    assert per_account["low"] > 3 * per_account["high"]
    for field, value in (("IsEscalated", True), ("Priority", "High")):
        share = {b: sum(c[field] == value for c in cases[b]) / len(cases[b]) for b in cases}
        assert share["low"] > 2 * share["high"], field


def test_hubspot_renewals_follow_health_too(ds: Dataset) -> None:
    outcome: dict[bool, list[bool]] = {True: [], False: []}
    for deal in ds.hs_deals.values():
        p = deal["properties"]
        company = deal["associations"]["companies"]["results"][0]["id"]
        h = ds.hidden_health.get(f"hubspot:{company}")
        if h is None:
            aid = ds.hs_companies[company]["properties"]["salesforce_account_id"]
            if aid is None or aid in ds.watermelons:
                continue
            h = ds.hidden_health[aid]
        if "Renewal" in p["dealname"] and p["hs_is_closed"] == "true" and (h < 0.3 or h >= 0.6):
            outcome[h < 0.3].append(p["dealstage"] == "closedlost")
    low, high = (sum(v) / len(v) for v in (outcome[True], outcome[False]))
    assert low >= 3 * high


def test_watermelons_look_green_and_churn_like_red(ds: Dataset) -> None:
    live = [a for a in ds.sf_accounts.values() if not a["IsDeleted"]]
    assert len(ds.watermelons) >= 0.03 * len(live)
    for aid in ds.watermelons:
        acc = ds.sf_accounts[aid]
        assert not acc["IsDeleted"] and acc["CSM_Rating__c"] >= 4
        assert ds.hidden_health[aid] < 0.6
    theirs = [o for o in renewals(ds) if o["AccountId"] in ds.watermelons]
    rated_well = [o for o in renewals(ds) if o["AccountId"] not in ds.watermelons
                  and (ds.sf_accounts[o["AccountId"]]["CSM_Rating__c"] or 0) >= 4]
    assert lost_rate(theirs) >= 0.45 and lost_rate(theirs) >= 3 * lost_rate(rated_well)


def test_every_account_has_its_renewal_history(ds: Dataset) -> None:
    by_account: dict[str, list[dict[str, Any]]] = {}
    for opp in renewals(ds):
        by_account.setdefault(opp["AccountId"], []).append(opp)
    assert set(by_account) == set(ds.sf_accounts)
    for aid, opps in by_account.items():
        assert any(o["IsClosed"] for o in opps)
        upcoming = ds.sf_accounts[aid]["Renewal_Date__c"]
        due = upcoming is not None and 0 <= (day(upcoming) - TODAY).days < RENEWAL_LEAD_DAYS
        assert [o["CloseDate"] for o in opps if not o["IsClosed"]] == ([upcoming] if due else [])


def test_close_dates_in_the_last_400_days_or_ahead_when_open(ds: Dataset) -> None:
    earliest = TODAY - timedelta(days=400)
    stamps_before = (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    for opp in ds.sf_opportunities.values():
        closes = day(opp["CloseDate"])
        assert earliest <= closes < TODAY if opp["IsClosed"] else closes >= TODAY
        assert opp["LastModifiedDate"][:19] < stamps_before
        assert not opp["IsClosed"] or opp["CreatedDate"][:10] <= opp["CloseDate"]
    for deal in ds.hs_deals.values():
        p = deal["properties"]
        closes = day(p["closedate"])
        assert earliest <= closes < TODAY if p["hs_is_closed"] == "true" else closes >= TODAY
        assert p["hs_lastmodifieddate"][:19] < stamps_before
    for case in ds.sf_cases.values():
        assert earliest <= day(case["CreatedDate"]) and case["LastModifiedDate"][:19] < stamps_before


def test_renewal_outcomes_are_spread_for_a_backtest(ds: Dataset) -> None:
    """26 weekly snapshots over the last ~180 days: most have lost renewals in the 90 days after."""
    lost = sorted(day(o["CloseDate"]) for o in renewals(ds) if o["StageName"] == "Closed Lost")
    ages = [(TODAY - d).days for d in lost]
    assert min(ages) < 15 and max(ages) > 360
    snapshots = [TODAY - timedelta(weeks=w) for w in range(26)]
    counts = [sum(s < d <= s + timedelta(days=90) for d in lost) for s in snapshots]
    assert sum(c >= 30 for c in counts) >= 20
