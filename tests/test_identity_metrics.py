"""Identity matching and the measure step, on records put straight into the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.identity import _normalized, match, normalize_domain
from connector.metrics import measure
from connector.sources.base import AccountData

MAPPINGS = load_mappings(REPO / "mappings")
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
DAY = 86400
T = int(NOW.timestamp())


@pytest.mark.parametrize(("raw", "expected"), [
    ("HTTPS://www.Acme.COM/about?x=1", "acme.com"),
    ("acme.com", "acme.com"),
    ("www.acme.co.uk:443", "acme.co.uk"),
    ("jane@Acme.com", "acme.com"),
    ("jane@gmail.com", None),
    ("https://gmail.com", None),
    ("", None),
    (None, None),
    ("not a domain", None),
    ("localhost", None),
])
def test_domains_are_normalized_and_free_mail_is_never_used(raw, expected):
    assert normalize_domain(raw) == expected


def test_a_value_already_a_host_takes_the_short_way_to_the_same_answer():
    """`normalize_domain` answers a plain lowercase host without the normalizing steps: the same
    answer as the steps give, for hosts and for thousands of strings built to be near one."""
    import random

    from connector.identity import _normalized

    rng = random.Random(14)
    values = ["acme.com", "www.acme.com", "gmail.com", "a.b", "a-.b", "-a.b", "a..b", ".a.b", "acme.com.", "1.2.3.4",
              "acme", "ACME.com", "xn--bcher-kva.example", "acme.com:443", "acme.com/x", "a@acme.com", " acme.com"]
    values += ["".join(rng.choice("aZ0-.:/@?#w _é") for _ in range(rng.randint(1, 12))) for _ in range(20_000)]
    assert [v for v in values if normalize_domain(v) != _normalized(v)] == []
    assert sum(normalize_domain(v) is not None for v in values) > 500  # many of them are hosts


def sf(i: int, website: str | None, **fields: object) -> tuple[str, dict, str, bool]:
    rid = f"001{i:015d}"
    return rid, {"Id": rid, "Name": f"Account {i}", "Website": website, **fields}, "2026-10-01T00:00:00.000+0000", False


def seed(store) -> None:
    store.put_records("salesforce", "Account", [
        sf(1, "https://www.acme.com", Stripe_Customer_Id__c="cus_explicit", Seats_Purchased__c=20, Active_Users_30d__c=15,
           NPS__c=40, CSM_Rating__c=4, Customer_Segment__c="SMB", Renewal_Date__c="2026-12-01"),
        sf(2, "globex.com", Seats_Purchased__c=0, Active_Users_30d__c=3, NPS__c="n/a"),
        sf(3, "shared.io"),
        sf(4, "http://Shared.io/"),
        sf(5, None),
    ])
    store.put_records("hubspot", "companies", [
        ("901", {"id": "901", "name": "Acme (HubSpot)", "domain": "acme.com", "csm_rating": "2"}, None, False),
        ("902", {"id": "902", "name": "Initech", "domain": "initech.com", "customer_segment": "Enterprise", "csm_rating": "5"}, None, False),
        ("903", {"id": "903", "name": "Shared", "domain": "shared.io"}, None, False),
    ])
    store.put_records("stripe", "customers", [
        ("cus_explicit", {"id": "cus_explicit", "email": "billing@other-domain.com"}, None, False),
        ("cus_meta", {"id": "cus_meta", "email": "x@gmail.com", "metadata": {"hubspot_company_id": "902"}}, None, False),
        ("cus_domain", {"id": "cus_domain", "email": "ap@globex.com"}, None, False),
        ("cus_shared", {"id": "cus_shared", "email": "ap@shared.io"}, None, False),
        ("cus_gmail", {"id": "cus_gmail", "email": "founder@gmail.com"}, None, False),
    ])
    store.put_records("zendesk", "organizations", [
        ("70", {"id": 70, "name": "Acme", "external_id": "001000000000000001", "domain_names": []}, None, False),
        ("71", {"id": 71, "name": "Globex", "external_id": None, "domain_names": ["www.globex.com"]}, None, False),
        ("72", {"id": 72, "name": "Nobody", "external_id": None, "domain_names": ["nobody.org"]}, None, False),
    ])


def test_matching_prefers_explicit_ids_then_domains_and_reports_conflicts(store):
    seed(store)
    summary = match(store, MAPPINGS)
    keys = store.account_keys()
    assert summary.accounts == {"salesforce": 5, "hubspot": 1}  # Initech is HubSpot-only
    links = {(s, e): (a, by) for s, _o, e, a, by, _t in store.conn.execute("SELECT * FROM account_links")}
    acme, globex, initech = keys["salesforce:001000000000000001"], keys["salesforce:001000000000000002"], keys["hubspot:902"]
    assert links[("hubspot", "901")] == (acme, "domain acme.com")
    assert links[("stripe", "cus_explicit")] == (acme, "explicit id")
    assert links[("stripe", "cus_meta")] == (initech, "explicit id")
    assert links[("stripe", "cus_domain")] == (globex, "domain globex.com")
    assert links[("zendesk", "70")] == (acme, "explicit id")
    assert links[("zendesk", "71")] == (globex, "domain globex.com")
    assert ("stripe", "cus_shared") not in links and ("hubspot", "903") not in links
    issues = {(i["system"], i["external_id"]): i for i in store.match_issues()}
    assert issues[("stripe", "cus_shared")]["kind"] == "conflict"
    assert issues[("hubspot", "903")]["kind"] == "conflict"
    assert issues[("salesforce", "001000000000000003")]["kind"] == "conflict"
    assert issues[("stripe", "cus_gmail")]["kind"] == "unmatched"
    assert "no explicit id and no usable domain" in issues[("stripe", "cus_gmail")]["detail"]
    assert "nobody.org" in issues[("zendesk", "72")]["detail"]
    assert summary.conflicts == {"salesforce": 2, "hubspot": 1, "stripe": 1}


def test_the_domains_a_match_normalized_are_not_kept_after_it(store):
    seed(store)
    normalize_domain("https://www.example.org/")  # met before: this match's cache starts empty too
    match(store, MAPPINGS)
    assert _normalized.cache_info().currsize == 0  # their strings would pin the heap pages of the pull
    assert store.account_keys()  # it matched


def test_matching_again_is_stable_and_drops_vanished_accounts(store):
    seed(store)
    match(store, MAPPINGS)
    before = store.account_keys()
    store.put_records("salesforce", "Account", [(*sf(5, None)[:3], True)])  # deleted in Salesforce
    match(store, MAPPINGS)
    assert store.account_keys() == before  # ids never change
    live = set(store.account_ids().tolist())
    assert before["salesforce:001000000000000005"] not in live and before["salesforce:001000000000000001"] in live


def values(store, account_key: str) -> dict[str, tuple[object, object]]:
    account_id = store.account_keys()[account_key]
    rows = store.conn.execute("SELECT name, num, text, na_reason FROM metric_values WHERE account_id = ?", (account_id,))
    return {name: (num if num is not None else text, reason) for name, num, text, reason in rows}


def test_measure_computes_inputs_and_catalogue_with_reasons_for_na(store):
    seed(store)
    sub = lambda i, status, items, **kw: (f"sub_{i}", {"id": f"sub_{i}", "customer": "cus_explicit", "status": status,  # noqa: E731
                                                       "created": T - 200 * DAY, "items": {"data": items}, **kw}, None, False)
    item = lambda amount, interval, qty=1, count=1, cur="usd": {"quantity": qty, "price": {  # noqa: E731
        "unit_amount": amount, "currency": cur, "recurring": {"interval": interval, "interval_count": count}}}
    store.put_records("stripe", "subscriptions", [
        sub(1, "active", [item(1000, "month", qty=3), item(120000, "year")]),   # 30 + 100
        sub(2, "past_due", [item(600, "week", count=2)]),                      # 6 * 52 / 12 / 2 = 13
        sub(3, "trialing", [item(99900, "month")], trial_end=T + 5 * DAY),     # no MRR yet
        sub(4, "canceled", [item(5000, "month")], canceled_at=T - 30 * DAY),   # paid 90 days ago
        ("sub_5", {"id": "sub_5", "customer": "cus_domain", "status": "active", "created": T - DAY,
                    "items": {"data": [item(1000, "month", cur="usd"), item(900, "month", cur="eur")]}}, None, False),
    ])
    store.put_records("stripe", "invoices", [
        ("in_1", {"id": "in_1", "customer": "cus_explicit", "status": "open", "due_date": T - 10 * DAY - 100}, None, False),
        ("in_2", {"id": "in_2", "customer": "cus_explicit", "status": "open", "due_date": T + DAY}, None, False),
        ("in_3", {"id": "in_3", "customer": "cus_explicit", "status": "uncollectible", "due_date": None}, None, False),
        ("in_4", {"id": "in_4", "customer": "cus_explicit", "status": "paid", "due_date": T - 50 * DAY}, None, False),
    ])
    store.put_records("stripe", "charges", [
        ("ch_1", {"id": "ch_1", "customer": "cus_explicit", "status": "failed", "created": T - 3 * DAY}, None, False),
        ("ch_2", {"id": "ch_2", "customer": "cus_explicit", "status": "failed", "created": T - 40 * DAY}, None, False),
        ("ch_3", {"id": "ch_3", "customer": "cus_explicit", "status": "succeeded", "created": T - 3 * DAY}, None, False),
    ])
    store.put_records("zendesk", "tickets", [
        ("1", {"id": 1, "organization_id": 70, "status": "open", "priority": "urgent", "created_at": "2026-10-25T00:00:00Z",
               "updated_at": "2026-10-26T00:00:00Z", "satisfaction": "bad"}, None, False),
        ("2", {"id": 2, "organization_id": 70, "status": "pending", "priority": None, "created_at": "2026-05-01T00:00:00Z",
               "updated_at": "2026-10-26T00:00:00Z", "satisfaction": "good"}, None, False),
        ("3", {"id": 3, "organization_id": 70, "status": "solved", "priority": "urgent", "created_at": "2026-10-30T00:00:00Z",
               "updated_at": "2026-10-31T00:00:00Z", "satisfaction": "good"}, None, False),
        ("4", {"id": 4, "organization_id": 70, "status": "closed", "priority": "low", "created_at": "2026-01-01T00:00:00Z",
               "updated_at": "2026-02-01T00:00:00Z", "satisfaction": "bad"}, None, False),
    ])
    match(store, MAPPINGS)
    summary = measure(store, MAPPINGS, NOW)
    acme = values(store, "salesforce:001000000000000001")
    assert acme["mrr"] == (143.0, None)
    assert acme["mrr_change_90d"][0] == pytest.approx(100 * (143 - 193) / 193, abs=0.01)  # sub_4 paid 50 then
    assert acme["subscription_status"] == ("active", None)
    assert acme["past_due_invoices"] == (1.0, None) and acme["days_past_due"] == (10.0, None)
    assert acme["uncollectible_invoices"] == (1.0, None) and acme["failed_payments_30d"] == (1.0, None)
    assert acme["open_tickets"] == (2.0, None) and acme["urgent_tickets"] == (1.0, None)
    assert acme["tickets_30d"] == (2.0, None) and acme["csat_90d"] == (66.7, None)
    assert acme["license_utilization"] == (75.0, None) and acme["days_to_renewal"] == (30.0, None)
    assert acme["segment"] == ("SMB", None) and acme["renewal_date"] == ("2026-12-01", None)
    assert acme["csm_rating"] == (4.0, None)  # Salesforce first, though HubSpot says 2
    globex = values(store, "salesforce:001000000000000002")
    assert globex["mrr"] == (None, "MRR is in several currencies (eur 9.00, usd 10.00)")
    assert globex["nps"] == (None, "salesforce NPS__c: 'n/a' is not a number")
    assert globex["license_utilization"] == (None, "seats is 0")
    assert globex["open_tickets"] == (0.0, None)  # an organization without tickets has none open
    assert globex["csat_90d"] == (None, "no rated tickets in 90 days")
    nobody = values(store, "salesforce:001000000000000005")
    assert nobody["mrr"] == (None, "no Stripe customer matched to this account")
    assert nobody["open_tickets"] == (None, "no Zendesk organization matched to this account")
    assert nobody["segment"] == (None, "salesforce Customer_Segment__c is empty")
    initech = values(store, "hubspot:902")
    assert initech["segment"] == ("Enterprise", None) and initech["csm_rating"] == (5.0, None)
    assert initech["subscription_status"] == (None, "no subscriptions")
    assert initech["seats"] == (None, "not mapped for this account's CRM")
    assert summary.totals == {"mrr": {"usd": 143.0}}
    assert measure(store, MAPPINGS, NOW).changed == 0  # measuring again changes nothing


def test_inputs_read_column_wise_are_what_each_accounts_records_give(store):
    """The measure reads the inputs' fields out of every CRM record at once (`input_columns`); the
    per-account path reads them from each account's gathered records. Two HubSpot companies on one
    account (the first by id with the field empty), Salesforce before HubSpot, garbage of every
    kind, a deleted record and an unmapped CRM: the same value or N/A with the same reason."""
    from connector.metrics import gather, input_columns, inputs_of

    seed(store)
    store.put_records("salesforce", "Account", [
        sf(6, "odd.example", CSM_Rating__c=True, Seats_Purchased__c="1,200", NPS__c={"score": 9}, Customer_Segment__c=7,
           Renewal_Date__c="someday", Active_Users_30d__c=float("nan")),
        sf(7, "wide.example", CSM_Rating__c="", Seats_Purchased__c=10**30, NPS__c="  ", Customer_Segment__c=""),
    ])
    store.put_records("salesforce", "Account", [(*sf(8, "gone.example", CSM_Rating__c=3)[:3], True)])
    store.put_records("hubspot", "companies", [
        ("905", {"id": "905", "name": "Wide B", "domain": "wide.example", "csm_rating": "4", "customer_segment": "SMB"}, None, False),
        ("904", {"id": "904", "name": "Wide A", "domain": "wide.example", "csm_rating": "", "customer_segment": "Mid-Market"},
         None, False),
        ("906", {"id": "906", "name": "Solo", "domain": "solo.example", "csm_rating": "three"}, None, False),
    ])
    match(store, MAPPINGS)
    ids = store.account_ids().tolist()
    columns = input_columns(store, MAPPINGS, ids, store.linked)
    data, read = gather(store), inputs_of(MAPPINGS)
    for i, account_id in enumerate(ids):
        expected = read(data[account_id]) if account_id in data else read(AccountData())
        assert {name: pairs[i] for name, pairs in columns.items()} == expected, account_id
    keys = store.account_keys()
    some = sorted({*ids[1::2], keys["salesforce:001000000000000007"]})  # a few due accounts, Wide among them:
    by_id = input_columns(store, MAPPINGS, some)  # their links alone read, their records by id
    assert by_id == {name: [pairs[ids.index(a)] for a in some] for name, pairs in columns.items()}
    read_ids = []  # many due accounts (every link read once): still only their records, by id
    original = store.record_fields
    store.record_fields = lambda *a, **k: (read_ids.append(k.get("ids")), original(*a, **k))[1]
    assert input_columns(store, MAPPINGS, some, store.linked, by_id=True) == by_id
    assert read_ids and all(r is not None and len(r) <= len(some) + 1 for r in read_ids), read_ids
    of = lambda key: {name: pairs[ids.index(keys[key])] for name, pairs in columns.items()}  # noqa: E731
    odd, wide, solo = of("salesforce:001000000000000006"), of("salesforce:001000000000000007"), of("hubspot:906")
    assert odd["csm_rating"] == (None, "salesforce CSM_Rating__c: True is not a number")
    assert odd["seats"] == (1200.0, None) and odd["segment"] == ("7", None)
    assert odd["renewal_date"] == (None, "salesforce Renewal_Date__c: 'someday' is not a date")
    assert wide["csm_rating"] == (4.0, None)  # Salesforce's empty, HubSpot's 904 empty, 905 says 4
    assert wide["segment"] == ("Mid-Market", None)  # 904 before 905
    assert wide["seats"] == (1e30, None)
    assert solo["csm_rating"] == (None, "hubspot csm_rating: 'three' is not a number")
    assert solo["seats"] == (None, "not mapped for this account's CRM")
    assert len(ids) >= 7
