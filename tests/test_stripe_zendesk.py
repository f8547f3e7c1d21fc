"""Stripe and Zendesk clients, mocked with `responses` (both talk through requests)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.pipeline import pull

MAPPINGS = load_mappings(REPO / "mappings")
NOW = datetime(2026, 11, 1, tzinfo=UTC)
STRIPE = "https://api.stripe.com"
STRIPE_ENV = {"STRIPE_API_KEY": "rk_live_secret123", "HEALTHSYNC_RETRY_BASE": "0.001"}
ZD = "https://acme.zendesk.com"
ZD_ENV = {"ZENDESK_URL": ZD, "ZENDESK_EMAIL": "ops@acme.com", "ZENDESK_API_TOKEN": "zd-secret-token",
          "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.001"}


def page(data: list[dict], has_more: bool = False, url: str = "/v1/customers") -> dict:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def params(call: responses.Call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


# ------------------------------------------------------------------ Stripe


@pytest.fixture
def stripe_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def stripe_backfill(mock: responses.RequestsMock, customers_pages: list[list[dict]]) -> None:
    mock.get(f"{STRIPE}/v1/events", json=page([{"id": "evt_9", "object": "event", "created": 1761000000}], True))
    for i, data in enumerate(customers_pages):
        mock.get(f"{STRIPE}/v1/customers", json=page(data, i < len(customers_pages) - 1))
    mock.get(f"{STRIPE}/v1/subscriptions", json=page([{"id": "sub_1", "object": "subscription", "customer": "cus_1",
                                                        "status": "canceled", "created": 1700000000}]))
    mock.get(f"{STRIPE}/v1/invoices", json=page([]))
    mock.get(f"{STRIPE}/v1/charges", json=page([]))


def test_stripe_backfill_pages_with_starting_after_and_asks_for_every_subscription(stripe_api, store):
    stripe_backfill(stripe_api, [[{"id": f"cus_{i}", "object": "customer", "created": 1700000000 + i} for i in (3, 2)],
                                 [{"id": "cus_1", "object": "customer", "created": 1700000001}]])
    summary = pull(store, MAPPINGS, STRIPE_ENV, now=NOW, only=["stripe"])
    assert summary.systems["stripe"].records == {"customers": 3, "subscriptions": 1}
    customer_calls = [c for c in stripe_api.calls if c.request.url.startswith(f"{STRIPE}/v1/customers")]
    assert [params(c).get("starting_after") for c in customer_calls] == [None, ["cus_2"]]
    assert all(params(c)["limit"] == ["100"] for c in customer_calls)
    sub_call = next(c for c in stripe_api.calls if "/v1/subscriptions" in c.request.url)
    assert params(sub_call)["status"] == ["all"]  # canceled subscriptions are left out otherwise
    invoice_statuses = [params(c)["status"][0] for c in stripe_api.calls if "/v1/invoices" in c.request.url]
    assert invoice_statuses == ["open", "uncollectible"]
    charges = next(c for c in stripe_api.calls if "/v1/charges" in c.request.url)
    assert int(params(charges)["created[gte]"][0]) == int(NOW.timestamp()) - 35 * 86400
    assert store.cursor("stripe", "events") == "1761000000"
    assert stripe_api.calls[0].request.headers["Authorization"] == "Bearer rk_live_secret123"


def test_stripe_incremental_replays_events_oldest_first(stripe_api, store):
    with store.transaction():
        store.set_cursor("stripe", "events", str(int(NOW.timestamp()) - 86400))
    old = {"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active", "created": 1}
    new = {**old, "status": "past_due"}
    stripe_api.get(f"{STRIPE}/v1/events", json=page([  # newest first, as Stripe lists them
        {"id": "evt_3", "type": "customer.deleted", "created": int(NOW.timestamp()) - 10,
         "data": {"object": {"id": "cus_9", "object": "customer", "deleted": True}}},
        {"id": "evt_2", "type": "customer.subscription.updated", "created": int(NOW.timestamp()) - 20, "data": {"object": new}},
        {"id": "evt_1", "type": "customer.subscription.updated", "created": int(NOW.timestamp()) - 30, "data": {"object": old}},
    ]))
    summary = pull(store, MAPPINGS, STRIPE_ENV, now=NOW, only=["stripe"])
    assert dict(store.records("stripe", "subscriptions"))["sub_1"]["status"] == "past_due"
    assert list(store.records("stripe", "customers")) == []  # deleted
    assert summary.systems["stripe"].deleted["customers"] == 1
    assert store.cursor("stripe", "events") == str(int(NOW.timestamp()) - 10)
    assert summary.calls.total("stripe") == 1


def test_stripe_cursor_older_than_30_days_means_a_backfill(stripe_api, store):
    with store.transaction():
        store.set_cursor("stripe", "events", str(int(NOW.timestamp()) - 40 * 86400))
    stripe_backfill(stripe_api, [[]])
    summary = pull(store, MAPPINGS, STRIPE_ENV, now=NOW, only=["stripe"])
    assert summary.systems["stripe"].full["events"] and "re-backfill" in summary.systems["stripe"].notes[0]


def test_stripe_429_is_retried_and_a_permission_error_is_not(stripe_api, store):
    stripe_api.get(f"{STRIPE}/v1/events", status=429, headers={"Retry-After": "0"},
                   json={"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"}})
    stripe_api.get(f"{STRIPE}/v1/events", json=page([]))
    stripe_api.get(f"{STRIPE}/v1/customers", status=403,
                   json={"error": {"type": "invalid_request_error", "message": "The provided key 'rk_live_***123' does not have access"}})
    text = pull(store, MAPPINGS, STRIPE_ENV, now=NOW, only=["stripe"]).failed["stripe"]  # AuthError: exit 2
    assert "restricted key needs read access" in text and "check STRIPE_API_KEY" in text
    assert "rk_live_secret123" not in text
    assert [c.request.url.split("?")[0] for c in stripe_api.calls] == [f"{STRIPE}/v1/events"] * 2 + [f"{STRIPE}/v1/customers"]


# ------------------------------------------------------------------ Zendesk


def ticket(i: int, **kw: object) -> dict:
    return {"id": i, "organization_id": 7, "status": "open", "priority": "normal", "subject": "secret subject",
            "created_at": "2026-10-20T10:00:00Z", "updated_at": "2026-10-21T10:00:00Z",
            "satisfaction_rating": {"score": "good"}, **kw}


@pytest.fixture
def zendesk():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{ZD}/api/v2/incremental/organizations.json",
                 json={"organizations": [{"id": 7, "name": "Acme", "external_id": None, "domain_names": ["acme.com"],
                                          "updated_at": "2026-10-01T00:00:00Z"}],
                       "end_time": 1759276800, "end_of_stream": True, "next_page": None, "count": 1})
        yield mock


def test_zendesk_cursor_export_pages_and_saves_the_cursor(zendesk, store):
    export = f"{ZD}/api/v2/incremental/tickets/cursor.json"
    zendesk.get(export, json={"tickets": [ticket(1), ticket(2)], "after_cursor": "c1", "end_of_stream": False})
    zendesk.get(export, json={"tickets": [ticket(3, status="deleted")], "after_cursor": "c2", "end_of_stream": True})
    summary = pull(store, MAPPINGS, ZD_ENV, now=NOW, only=["zendesk"])
    assert summary.systems["zendesk"].records == {"organizations": 1, "tickets": 3}
    assert store.cursor("zendesk", "tickets") == "c2" and store.cursor("zendesk", "organizations") == "1759276800"
    calls = [params(c) for c in zendesk.calls if "tickets" in c.request.url]
    assert calls == [{"per_page": ["1000"], "start_time": ["0"]}, {"per_page": ["1000"], "cursor": ["c1"]}]
    stored = dict(store.records("zendesk", "tickets"))
    assert set(stored) == {"1", "2"} and stored["1"]["satisfaction"] == "good" and "subject" not in stored["1"]
    import base64

    auth = zendesk.calls[0].request.headers["Authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == "ops@acme.com/token:zd-secret-token"


def test_zendesk_resumes_from_the_saved_cursor(zendesk, store):
    with store.transaction():
        store.set_cursor("zendesk", "tickets", "c2")
        store.set_cursor("zendesk", "organizations", "1759276800")
    zendesk.get(f"{ZD}/api/v2/incremental/tickets/cursor.json", json={"tickets": [], "after_cursor": "c2", "end_of_stream": True})
    pull(store, MAPPINGS, ZD_ENV, now=NOW, only=["zendesk"])
    assert params(zendesk.calls[0])["start_time"] == ["1759276800"]
    assert params(zendesk.calls[1])["cursor"] == ["c2"]


def test_zendesk_429_with_a_plain_text_body_and_garbage_are_retried(zendesk, store):
    export = f"{ZD}/api/v2/incremental/tickets/cursor.json"
    zendesk.get(export, status=429, body="Too Many Requests", headers={"Retry-After": "0"})
    zendesk.get(export, body="<html>gateway</html>", status=200)
    zendesk.get(export, body=requests.ConnectionError("reset"))
    zendesk.get(export, json={"tickets": [ticket(1)], "after_cursor": "c1", "end_of_stream": True})
    summary = pull(store, MAPPINGS, ZD_ENV, now=NOW, only=["zendesk"])
    assert summary.systems["zendesk"].records["tickets"] == 1
    assert summary.calls.retries == {("zendesk", "429"): 1, ("zendesk", "garbage"): 1, ("zendesk", "drop"): 1}


def test_zendesk_bad_credentials_fail_at_once_without_the_token(zendesk, store):
    zendesk.replace(responses.GET, f"{ZD}/api/v2/incremental/organizations.json", status=401,
                    json={"error": "Couldn't authenticate you"})
    text = pull(store, MAPPINGS, ZD_ENV, now=NOW, only=["zendesk"]).failed["zendesk"]  # AuthError: exit 2
    assert "HTTP 401" in text and "authenticate" in text and "check ZENDESK_URL, ZENDESK_EMAIL, ZENDESK_API_TOKEN" in text
    assert "zd-secret-token" not in text
    assert len(zendesk.calls) == 1
